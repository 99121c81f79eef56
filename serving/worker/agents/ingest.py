"""The ingest agent: validate → pseudonymise → content features, or dead-letter.

Reads raw records from the input topics. A good record becomes
:class:`~streams.records.MailFeatures` (or activity features), scored in the
same micro-batch by the worker's :class:`~serving.worker.agents.score.ScoringStage`
(one hop, the default), or sent to ``mail.features`` (keyed by sender
pseudonym) for a scoring agent to read (``WorkerSettings.split_stages``);
anything else leaves as a :class:`~streams.records.DeadLetter` with its
reason. Raw identifiers and text go no further than this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from warden.features.ingest import validation
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.serving.worker.agents.score import ByKind, ScoringStage
from warden.serving.worker.ingest_pool import (
    IngestPool,
    IsolatedIngest,
    Outcome,
    RawRecord,
    decoded,
    ingest_batch,
    ingest_in_turns,
    ingest_records,
)
from warden.serving.worker.metrics import WorkerStats
from warden.serving.worker.output import Deliveries, Output
from warden.streams.feedback_auth import ExampleKeys
from warden.streams.provenance import clamp_direction, producer_time_ms
from warden.streams.records import (
    ActivityFeatures,
    DeadLetter,
    MailFeatures,
    encode,
)
from warden.streams.settings import WardenSettings

log = logging.getLogger(__name__)


def _same(outcome: Outcome) -> Outcome:
    return outcome


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
    scoring: ScoringStage | None = None,
    *,
    isolated: IsolatedIngest,
) -> None:
    """Declare the ingest agent on ``app`` for the ``source`` topic, which carries ``kind`` events.

    With ``scoring`` (a one-hop worker, the default), each micro-batch is
    scored as soon as it is ingested; without, its features go to
    ``features_out`` for a scoring agent to read. Records above
    ``IngestSettings.isolate_above_bytes`` are ingested by ``isolated`` (the
    worker's one, shared by every agent and ``POST /score``; the app owns and
    closes it, an agent never does) in a child process under a deadline; the
    others in the ``pool``'s child processes when there is one, else in the
    event loop by turns (:mod:`serving.worker.ingest_pool`).
    """
    validation.warm()  # the character tables, built now rather than on the first record that needs them
    isolation = isolated

    features_out = Output(app, features_out)
    dead_letters = Output(app, dead_letters)
    # Split stages: the scoring agent reads only features records this key sealed.
    sealer = ExampleKeys.from_settings(settings)
    trust_producers = settings.ingest.trust_producer_event_time

    async def ingested(
        records: list[RawRecord], now: float
    ) -> list[MailFeatures | ActivityFeatures | DeadLetter]:
        """The batch as objects (decoded again when a child process ingested it)."""
        return await ingest_in_turns(
            records,
            lambda record: ingest_records([record], settings, pseudonymiser, now, kind)[0],
            lambda outcome: decoded(outcome, kind),
            isolation,
            pool,
            now,
            kind,
        )

    async def ingest_and_group(records: list[RawRecord], now: float, sent: Deliveries) -> ByKind:
        """Ingest a batch, dead-letter what cannot be ingested, and group the rest per kind."""
        t0 = time.perf_counter()
        results = await ingested(records, now)
        stats.stage_seconds["features"].observe(time.perf_counter() - t0)
        grouped: ByKind = {}
        for record, result in zip(records, results, strict=True):
            if isinstance(result, DeadLetter):
                stats.dead_letter(result.reason)
                await dead_letters.send(sent, key=result.source.topic.encode(), value=encode(result))
                continue
            stats.ingested += 1
            group = grouped.setdefault(result.kind, ([], []))
            group[0].append(result)
            # Kept whole: if no model can score the batch, the input record is the dead letter.
            group[1].append((result.source, record.value or b""))
        stats.events_in[kind] += len(records)
        return grouped

    async def score_then_ack(stream: Any, grouped: ByKind, scoring: ScoringStage, sent: Deliveries) -> None:
        """Score an ingested batch and, once the broker has its outputs, let its offsets be committed."""
        if grouped:
            await scoring.score_by_kind(grouped, sent)
        await sent.release(stream)

    async def ingest_and_send(records: list[RawRecord], now: float, sent: Deliveries) -> None:
        t0 = time.perf_counter()
        outcomes = await ingest_in_turns(
            records,
            lambda record: ingest_batch([record], settings, pseudonymiser, now, kind)[0],
            _same,
            isolation,
            pool,
            now,
            kind,
        )
        t1 = time.perf_counter()
        for outcome in outcomes:
            if outcome.dead:
                stats.dead_letter(outcome.reason)
                await dead_letters.send(sent, key=outcome.key, value=outcome.value)
            else:
                stats.ingested += 1
                headers = sealer.seal(outcome.value)
                await features_out.send(sent, key=outcome.key, value=outcome.value, headers=headers)
        stats.events_in[kind] += len(records)
        # Stage times are recorded once per batch.
        stats.stage_seconds["features"].observe(t1 - t0)
        stats.stage_seconds["produce"].observe(time.perf_counter() - t1)

    def count_clamped(records: list[RawRecord], now: float) -> None:
        """Count the records whose broker time ingest holds to a bound (the same ``now`` as their ingest)."""
        for record in records:
            direction = clamp_direction(record.produced_at_ms, now, settings)
            if direction is not None:
                stats.event_times_clamped[direction] += 1

    async def ingest(stream: Any) -> None:
        # One hop: batch N is ingested (CPU in this loop) while batch N-1 waits on its store
        # round trip and its reasons thread; N is scored once N-1 is done, so the store and
        # the outputs see batches in order. Each event is held (one more reference than the
        # stream's own ack) until the broker has written its batch's outputs: an offset is
        # committed only after the event's verdict or dead letter is confirmed. Split stages
        # hold their batch the same way until its features and dead letters are confirmed.
        scoring_previous: asyncio.Future[None] | None = None
        try:
            async for events in stream.take_events(
                settings.worker.batch_size, within=settings.worker.batch_within_s
            ):
                records = [
                    RawRecord(
                        value=event.message.value,
                        topic=event.message.topic,
                        partition=event.message.partition,
                        offset=event.message.offset,
                        produced_at_ms=int(event.message.timestamp * 1000),
                        producer_ms=producer_time_ms(event.message.headers) if trust_producers else None,
                    )
                    for event in events
                ]
                now = clock()
                count_clamped(records, now)
                # Held from here: should anything below raise, these offsets stay uncommitted
                # and the events come again after a restart (never acked unconfirmed).
                sent = Deliveries(app, events)
                if scoring is None:
                    await ingest_and_send(records, now, sent)
                    await sent.release(stream)
                    continue
                grouped = await ingest_and_group(records, now, sent)
                if scoring_previous is not None:
                    await scoring_previous
                scoring_previous = asyncio.ensure_future(score_then_ack(stream, grouped, scoring, sent))
        finally:
            if scoring_previous is not None:
                await scoring_previous

    name = "ingest" if kind == "mail" else f"ingest-{kind}"
    app.agent(source, name=f"{settings.worker.app_id}.{name}")(ingest)
