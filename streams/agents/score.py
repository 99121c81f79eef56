"""The scoring agent: per micro-batch, one store round trip and one ONNX call.

Reads :class:`~streams.records.MailFeatures` from ``mail.features``, applies
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

from features.definitions import SCHEMA_HASH
from features.exceptions import StoreUnavailable
from features.served import ServedRows
from features.store import FeatureStore
from infra.metrics import WorkerStats
from infra.settings import WardenSettings
from serving.scorer import Scorer
from serving.slot import ModelSlot
from streams.exceptions import MalformedRecord
from streams.output import Output
from streams.records import (
    Action,
    DeadLetter,
    FeatureLogEntry,
    MailFeatures,
    Reason,
    ServedRow,
    SourcePosition,
    Verdict,
    decode,
    encode,
)

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 5.0


@dataclass(frozen=True)
class Scored:
    """A batch scored by the champion (and the shadow): everything but the reasons."""

    batch: Sequence[MailFeatures]
    rows: np.ndarray
    scores: np.ndarray
    actions: list[Action]
    flagged: list[int]
    scorer: Scorer
    shadow: Scorer | None
    shadow_scores: np.ndarray | None


def score_batch(
    batch: Sequence[MailFeatures],
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
    """Reasons for the flagged rows of a batch, by position (LightGBM contributions: ~0.6 ms CPU a row).

    The scoring agent runs this in a thread (LightGBM releases the GIL) while
    the batch's feature-log entries and served rows are written.
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
            schema_hash=SCHEMA_HASH,
            features=values,
            score=score,
            shadow_version=shadow.version if shadow is not None else None,
            shadow_score=shadow_scores[i] if shadow_scores is not None else None,
        )
        for i, (features, values, score) in enumerate(
            zip(scored.batch, scored.rows.astype(np.float64).tolist(), scored.scores.tolist(), strict=True)
        )
    ]


def decide(
    batch: Sequence[MailFeatures],
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


async def read_aggregates(
    store: FeatureStore, batch: Sequence[MailFeatures], stats: WorkerStats
) -> list[list[float]]:
    """The store's answer for ``batch``, retrying with backoff until the store answers."""
    delay = _BACKOFF_START_S
    while True:
        try:
            values = await store.apply_and_read(batch)
        except StoreUnavailable as exc:
            stats.store_failures += 1
            if not stats.store_degraded:
                log.warning("feature store unavailable, retrying: %s", exc)
            stats.store_degraded = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
            continue
        if stats.store_degraded:
            log.warning("feature store available again")
        stats.store_degraded = False
        return values


async def _remember(
    served: ServedRows,
    batch: Sequence[MailFeatures],
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
        )
        for f, a in zip(batch, aggregates, strict=True)
    ]
    try:
        await served.remember(rows)
    except (RedisError, OSError) as exc:
        # The verdicts stand; a label for these events will be reported as unknown.
        stats.served_rows_lost += len(rows)
        log.warning("could not keep %d served rows: %s", len(rows), exc)


def register(
    app: Any,
    source: Any,
    verdicts_out: Any,
    feature_log: Any,
    dead_letters: Any,
    settings: WardenSettings,
    store: FeatureStore,
    slot: ModelSlot,
    served: ServedRows,
    stats: WorkerStats,
    clock: Callable[[], float] = time.time,
) -> None:
    """Declare the scoring agent on ``app`` for the ``source`` (features) topic."""

    verdicts_out = Output(app, verdicts_out)
    feature_log = Output(app, feature_log)
    dead_letters = Output(app, dead_letters)

    # LightGBM's contributions for flagged rows run here, beside the event loop.
    explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warden-reasons")

    async def score(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(
            settings.worker.batch_size, within=settings.worker.batch_within_s
        ):
            batch: list[MailFeatures] = []
            for event in events:
                message = event.message
                try:
                    batch.append(decode(MailFeatures, message.value or b""))
                except MalformedRecord as exc:
                    position = SourcePosition(
                        topic=message.topic, partition=message.partition, offset=message.offset
                    )
                    stats.dead_lettered += 1
                    letter = DeadLetter.of(position, exc.reason, message.value or b"", int(clock() * 1000))
                    await dead_letters.send(key=position.topic.encode(), value=encode(letter))
            if not batch:
                continue
            aggregates = await read_aggregates(store, batch, stats)
            # Read the slot once: a hot swap lands between batches, never inside one.
            champion, shadow = slot.champion, slot.shadow
            scored = score_batch(batch, aggregates, champion, shadow)
            pending = None
            if scored.flagged and settings.serving.reasons:
                pending = loop.run_in_executor(explainer, explain, scored, settings.serving.reasons)
            entries = entries_of(scored)
            if shadow is not None:
                stats.shadow_scored += len(entries)
                stats.shadow_disagreements += sum(
                    champion.policy.decide(e.score or 0.0) != champion.policy.decide(e.shadow_score or 0.0)
                    for e in entries
                )
            for entry in entries:
                await feature_log.send(key=entry.event_id.encode(), value=encode(entry))
            await _remember(served, batch, aggregates, champion.version, stats)
            explained = await pending if pending is not None else {}
            verdicts = verdicts_of(scored, explained, int(clock() * 1000))
            for verdict in verdicts:
                await verdicts_out.send(key=verdict.event_id.encode(), value=encode(verdict))
                stats.actions[verdict.action] += 1
            stats.scored += len(verdicts)
            stats.batches += 1

    app.agent(source, name=f"{settings.worker.app_id}.score")(score)
