"""The scoring agent: per micro-batch, one store round trip and one ONNX call per event kind.

Reads :class:`~streams.records.MailFeatures` from ``mail.features`` (and, in
a second agent of the same worker, :class:`~streams.records.ActivityFeatures`
from ``activity.features``, routed per kind to that kind's model), applies
and reads the behavioural aggregates (the store makes re-application after
a crash harmless), scores all rows at once, and sends one verdict and one
feature-log entry per event. If the store is down, the batch waits and
retries with backoff: input is never skipped, and health reports
``degraded`` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from warden.features.store.batches import Served
from warden.features.store.redis import FeatureStore
from warden.features.store.served import ServedRows
from warden.models.exceptions import ModelRejected
from warden.models.scorer import Scorer
from warden.serving.review.queue import ReviewQueue
from warden.serving.slot import ModelSlot
from warden.serving.worker import retry
from warden.serving.worker.metrics import WorkerStats
from warden.serving.worker.output import Deliveries, Output
from warden.streams.exceptions import MalformedRecord
from warden.streams.feedback_auth import ExampleKeys
from warden.streams.provenance import derived_event_id
from warden.streams.records import (
    Action,
    ActivityFeatures,
    DeadLetter,
    EventFeatures,
    FeatureLogEntry,
    MailFeatures,
    Reason,
    ServedRow,
    SourcePosition,
    Verdict,
    decode,
    encode,
)
from warden.streams.settings import WardenSettings

log = logging.getLogger(__name__)

#: A micro-batch routed per kind: each kind's features, and each event's record as it
#: arrived (position and bytes) to dead-letter whole if no model can score it.
ByKind = dict[str, tuple[list[EventFeatures], list[tuple[SourcePosition, bytes]]]]

#: The reason a features record not sealed by an ingesting worker is refused.
UNSEALED = "unauthenticated features record: no valid seal of an ingesting worker"


@dataclass(frozen=True)
class Scored:
    """A batch scored by the champion (and the shadow): everything but the reasons."""

    batch: Sequence[EventFeatures]
    rows: np.ndarray
    scores: np.ndarray
    actions: list[Action]
    flagged: list[int]
    scorer: Scorer
    shadow: Scorer | None
    shadow_scores: np.ndarray | None


def score_batch(
    batch: Sequence[EventFeatures],
    aggregates: Sequence[Sequence[float]],
    scorer: Scorer,
    shadow: Scorer | None = None,
) -> Scored:
    """One ONNX call for the champion (and one for the shadow, if any), and the policy's actions."""
    rows = scorer.rows(batch, aggregates)
    scores = scorer.score(rows)
    decide_one = scorer.policy.decide
    actions = [decide_one(s) for s in scores.tolist()]
    flagged = [i for i, action in enumerate(actions) if action != "allow"]
    shadow_scores = shadow.score(shadow.rows(batch, aggregates)) if shadow is not None else None
    return Scored(batch, rows, scores, actions, flagged, scorer, shadow, shadow_scores)


def explain(scored: Scored, reasons: int) -> dict[int, list[Reason]]:
    """Reasons for the flagged rows of a batch, by position (path contributions: ~30-70 µs CPU a row).

    The scoring agent runs this in a thread (LightGBM's ``pred_leaf`` releases
    the GIL) while the batch's feature-log entries and served rows are written.
    """
    flagged = scored.flagged
    return dict(zip(flagged, scored.scorer.explain(scored.rows[flagged], reasons), strict=True))


def verdicts_of(scored: Scored, explained: dict[int, list[Reason]], now_ms: int) -> list[Verdict]:
    """One verdict per event of a scored batch, once its reasons are known."""
    scorer = scored.scorer
    return [
        Verdict(
            kind=features.kind,
            event_id=features.event_id,
            action=scored.actions[i],
            score=score,
            model_version=scorer.version,
            source=features.source,
            produced_at_ms=features.produced_at_ms,
            decided_at_ms=now_ms,
            reasons=explained.get(i, []),
            original_event_id=features.original_event_id,
        )
        for i, (features, score) in enumerate(zip(scored.batch, scored.scores.tolist(), strict=True))
    ]


