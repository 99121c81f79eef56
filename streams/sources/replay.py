"""Replays recorded mail events onto ``mail.events`` in time order, at a rate or flat out.

Each record carries its recorded event time in the
:data:`~streams.topics.EVENT_TIME_HEADER` header: a corpus mail's receiving
server's clock (:attr:`streams.sources.corpus.CorpusMail.event_time`), or the
``timestamp`` of an event built by code (campaigns, tests), which its builder
recorded. A worker takes that time only with
``IngestSettings.trust_producer_event_time`` on; otherwise the broker's
timestamp, which is also where end-to-end latency is measured from either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from warden.streams.exceptions import BrokerError
from warden.streams.provenance import event_time_header
from warden.streams.records import MailEvent, encode
from warden.streams.sources.corpus import CorpusMail
from warden.streams.topics import Topic

Progress = Callable[[int, int], None]
#: What can be replayed: a corpus mail (stamped with its trusted time) or an event built by code.
Recorded = MailEvent | CorpusMail


def stamped(recorded: Recorded) -> tuple[MailEvent, float]:
    """The event and the time it was recorded at."""
    if isinstance(recorded, CorpusMail):
        return recorded.event, recorded.event_time
    return recorded, recorded.timestamp


def send_recorded(producer: KafkaProducer, topic: Topic, event: MailEvent, at: float) -> FutureRecordMetadata:
    """Send one recorded event (key: its id) with its recorded time in the event-time header."""
    return producer.send(
        topic.name, key=event.event_id.encode("utf-8"), value=encode(event), headers=event_time_header(at)
    )


def replay(
    events: Sequence[Recorded],
    producer: KafkaProducer,
    topic: Topic,
    *,
    rate: float | None = None,
    progress: Progress | None = None,
) -> int:
    """Send ``events`` in order of their recorded time; returns how many were sent.

    ``rate`` is events per second (None: as fast as the broker takes them).
    Blocks until every record is acknowledged; raises BrokerError otherwise.
    """
    ordered = sorted((stamped(e) for e in events), key=lambda pair: (pair[1], pair[0].event_id))
    started = time.monotonic()
    futures = []
    for index, (event, at) in enumerate(ordered, start=1):
        if rate is not None:
            due = started + index / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        futures.append(send_recorded(producer, topic, event, at))
        if progress is not None and (index % 500 == 0 or index == len(ordered)):
            progress(index, len(ordered))
    send_raw(producer, [])
    try:
        for future in futures:
            future.get(timeout=60)
    except KafkaError as exc:
        raise BrokerError(f"the broker did not take every event: {exc}") from exc
    return len(ordered)


def send_raw(producer: KafkaProducer, records: Sequence[tuple[Topic, bytes, bytes | None]]) -> None:
    """Send raw records (key, value) as they are, then flush. Used for hostile input."""
    try:
        for topic, key, value in records:
            producer.send(topic.name, key=key, value=value)
        producer.flush(timeout=60)
    except KafkaError as exc:
        raise BrokerError(f"the broker did not take every record: {exc}") from exc
