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
from typing import Any, Literal, TypeVar

from features.extraction import to_activity_features, to_features
from features.pseudonym import Pseudonymiser
from infra.metrics import WorkerStats
from infra.settings import WardenSettings
from streams.exceptions import MalformedRecord
from streams.ingest_pool import IngestPool, RawRecord, ingest_batch
from streams.output import Output
from streams.records import (
    ActivityFeatures,
    ActivityKind,
    DeadLetter,
    MailFeatures,
    SourcePosition,
    decode_activity_event,
    decode_mail_event,
)

log = logging.getLogger(__name__)

_Features = TypeVar("_Features", MailFeatures, ActivityFeatures)


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
    return _at_the_boundary(
        raw,
        source,
        now,
        lambda: to_features(
            decode_mail_event(raw, settings.ingest, now), pseudonymiser, source, produced_at_ms, now=now
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
) -> ActivityFeatures | DeadLetter:
    """One raw calendar or contacts record as features, or as a dead letter (never raises)."""
    return _at_the_boundary(
        raw,
        source,
        now,
        lambda: to_activity_features(
            decode_activity_event(raw, kind, settings.ingest, now), pseudonymiser, source, produced_at_ms
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
    pool: IngestPool | None = None,
) -> None:
    """Declare the ingest agent on ``app`` for the ``source`` topic, which carries ``kind`` events.

    With a ``pool``, each micro-batch is ingested in its child processes
    (:mod:`streams.ingest_pool`) while the event loop goes on; without, in the loop.
    """

    features_out = Output(app, features_out)
    dead_letters = Output(app, dead_letters)

    async def ingest(stream: Any) -> None:
        async for events in stream.take_events(
            settings.worker.batch_size, within=settings.worker.batch_within_s
        ):
            now = clock()
            records = [
                RawRecord(
                    value=event.message.value,
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=event.message.offset,
                    produced_at_ms=int(event.message.timestamp * 1000),
                )
                for event in events
            ]
            t0 = time.perf_counter()
            if pool is not None:
                outcomes = await pool.ingest(records, now, kind)
            else:
                outcomes = ingest_batch(records, settings, pseudonymiser, now, kind)
            t1 = time.perf_counter()
            for outcome in outcomes:
                if outcome.dead:
                    stats.dead_letter(outcome.reason)
                    await dead_letters.send(key=outcome.key, value=outcome.value)
                else:
                    stats.ingested += 1
                    await features_out.send(key=outcome.key, value=outcome.value)
            stats.events_in[kind] += len(events)
            # Stage times are recorded once per batch.
            stats.stage_seconds["features"].observe(t1 - t0)
            stats.stage_seconds["produce"].observe(time.perf_counter() - t1)

    name = "ingest" if kind == "mail" else f"ingest-{kind}"
    app.agent(source, name=f"{settings.worker.app_id}.{name}")(ingest)
