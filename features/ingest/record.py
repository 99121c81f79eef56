"""One raw input record at the ingest boundary: validate → pseudonymise → content features, or a
dead letter saying why not.

Called by the worker's ingest agents, by its ingest child processes and by
``POST /score`` for every record; raw identifiers and text go no further than
what these functions return. Neither function raises: a record that trips an
unexpected error in feature code is dead-lettered too, so one record cannot
stop a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from warden.features.ingest.decode import decode_activity_event, decode_mail_event
from warden.features.ingest.extraction import to_activity_features, to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.streams.exceptions import MalformedRecord
from warden.streams.provenance import content_digest, trusted_event_time
from warden.streams.records import ActivityFeatures, ActivityKind, DeadLetter, MailFeatures, SourcePosition
from warden.streams.settings import WardenSettings

log = logging.getLogger(__name__)

_Features = TypeVar("_Features", MailFeatures, ActivityFeatures)


def ingest_record(
    raw: bytes | None,
    source: SourcePosition,
    produced_at_ms: int,
    settings: WardenSettings,
    pseudonymiser: Pseudonymiser,
    now: float,
    producer_ms: int | None = None,
) -> MailFeatures | DeadLetter:
    """One raw input record as features, or as a dead letter saying why not.

    ``produced_at_ms`` is the record's broker timestamp and ``producer_ms`` a
    trusted producer's event-time header: with ``now`` they give the time the
    aggregates advance on (:func:`streams.provenance.trusted_event_time`).
    Never raises: a hostile record that trips an unexpected error in feature
    code is dead-lettered too, so one record cannot stop the worker.
    """
    at = trusted_event_time(produced_at_ms, producer_ms, now, settings)
    return _at_the_boundary(
        raw,
        source,
        now,
        lambda: to_features(
            decode_mail_event(raw, settings.ingest, now),
            pseudonymiser,
            source,
            produced_at_ms,
            now=now,
            event_time=at,
            digest=content_digest(raw or b""),
        ),
    )


def ingest_activity_record(
    raw: bytes | None,
    kind: ActivityKind,
    source: SourcePosition,
    produced_at_ms: int,
    settings: WardenSettings,
    pseudonymiser: Pseudonymiser,
    now: float,
    producer_ms: int | None = None,
) -> ActivityFeatures | DeadLetter:
    """One raw calendar or contacts record as features, or as a dead letter (never raises)."""
    at = trusted_event_time(produced_at_ms, producer_ms, now, settings)
    return _at_the_boundary(
        raw,
        source,
        now,
        lambda: to_activity_features(
            decode_activity_event(raw, kind, settings.ingest, now),
            pseudonymiser,
            source,
            produced_at_ms,
            event_time=at,
            digest=content_digest(raw or b""),
        ),
    )


def _at_the_boundary(
    raw: bytes | None, source: SourcePosition, now: float, ingest: Callable[[], _Features]
) -> _Features | DeadLetter:
    """``ingest()``, or the dead letter of a record it refused or failed on."""
    try:
        return ingest()
    except MalformedRecord as exc:
        reason = exc.reason
    except Exception as exc:  # the boundary: any failure on one record is that record's fault
        log.warning(
            "ingest failed on %s/%d@%d: %s", source.topic, source.partition, source.offset, type(exc).__name__
        )
        reason = f"internal error while ingesting: {type(exc).__name__}"
    return DeadLetter.of(source, reason, raw or b"", int(now * 1000))
