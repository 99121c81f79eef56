"""An in-memory feature store with the same semantics as :class:`~features.store.redis.RedisStore`.

It runs the very calls the Redis store sends (:func:`features.store.operations.plan`)
through the reference interpreter. Used by unit tests, as the offline
recomputation that builds training rows, and as the reference that replay and
crash tests compare Redis with. Distinct counts are exact here and
HyperLogLog estimates in Redis (standard error 0.81%).
"""

from __future__ import annotations

from collections.abc import Sequence

from warden.features.definitions import CONTENT
from warden.features.store.batches import Served, plan_batch
from warden.features.store.keys import Keys
from warden.features.store.operations import Call
from warden.features.store.scripts import Interpreter
from warden.streams.records import EventFeatures, MailFeatures, SourcePosition


class InMemoryStore:
    """Aggregates in dictionaries; no TTL (nothing lives longer than the process)."""

    def __init__(self, keys: Keys | None = None, ttl_seconds: int = 172_800) -> None:
        self.keys = keys or Keys("mem")
        self._ttl = ttl_seconds
        self.interpreter = Interpreter()

    async def serve(self, batch: Sequence[EventFeatures], *, preview: bool = False) -> list[Served]:
        return self.serve_now(batch, preview=preview)

    async def apply_and_read(self, batch: Sequence[EventFeatures]) -> list[list[float]]:
        return self.apply_and_read_now(batch)

    async def apply_calls(self, calls: Sequence[Call]) -> list[list[float]]:
        return [self.interpreter.run(call) for call in calls]

    async def preview_calls(self, calls: Sequence[Call]) -> list[list[float]]:
        return [self.interpreter.preview(call) for call in calls]

    def serve_now(self, batch: Sequence[EventFeatures], *, preview: bool = False) -> list[Served]:
        """The same as :meth:`serve`, for synchronous callers (training)."""
        planned = plan_batch(batch, self.keys, self._ttl, self._ttl, linked=not preview)
        run = self.interpreter.preview if preview else self.interpreter.run
        return planned.served(batch, [run(call) for call in planned.calls])

    def apply_and_read_now(self, batch: Sequence[EventFeatures]) -> list[list[float]]:
        """The same as :meth:`apply_and_read`, for synchronous callers (training)."""
        return [served.values for served in self.serve_now(batch)]

    def state(self) -> dict[str, object]:
        """Every aggregate key and its value, as :func:`normalise` would read it from Redis.

        Memo hashes (bookkeeping, not aggregates) are left out.
        """
        i = self.interpreter
        state: dict[str, object] = {}
        state.update({k: {str(f): c for f, c in v.items()} for k, v in i.windows.items() if v})
        state.update({k: dict(v) for k, v in i.reputations.items() if v})
        state.update({k: set(v) for k, v in i.sets.items()})
        state.update(i.strings)
        return state


def features_for(
    event_id: str,
    timestamp: float,
    sender: str,
    recipients: list[str],
    offset: int = 0,
    url_domains: list[str] | None = None,
    sending_ip: str = "",
    digest: str = "",
) -> MailFeatures:
    """A pseudonymised mail with blank content features, for store and agent tests.

    ``timestamp`` is the trusted event time; ``digest`` names the content (""
    for an event built offline: memo by id alone, no id registration).
    """
    return MailFeatures(
        event_id=event_id,
        timestamp=timestamp,
        key_id="k1",
        sender=sender,
        sender_domain="k1.domain",
        recipients=recipients,
        sending_ip=sending_ip,
        url_domains=url_domains or [],
        content=[0.0] * len(CONTENT),
        tokens=[1, 2, 3],
        source=SourcePosition(topic="test", partition=0, offset=offset),
        produced_at_ms=0,
        digest=digest,
    )
