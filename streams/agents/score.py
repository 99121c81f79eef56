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
from typing import Any

from redis.exceptions import RedisError

from features.definitions import SCHEMA_HASH
from features.exceptions import StoreUnavailable
from features.served import ServedRows
from features.store import FeatureStore
from infra.metrics import WorkerStats
from infra.settings import WardenSettings
from serving.review import ReviewQueue
from serving.scorer import Scorer
from serving.slot import ModelSlot
from streams.exceptions import MalformedRecord
from streams.records import (
    DeadLetter,
    FeatureLogEntry,
    MailFeatures,
    ServedRow,
    SourcePosition,
    Verdict,
    decode,
    encode,
)

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 5.0


def decide(
    batch: Sequence[MailFeatures],
    aggregates: Sequence[Sequence[float]],
    scorer: Scorer,
    now_ms: int,
    *,
    shadow: Scorer | None = None,
    reasons: int = 0,
) -> tuple[list[Verdict], list[FeatureLogEntry]]:
    """Verdicts and feature-log entries for a batch whose aggregates are known.

    One ONNX call for the champion (and one for the shadow, if any); reasons
    are computed for the flagged rows only.
    """
    rows = scorer.rows(batch, aggregates)
    scores = scorer.score(rows)
    actions = [scorer.policy.decide(float(s)) for s in scores]
    flagged = [i for i, action in enumerate(actions) if action != "allow"]
    explained = dict(zip(flagged, scorer.explain(rows[flagged], reasons), strict=True))
    shadow_scores = shadow.score(shadow.rows(batch, aggregates)) if shadow is not None else None
    verdicts = []
    entries = []
    for i, (features, values, score) in enumerate(zip(batch, rows, scores, strict=True)):
        verdicts.append(
            Verdict(
                kind=features.kind,
                event_id=features.event_id,
                action=actions[i],
                score=float(score),
                model_version=scorer.version,
                source=features.source,
                produced_at_ms=features.produced_at_ms,
                decided_at_ms=now_ms,
                reasons=explained.get(i, []),
            )
        )
        entries.append(
            FeatureLogEntry(
                kind=features.kind,
                event_id=features.event_id,
                timestamp=features.timestamp,
                model_version=scorer.version,
                schema_hash=SCHEMA_HASH,
                features=[float(v) for v in values],
                score=float(score),
                shadow_version=shadow.version if shadow is not None else None,
                shadow_score=float(shadow_scores[i]) if shadow_scores is not None else None,
            )
        )
    return verdicts, entries


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
    review: ReviewQueue | None = None,
) -> None:
    """Declare the scoring agent on ``app`` for the ``source`` (features) topic."""

    async def score(stream: Any) -> None:
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
            verdicts, entries = decide(
                batch,
                aggregates,
                champion,
                int(clock() * 1000),
                shadow=shadow,
                reasons=settings.serving.reasons,
            )
            if shadow is not None:
                stats.shadow_scored += len(entries)
                stats.shadow_disagreements += sum(
                    champion.policy.decide(e.score or 0.0) != champion.policy.decide(e.shadow_score or 0.0)
                    for e in entries
                )
            for verdict, entry in zip(verdicts, entries, strict=True):
                key = verdict.event_id.encode()
                await verdicts_out.send(key=key, value=encode(verdict))
                await feature_log.send(key=key, value=encode(entry))
                stats.actions[verdict.action] += 1
            await _remember(served, batch, aggregates, champion.version, stats)
            if review is not None:
                await _review(review, batch, verdicts, entries, champion.policy.junk)
            stats.scored += len(verdicts)
            stats.batches += 1

    app.agent(source, name=f"{settings.worker.app_id}.score")(score)