def entries_of(scored: Scored) -> list[FeatureLogEntry]:
    """One feature-log entry per event: the row as served, both scores (reasons are not logged)."""
    scorer, shadow = scored.scorer, scored.shadow
    shadow_scores = scored.shadow_scores.tolist() if scored.shadow_scores is not None else None
    return [
        FeatureLogEntry(
            kind=features.kind,
            event_id=features.event_id,
            timestamp=features.timestamp,
            model_version=scorer.version,
            schema_hash=scorer.schema.schema_hash,
            features=values,
            score=score,
            shadow_version=shadow.version if shadow is not None else None,
            shadow_score=shadow_scores[i] if shadow_scores is not None else None,
            original_event_id=features.original_event_id,
        )
        for i, (features, values, score) in enumerate(
            zip(scored.batch, scored.rows.astype(np.float64).tolist(), scored.scores.tolist(), strict=True)
        )
    ]


def decide(
    batch: Sequence[EventFeatures],
    aggregates: Sequence[Sequence[float]],
    scorer: Scorer,
    now_ms: int,
    *,
    shadow: Scorer | None = None,
    reasons: int = 0,
) -> tuple[list[Verdict], list[FeatureLogEntry]]:
    """Verdicts and feature-log entries for a batch whose aggregates are known (all in this thread).

    One ONNX call for the champion (and one for the shadow, if any); reasons
    are computed for the flagged rows only.
    """
    scored = score_batch(batch, aggregates, scorer, shadow)
    return verdicts_of(scored, explain(scored, reasons), now_ms), entries_of(scored)


def under_served_ids(
    batch: Sequence[EventFeatures], served: Sequence[Served], stats: WorkerStats
) -> list[EventFeatures]:
    """The batch with each event whose id was first seen with other content renamed.

    Such an event is a new event (the store applied it as one): it is scored
    under :func:`~streams.provenance.derived_event_id`, keeping the id it came
    with in ``original_event_id``, so its verdict, feature-log entry and served
    row neither contradict nor replace the first event's.
    """
    out: list[EventFeatures] = []
    for features, answer in zip(batch, served, strict=True):
        if answer.reused:
            stats.event_ids_reused += 1
            features = features.model_copy(
                update={
                    "event_id": derived_event_id(features.event_id, features.digest),
                    "original_event_id": features.event_id,
                }
            )
        out.append(features)
    return out


def score_served(
    slot: ModelSlot, kind: str, batch: Sequence[EventFeatures], aggregates: Sequence[Sequence[float]]
) -> Scored | str:
    """:func:`score_batch` with the slot's models for ``kind``, falling back when a model fails on live rows.

    A mail model whose graph scores NaN or infinity on this batch is refused
    (see :meth:`ModelSlot.fall_back`) and the batch is scored again by what
    serves next. Returns the scored batch, or the reason when no model can
    score it (the caller dead-letters the batch, features record kept whole).
    """
    while True:
        # Read the slot once: a hot swap lands between batches, never inside one.
        champion = slot.scorer_for(kind)
        if champion is None:
            return f"no {kind} model is promoted in the registry"
        shadow = slot.shadow if kind == "mail" else None
        try:
            return score_batch(batch, aggregates, champion, shadow)
        except ModelRejected as exc:
            if kind != "mail":  # calendar and contacts keep no earlier champion to go back to
                return f"no model can score this event: {exc}"
            try:
                champion.score(champion.rows(batch, aggregates))
                failed = shadow if shadow is not None else champion
            except ModelRejected:
                failed = champion
            if not slot.fall_back(failed, str(exc)):
                return f"no model can score this event: {exc}"


def verdicts_for(
    slot: ModelSlot,
    kind: str,
    batch: Sequence[EventFeatures],
    served: Sequence[Served],
    stats: WorkerStats,
    now_ms: int,
    reasons: int,
) -> list[Verdict] | str:
    """The verdicts of a batch the store has answered, scored as the stream scores it, reasons included.

    Called by ``POST /score`` (:mod:`serving.worker.web`), which sends nothing: ids
    first seen with other content are renamed (:func:`under_served_ids`) and
    the slot's models score through :func:`score_served`, falling back as the
    stream does when one fails on live rows. Returns the reason when no model
    can score the batch.
    """
    batch = under_served_ids(batch, served, stats)
    scored = score_served(slot, kind, batch, [answer.values for answer in served])
    if isinstance(scored, str):
        return scored
    return verdicts_of(scored, explain(scored, reasons), now_ms)


