"""The ingest agent: validate → pseudonymise → content features, or dead-letter.

Reads raw records from the input topics. A good record leaves as
:class:`~streams.records.MailFeatures` on ``mail.features`` (keyed by sender
pseudonym); anything else leaves as a :class:`~streams.records.DeadLetter`
with its reason. Raw identifiers and text go no further than this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from features.extraction import to_activity_features, to_features
from features.pseudonym import Pseudonymiser
from infra.metrics import WorkerStats
from infra.settings import WardenSettings
from streams.exceptions import MalformedRecord
from streams.records import (
    ActivityFeatures,
    ActivityKind,
    DeadLetter,
    MailFeatures,
    SourcePosition,
    decode_activity_event,
    decode_mail_event,
    encode,
)

log = logging.getLogger(__name__)


def ingest_record(
    raw: bytes | None,
    source: SourcePosition,
    produced_at_ms: int,
    settings: WardenSettings,
    pseudonymiser: Pseudonymiser,
    now: float,
) -> MailFeatures | DeadLetter:
    """One raw input record as features, or as a dead letter saying why not.

    Never raises: a hostile record that trips an unexpected error in feature
    code is dead-lettered too, so one record cannot stop the worker.
    """
    try:
        event = decode_mail_event(raw, settings.ingest, now)
        return to_features(event, pseudonymiser, source, produced_at_ms, now=now)
    except MalformedRecord as exc:
        reason = exc.reason
    except Exception as exc:  # the boundary: any failure on one record is that record's fault
        log.warning(
            "ingest failed on %s/%d@%d: %s", source.topic, source.partition, source.offset, type(exc).__name__
        )
        reason = f"internal error while ingesting: {type(exc).__name__}"
    return DeadLetter.of(source, reason, raw or b"", int(now * 1000))


def ingest_activity_record(
    raw: bytes | None,
    kind: ActivityKind,
    source: SourcePosition,
    produced_at_ms: int,
    settings: WardenSettings,
    pseudonymiser: Pseudonymiser,
    now: float,
) -> ActivityFeatures | DeadLetter:
    """One raw calendar or contacts record as features, or as a dead letter (never raises)."""
    try:
        event = decode_activity_event(raw, kind, settings.ingest, now)
        return to_activity_features(event, pseudonymiser, source, produced_at_ms)
    except MalformedRecord as exc:
        reason = exc.reason
    except Exception as exc:  # the boundary: any failure on one record is that record's fault
        log.warning(
            "ingest failed on %s/%d@%d: %s", source.topic, source.partition, source.offset, type(exc).__name__
        )
        reason = f"internal error while ingesting: {type(exc).__name__}"
    return DeadLetter.of(source, reason, raw or b"", int(now * 1000))


def register(
    app: Any,
    source: Any,
    features_out: Any,
    dead_letters: Any,
    settings: WardenSettings,
    pseudonymiser: Pseudonymiser,
    stats: WorkerStats,
    clock: Callable[[], float] = time.time,
    kind: Literal["mail", "calendar", "contacts"] = "mail",
) -> None:
    """Declare the ingest agent on ``app`` for the ``source`` topic, which carries ``kind`` events."""

    async def ingest(stream: Any) -> None:
        async for events in stream.take_events(
            settings.worker.batch_size, within=settings.worker.batch_within_s
        ):
            now = clock()
            # Stage times are summed over the batch and recorded once per batch.
            features_s = produce_s = 0.0
            for event in events:
                message = event.message
                position = SourcePosition(
                    topic=message.topic, partition=message.partition, offset=message.offset
                )
                produced_at_ms = int(message.timestamp * 1000)
                t0 = time.perf_counter()
                outcome: MailFeatures | ActivityFeatures | DeadLetter
                if kind == "mail":
                    outcome = ingest_record(
                        message.value, position, produced_at_ms, settings, pseudonymiser, now
                    )
                else:
                    outcome = ingest_activity_record(
                        message.value, kind, position, produced_at_ms, settings, pseudonymiser, now
                    )
                t1 = time.perf_counter()
                if isinstance(outcome, DeadLetter):
                    stats.dead_letter(outcome.reason)
                    await dead_letters.send(key=position.topic.encode(), value=encode(outcome))
                else:
                    stats.ingested += 1
                    await features_out.send(key=outcome.sender.encode(), value=encode(outcome))
                features_s += t1 - t0
                produce_s += time.perf_counter() - t1
            stats.events_in[kind] += len(events)
            stats.stage_seconds["features"].observe(features_s)
            stats.stage_seconds["produce"].observe(produce_s)

    name = "ingest" if kind == "mail" else f"ingest-{kind}"
    app.agent(source, name=f"{settings.worker.app_id}.{name}")(ingest)
