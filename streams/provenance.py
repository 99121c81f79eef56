"""What ingest knows of an input record beyond its content: when it happened, and which bytes it was.

**Time.** Aggregates and the once-only memo advance on a clock the sender does
not control: the broker's timestamp of the input record (``LogAppendTime`` on
the input topics Warden creates, :func:`streams.broker.topic_configs`; with
``CreateTime`` it is the producer's clock), bounded on both sides by the
worker's receive clock:

* never more than ``IngestSettings.max_event_time_ahead_s`` ahead of it (a
  broker or producer clock running fast);
* never further behind it than the input topics' retention
  (:func:`retention_s`: ``KafkaSettings.retention_hours``, or Kafka's default
  of 7 days when unset). A record older than its topic's retention has been
  deleted by the broker, so an older timestamp is a producer's forgery
  (``CreateTime`` lets any producer write ``timestamp=1``, aging a sender by
  decades), not an old record. Kafka deletes whole segments, so an honest
  record can outlive the retention by up to a segment's age; raising its time
  to the bound then ages it a little less than it is, nothing worse.

:class:`~serving.worker.metrics.WorkerStats` counts the records clamped each way
(``warden_event_times_clamped_total{direction}``, :func:`clamp_direction`).
The ``timestamp`` a sender claims inside the event is validated as a field
and otherwise ignored by the aggregates.

Replays of recorded traffic need their recorded times while latency is still
measured from the broker timestamp: a trusted producer puts the event time in
the :data:`~streams.topics.EVENT_TIME_HEADER` record header, and a worker with
``IngestSettings.trust_producer_event_time`` on takes it, never later than the
broker timestamp (a header can move an event back in time, never ahead).

A record whose broker timestamp is clamped gets a time that depends on when
it was read: if it is redelivered in another hour, its once-only memo (keyed by
the hour) does not find it and it is applied again. That takes a broker clock
running ahead of the worker's by more than the setting, or a record forged
older than the retention (applied twice, it counts at the bound twice).

**Content.** :func:`content_digest` names the exact bytes of a record. The store's
once-only memo is keyed by event id *and* digest, so a redelivery of the same
bytes is served what it was served, and an id that comes again with other
content is applied and scored as a new event under :func:`derived_event_id`
(:mod:`features.store.operations`, :mod:`serving.worker.agents.score`): reusing an id can
neither skip scoring nor borrow another event's verdict.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from warden.streams.settings import KafkaSettings, WardenSettings
from warden.streams.topics import EVENT_TIME_HEADER

#: Kafka's default ``retention.ms`` (7 days), the bound when the settings name no retention.
KAFKA_DEFAULT_RETENTION_S = 7 * 24 * 3600.0

#: Hex digits of the content digest carried by features records (BLAKE2b, 128 bits).
DIGEST_CHARS = 32
#: Hex digits of the digest in a derived event id.
_DERIVED_DIGEST_CHARS = 12
#: The longest event id (``streams.records``); a derived id stays within it.
_MAX_EVENT_ID = 128
_DIGITS = re.compile(rb"[0-9]{1,15}")
#: How a derived id ends: input records may not (see :func:`reserved_id`).
_DERIVED_END = re.compile(r":r[0-9a-f]{12}\Z")

#: Kafka record headers as Faust and aiokafka hand them over.
Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes]


def event_time_header(at_s: float) -> list[tuple[str, bytes]]:
    """The record header a trusted producer sends with an event recorded at ``at_s`` (epoch seconds)."""
    return [(EVENT_TIME_HEADER, str(round(at_s * 1000)).encode("ascii"))]


def producer_time_ms(headers: Headers | None) -> int | None:
    """The event time a producer put in :data:`EVENT_TIME_HEADER` (None if absent or not digits)."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == EVENT_TIME_HEADER:
            return int(value) if isinstance(value, bytes) and _DIGITS.fullmatch(value) else None
    return None


def retention_s(kafka: KafkaSettings) -> float:
    """Seconds an input record can stay on its topic: the retention Warden creates topics with."""
    if kafka.retention_hours is not None:
        return kafka.retention_hours * 3600.0
    return KAFKA_DEFAULT_RETENTION_S


def _bounds(receive_s: float, settings: WardenSettings) -> tuple[float, float]:
    """The earliest and the latest broker time (epoch seconds) a record read at ``receive_s`` can have."""
    return receive_s - retention_s(settings.kafka), receive_s + settings.ingest.max_event_time_ahead_s


def clamp_direction(
    broker_ms: int, receive_s: float, settings: WardenSettings
) -> Literal["ahead", "behind"] | None:
    """Which bound :func:`trusted_event_time` holds a record's broker time to, if any.

    Called by the ingest agent for every record it reads, to count the clamped ones.
    """
    if broker_ms <= 0:
        return None
    floor, ceiling = _bounds(receive_s, settings)
    at = broker_ms / 1000
    if at > ceiling:
        return "ahead"
    if at < floor:
        return "behind"
    return None


def trusted_event_time(
    broker_ms: int, producer_ms: int | None, receive_s: float, settings: WardenSettings
) -> float:
    """The time (epoch seconds) an input record's aggregates advance on; see the module docstring.

    ``broker_ms`` is the record's broker timestamp (``<= 0``: the record has
    none, and the receive clock is used), held between the input topics'
    retention behind ``receive_s`` and ``max_event_time_ahead_s`` ahead of it;
    ``producer_ms`` the trusted producer's header, used only when the settings
    say the producer is trusted and only to move the time back (not before
    ``min_event_time``: a recorded replay may be older than the retention).
    """
    if broker_ms > 0:
        floor, ceiling = _bounds(receive_s, settings)
        at = min(max(broker_ms / 1000, floor), ceiling)
    else:
        at = receive_s
    ingest = settings.ingest
    if ingest.trust_producer_event_time and producer_ms is not None:
        recorded = producer_ms / 1000
        if recorded >= ingest.min_event_time:
            at = min(at, recorded)
    return at


def content_digest(raw: bytes) -> str:
    """The digest of an input record's bytes (hex, :data:`DIGEST_CHARS` digits).

    Unkeyed: it tells apart two records to whoever holds both, and reveals
    nothing of one to whoever does not hold its exact bytes.
    """
    return hashlib.blake2b(raw, digest_size=DIGEST_CHARS // 2).hexdigest()


def reserved_id(event_id: str) -> bool:
    """True for an id shaped like a derived one (``...:r<12 hex digits>``), which Warden reserves.

    Input records with such ids are refused at ingest, so a verdict under a
    derived id always names a reused id's other content, never a record that
    claimed that id for itself.
    """
    return _DERIVED_END.search(event_id) is not None


def derived_event_id(event_id: str, digest: str) -> str:
    """The id an event is scored under when its id was first seen with other content.

    ``<id>:r<12 hex digits of the digest>``, the id cut so that the whole
    stays within the event-id pattern (128 characters of ``[A-Za-z0-9._:-]``).
    """
    suffix = f":r{digest[:_DERIVED_DIGEST_CHARS]}"
    return event_id[: _MAX_EVENT_ID - len(suffix)] + suffix