async def _remember(
    served: ServedRows,
    batch: Sequence[EventFeatures],
    aggregates: Sequence[Sequence[float]],
    version: str,
    stats: WorkerStats,
) -> None:
    """Keep what each verdict was computed from, for labels to join later."""
    rows = [
        ServedRow(
            event_id=f.event_id,
            kind=f.kind,
            timestamp=f.timestamp,
            model_version=version,
            sender=f.sender,
            sender_domain=f.sender_domain,
            url_domains=f.url_domains,
            content=f.content,
            tokens=f.tokens,
            aggregates=list(a),
            linked=f.linked if isinstance(f, MailFeatures) else None,
            original_event_id=f.original_event_id,
        )
        for f, a in zip(batch, aggregates, strict=True)
    ]
    try:
        await served.remember(rows)
    except (RedisError, OSError) as exc:
        # The verdicts stand; a label for these events will be reported as unknown.
        stats.served_rows_lost += len(rows)
        log.warning("could not keep %d served rows: %s", len(rows), exc)


async def _review(
    review: ReviewQueue,
    batch: Sequence[MailFeatures],
    verdicts: Sequence[Verdict],
    entries: Sequence[FeatureLogEntry],
    junk_threshold: float,
) -> None:
    """Put a scored batch into the ops review queue (after its verdicts are sent)."""
    try:
        await review.enqueue(batch, verdicts, entries, junk_threshold)
    except (RedisError, OSError) as exc:
        # The verdicts stand; these events are missing from the review queue.
        log.warning("could not queue %d verdicts for review: %s", len(batch), exc)


class ScoringStage:
    """What is done with one kind's micro-batch of features: store, model, policy, outputs.

    One per worker, shared by the scoring agents (features read off a
    features topic) and, in a one-hop worker, by the ingest agents, which
    score their batch right after ingesting it (``WorkerSettings.split_stages``).
    """

    def __init__(
        self,
        app: Any,
        verdicts_out: Any,
        feature_log: Any,
        dead_letters: Any,
        settings: WardenSettings,
        store: FeatureStore,
        slot: ModelSlot,
        served: ServedRows,
        stats: WorkerStats,
        clock: Callable[[], float] = time.time,
        review: ReviewQueue | None = None,
    ) -> None:
        self._verdicts = Output(app, verdicts_out)
        self._feature_log = Output(app, feature_log)
        self._dead_letters = Output(app, dead_letters)
        self._settings = settings
        self._store = store
        self._slot = slot
        self._served = served
        self._stats = stats
        self._clock = clock
        self._review = review
        # Reasons for flagged rows are computed here, beside the event loop.
        self._explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warden-reasons")

    async def dead_letter(
        self, position: SourcePosition, reason: str, payload: bytes, sent: Deliveries
    ) -> None:
        """Send the dead letter of one record as part of the batch whose outputs ``sent`` tracks."""
        self._stats.dead_letter(reason)
        letter = DeadLetter.of(position, reason, payload, int(self._clock() * 1000))
        await self._dead_letters.send(sent, key=position.topic.encode(), value=encode(letter))

    async def score(
        self, batch: list[EventFeatures], kind: str, raw: list[tuple[SourcePosition, bytes]], sent: Deliveries
    ) -> None:
        """Score one kind's batch and send its verdicts, feature-log entries and queue entries.

        ``raw`` is each event's record as it arrived (position and bytes): when
        no model can score the batch, those records become dead letters, to
        replay once one can (:mod:`streams.dead_letters`). Every record sent is
        tracked in ``sent``, which the caller confirms before acking the batch.
        """
        settings, stats, slot, clock = self._settings, self._stats, self._slot, self._clock
        stage = stats.stage_seconds
        if slot.scorer_for(kind) is None:
            reason = f"no {kind} model is promoted in the registry"
            for position, payload in raw:
                await self.dead_letter(position, reason, payload, sent)
            return
        t1 = time.perf_counter()
        served = await retry.until_answered(lambda: self._store.serve(batch), stats, retry.SERVE)
        batch = under_served_ids(batch, served, stats)
        aggregates = [answer.values for answer in served]
        t2 = time.perf_counter()
        scored = score_served(slot, kind, batch, aggregates)
        if isinstance(scored, str):
            for position, payload in raw:
                await self.dead_letter(position, scored, payload, sent)
            return
        champion, shadow = scored.scorer, scored.shadow
        pending = None
        if scored.flagged and settings.serving.reasons:
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._explainer, explain, scored, settings.serving.reasons)
        entries = entries_of(scored)
        if shadow is not None:
            stats.shadow_scored += len(entries)
            stats.shadow_disagreements += sum(
                champion.policy.decide(e.score or 0.0) != champion.policy.decide(e.shadow_score or 0.0)
                for e in entries
            )
        t3 = time.perf_counter()
        for entry in entries:
            await self._feature_log.send(sent, key=entry.event_id.encode(), value=encode(entry))
        await _remember(self._served, batch, aggregates, champion.version, stats)
        explained = await pending if pending is not None else {}
        verdicts = verdicts_of(scored, explained, int(clock() * 1000))
        for verdict in verdicts:
            await self._verdicts.send(sent, key=verdict.event_id.encode(), value=encode(verdict))
        if self._review is not None and kind == "mail":
            mails = [f for f in batch if isinstance(f, MailFeatures)]
            await _review(self._review, mails, verdicts, entries, champion.policy.junk)
        t4 = time.perf_counter()
        sent_ms = clock() * 1000
        stats.verdicts((v.kind, v.action) for v in verdicts)
        stats.scored += len(verdicts)
        stage["store"].observe(t2 - t1)
        stage["score"].observe(t3 - t2)
        stage["produce"].observe(t4 - t3)
        stats.end_to_end_seconds.observe_many((sent_ms - f.produced_at_ms) / 1000 for f in batch)

    async def score_by_kind(self, grouped: ByKind, sent: Deliveries) -> None:
        """Score a micro-batch routed per kind: each kind through its own model, in arrival order.

        Its outputs are tracked in ``sent``; the caller confirms them before acking the batch.
        """
        for kind, (batch, raw) in grouped.items():
            await self.score(batch, kind, raw, sent)
        self._stats.batches += 1
        self._stats.batch_sizes.observe(sum(len(batch) for batch, _ in grouped.values()))


