"""Served rows and the feedback ledger: the Redis side of the feedback join.

The scoring agent remembers, for each event, what its verdict was computed
from (a :class:`~streams.records.ServedRow`: pseudonyms and numbers); the
feedback agent recalls it by event id when a label arrives, so training
examples are exactly what was served (no recomputation, no skew). Rows
expire after ``FeedbackSettings.row_ttl_seconds``: a label for an older or
unknown event is counted and dead-lettered, never silently dropped.

Keys (one slot per event or reporter, so a cluster works too):

* ``<p>:{e:<event id>}:served`` string, the row's JSON;
* ``<p>:{f:<feedback id>}:seen`` string, set once per feedback id (duplicates skip);
* ``<p>:{r:<reporter pseudonym>}:day:<day>`` counter of that reporter's reports;
* ``<p>:{t:<target pseudonym>}:day:<day>`` counter of user reports about a sender.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from warden.features.store.redis import RedisClient
from warden.streams.records import ServedRow


class ServedRows:
    """Rows as served, by event id."""

    def __init__(self, client: RedisClient, prefix: str, ttl_seconds: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl_seconds

    def key(self, event_id: str) -> str:
        return f"{self._prefix}:{{e:{event_id}}}:served"

    async def remember(self, rows: Sequence[ServedRow]) -> None:
        """Store a batch of rows (one pipelined round trip). Called after each scored batch.

        The first row of an id stays (``SET NX``) until it expires: a redelivery
        scored again, or an id reused after its first digest expired, cannot
        replace what a label for that id joins with.
        """
        if not rows:
            return
        pipe = self._client.pipeline(transaction=False)
        for row in rows:
            pipe.set(self.key(row.event_id), row.model_dump_json(), ex=self._ttl, nx=True)
        await pipe.execute()

    async def recall(self, event_ids: Sequence[str]) -> list[ServedRow | None]:
        """The rows of ``event_ids`` (None where unknown or expired)."""
        if not event_ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.get(self.key(event_id))
        out: list[ServedRow | None] = []
        for raw in await pipe.execute():
            try:
                out.append(ServedRow.model_validate_json(raw) if raw else None)
            except ValidationError:
                out.append(None)
        return out


class FeedbackLedger:
    """Once-only feedback and the per-reporter / per-target daily counts that bound it."""

    def __init__(self, client: RedisClient, prefix: str, ttl_seconds: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl_seconds

    async def first_time(self, feedback_ids: Sequence[str], claims: Sequence[str]) -> list[bool]:
        """True for each feedback id not seen before, or seen only under the same claim.

        The first reading of a feedback id marks it seen with its claim (where
        the label was read); a later reading with the same claim is the same
        label read again (its batch never confirmed) and is true again.
        """
        if not feedback_ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for feedback_id, claim in zip(feedback_ids, claims, strict=True):
            key = f"{self._prefix}:{{f:{feedback_id}}}:seen"
            pipe.set(key, claim, nx=True, ex=self._ttl)
            pipe.get(key)
        results = await pipe.execute()
        return [
            bool(created) or held == claim.encode()
            for created, held, claim in zip(results[::2], results[1::2], claims, strict=True)
        ]

    async def count(
        self, reporters: Sequence[str], targets: Sequence[str | None], day: int
    ) -> list[tuple[int, int]]:
        """Add one report to each reporter's and target's count of ``day``; returns the new counts.

        A target of None (not a user report) is not counted and reads as 0.
        """
        if not reporters:
            return []
        pipe = self._client.pipeline(transaction=False)
        for reporter, target in zip(reporters, targets, strict=True):
            for key in (
                f"{self._prefix}:{{r:{reporter}}}:day:{day}",
                None if target is None else f"{self._prefix}:{{t:{target}}}:day:{day}",
            ):
                if key is None:
                    pipe.echo("0")
                else:
                    pipe.incr(key)
                    pipe.expire(key, 3 * 86400)
        results = await pipe.execute()
        out = []
        position = 0
        for _, target in zip(reporters, targets, strict=True):
            reporter_count = int(results[position])
            position += 2
            if target is None:
                target_count = 0
                position += 1
            else:
                target_count = int(results[position])
                position += 2
            out.append((reporter_count, target_count))
        return out
