"""A micro-batch's store calls, in the order they run, and what each event was served from their replies.

The worker's store (:mod:`features.store.redis`) and the in-memory reference
(:mod:`features.testing`) both plan a batch here, run its calls (one script
per batch on a single Redis, pipelined calls on a cluster) and read each
event's aggregate values back with :meth:`BatchPlan.served`. What each call
does is :mod:`features.store.operations`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from warden.features.store.keys import Keys
from warden.features.store.operations import Call, combine, digest_numbers, plan, plan_linked, register
from warden.streams.records import EventFeatures


@dataclass(frozen=True)
class Served:
    """What the store served one event."""

    #: The event's aggregate values, in its kind's schema order.
    values: list[float]
    #: The event's id was first seen with other content: it is a new event, to be scored
    #: under a derived id (streams.provenance.derived_event_id).
    reused: bool = False


@dataclass(frozen=True)
class BatchPlan:
    """A micro-batch's calls, in the order they run, and how to read the events' values from their replies."""

    calls: list[Call]
    #: Per event: where its calls start, how many entity calls it has, whether a registration leads.
    spans: list[tuple[int, int, bool]]

    def served(self, batch: Sequence[EventFeatures], results: Sequence[Sequence[float]]) -> list[Served]:
        """Each event's :class:`Served`, from the replies to :attr:`calls` (same order)."""
        out = []
        for event, (start, count, registered) in zip(batch, self.spans, strict=True):
            first = start + registered
            calls = self.calls[first : first + count]
            values = combine(calls, results[first : first + count], event.kind)
            reused = registered and tuple(int(v) for v in results[start]) != digest_numbers(event.digest)
            out.append(Served(values, reused))
        return out


def plan_batch(
    batch: Sequence[EventFeatures],
    keys: Keys,
    ttl_s: int,
    memo_ttl_s: int,
    *,
    linked: bool = True,
    id_ttl_s: int | None = None,
) -> BatchPlan:
    """Every call of a micro-batch: per event its registration, its entity calls, then its linked calls.

    During a key rotation the next generation's calls (``linked``) ride in the
    same round trip, each event's right after its own: an event served by the
    next generation (the grace period ended mid-batch) then sees every earlier
    event of the batch, as it would one by one. A preview leaves them out.
    ``id_ttl_s`` is how long an id's first digest is kept (default: the memo TTL).
    """
    calls: list[Call] = []
    spans = []
    for event in batch:
        start = len(calls)
        registration = register(event, keys, ttl_s, memo_ttl_s if id_ttl_s is None else id_ttl_s)
        if registration is not None:
            calls.append(registration)
        entity_calls = plan(event, keys, ttl_s, memo_ttl_s)
        calls += entity_calls
        if linked:
            calls += plan_linked(event, keys, ttl_s, memo_ttl_s)
        spans.append((start, len(entity_calls), registration is not None))
    return BatchPlan(calls, spans)