def register(
    app: Any,
    source: Any,
    stage: ScoringStage,
    settings: WardenSettings,
    stats: WorkerStats,
    record_type: type[MailFeatures] | type[ActivityFeatures] = MailFeatures,
) -> None:
    """Declare a scoring agent on ``app`` for the ``source`` (features) topic.

    ``record_type`` is what the topic carries: mail features, or the calendar
    and contacts features of ``activity.features`` (one agent per topic). Only
    records sealed by an ingesting worker are read (:meth:`ExampleKeys.sealed`);
    any other is a dead letter. Declared only in split-stage workers.
    """
    keys = ExampleKeys.from_settings(settings)

    async def score(stream: Any) -> None:
        async for events in stream.take_events(
            settings.worker.batch_size, within=settings.worker.batch_within_s
        ):
            # The batch is held until the broker has its outputs (see Deliveries.release).
            sent = Deliveries(app, events)
            t0 = time.perf_counter()
            by_kind: ByKind = {}
            for event in events:
                message = event.message
                position = SourcePosition(
                    topic=message.topic, partition=message.partition, offset=message.offset
                )
                raw = message.value or b""
                if not keys.sealed(raw, message.headers):
                    await stage.dead_letter(position, UNSEALED, raw, sent)
                    continue
                try:
                    features = decode(record_type, raw)
                except MalformedRecord as exc:
                    await stage.dead_letter(position, exc.reason, raw, sent)
                    continue
                group = by_kind.setdefault(features.kind, ([], []))
                group[0].append(features)
                group[1].append((position, raw))
            if by_kind:
                stats.stage_seconds["decode"].observe(time.perf_counter() - t0)
                await stage.score_by_kind(by_kind, sent)
            await sent.release(stream)

    name = "score" if record_type is MailFeatures else "score-activity"
    app.agent(source, name=f"{settings.worker.app_id}.{name}")(score)
