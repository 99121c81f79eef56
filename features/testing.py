"""An in-memory feature store with the same semantics as :class:`~features.store.RedisStore`.

Used by unit tests and by offline feature computation for training, which
replays events in time order through it. Distinct counts are exact here and
HyperLogLog estimates in Redis (standard error 0.81%); the shared contract
suite in the tests checks that both agree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from features.definitions import CONTENT, SENDER_DISTINCT_RECIPIENTS_24H, SENDER_EVENTS_1H
from features.store import MEMO_SPAN_S
from streams.records import MailFeatures, SourcePosition


class InMemoryStore:
    """Aggregates in dictionaries; no TTL (nothing lives longer than the process)."""

    def __init__(self) -> None:
        self._events: dict[str, dict[str, float]] = defaultdict(dict)
        self._recipients: dict[tuple[str, int], set[str]] = defaultdict(set)
        self._results: dict[str, dict[str, list[float]]] = defaultdict(dict)

    async def apply_and_read(self, batch: Sequence[MailFeatures]) -> list[list[float]]:
        return self.apply_and_read_now(batch)

    def apply_and_read_now(self, batch: Sequence[MailFeatures]) -> list[list[float]]:
        """The same as :meth:`apply_and_read`, for synchronous callers (training)."""
        return [self._apply(event) for event in batch]

    def _apply(self, event: MailFeatures) -> list[float]:
        results = self._results[event.sender]
        if event.event_id in results:
            return list(results[event.event_id])
        ts = event.timestamp
        window = SENDER_EVENTS_1H.window_s
        events = self._events[event.sender]
        horizon = max([ts, *events.values()]) - MEMO_SPAN_S
        late = ts < horizon
        if not late:
            events[event.event_id] = ts
            for stale in [e for e, t in events.items() if t < horizon]:
                del events[stale]
                results.pop(stale, None)
        count = sum(1 for t in events.values() if ts - window < t <= ts) + int(late)
        hour = math.floor(ts / 3600)
        self._recipients[(event.sender, hour)].update(event.recipients)
        seen: set[str] = set()
        for back in range(SENDER_DISTINCT_RECIPIENTS_24H.buckets):
            seen |= self._recipients.get((event.sender, hour - back), set())
        values = [float(count), float(len(seen))]
        if not late:
            results[event.event_id] = values
        return list(values)


def features_for(
    event_id: str, timestamp: float, sender: str, recipients: list[str], offset: int = 0
) -> MailFeatures:
    """A pseudonymised mail with blank content features, for store and agent tests."""
    return MailFeatures(
        event_id=event_id,
        timestamp=timestamp,
        key_id="k1",
        sender=sender,
        sender_domain="k1.domain",
        recipients=recipients,
        content=[0.0] * len(CONTENT),
        tokens=[1, 2, 3],
        source=SourcePosition(topic="test", partition=0, offset=offset),
        produced_at_ms=0,
    )
