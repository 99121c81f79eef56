"""The Redis feature store: behavioural aggregates, updated and read per micro-batch.

Every event becomes one call per entity it names (:func:`features.store.operations.plan`),
and one that registers the digest its id was first seen with;
each call is one atomic server-side script that applies the event's updates
and returns the entity's values *including* that event, at the event's time
(point in time: later events never leak into an earlier event's row). A whole
micro-batch is one round trip that both writes and reads: one run of the batch
script on a standalone server, one pipelined EVALSHA per call (per primary) on
a cluster. The key layout and the once-only mechanism are documented
in :mod:`features.store.keys`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Protocol, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from warden.features.exceptions import StoreUnavailable
from warden.features.store.batches import Served, plan_batch
from warden.features.store.keys import Keys
from warden.features.store.operations import Call, parse
from warden.features.store.scripts import BATCH_LUA, LUA, PREVIEW_LUA
from warden.streams.records import EventFeatures


class FeatureStore(Protocol):
    """What the stream stages need from a store (Redis in production, memory in tests)."""

    async def serve(self, batch: Sequence[EventFeatures], *, preview: bool = False) -> list[Served]:
        """Apply each event's updates and return its aggregate values, in schema order, and
        whether its id was first seen with other content (:class:`~features.store.batches.Served`).

        Called once per micro-batch, before scoring. Once per content: an event
        applied before (same id, same digest) is served what it was served and
        changes nothing. With ``preview`` nothing is applied: each event gets
        what applying it would serve now, against the state as it is (events
        of one batch do not see each other). Raises :class:`StoreUnavailable`
        when the store cannot be reached; every call is once-only, so the
        caller retries the whole batch.
        """
        ...

    async def apply_and_read(self, batch: Sequence[EventFeatures]) -> list[list[float]]:
        """:meth:`serve`'s values alone."""
        ...

    async def apply_calls(self, calls: Sequence[Call]) -> list[list[float]]:
        """Run prepared calls (feedback reports, for example) and return their values."""
        ...


#: A standalone (or Valkey) client, or a Redis Cluster client: the store works on both.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster

#: Errors after which a later retry may succeed: a server or cluster node is unreachable or
#: slow, or the cluster is down.
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ClusterDownError, SlotNotCoveredError, OSError)


@contextlib.contextmanager
def _unreachable_as_unavailable() -> Iterator[None]:
    """Turns "Redis cannot be reached" into StoreUnavailable; any other error passes through."""
    try:
        yield
    except _TRANSIENT as exc:
        raise StoreUnavailable(f"redis unreachable: {exc}") from exc
    except RedisClusterException as exc:
        # A cluster client that reaches no start-up node raises a bare RedisClusterException
        # chained to the last node's error; other RedisClusterExceptions are misuse (keys of
        # one script in several slots) and must not be retried as an outage.
        if isinstance(exc.__cause__, _TRANSIENT):
            raise StoreUnavailable(f"redis cluster unreachable: {exc}") from exc
        raise


class RedisStore:
    """The feature store on a Redis (or Valkey) server, standalone or cluster.

    Built by the entry point with a client it owns; :meth:`start` must be
    awaited once before the first batch. On a cluster every key of one event
    shares a hash tag (:mod:`features.store.keys`), so each script runs on one
    primary, and a batch is one pipelined round trip per primary it touches
    (one run of :data:`~features.store.operations.BATCH_LUA` on a standalone server).
    """

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        ttl_seconds: int,
        memo_ttl_seconds: int | None = None,
        *,
        id_ttl_seconds: int | None = None,
        script_per_call: bool = False,
    ) -> None:
        """``id_ttl_seconds`` is how long each event id's first content digest is kept (default: the
        memo TTL; a worker keeps it as long as its served rows live:
        :func:`serving.worker.services.build_services`).
        ``script_per_call`` sends a standalone server one EVALSHA per call, as a cluster always
        gets, instead of one per batch (for comparison: ``warden bench --only store``)."""
        self._client = client
        self._script_per_call = script_per_call or isinstance(client, RedisCluster)
        self._keys = keys
        self._ttl = ttl_seconds
        self._memo_ttl = memo_ttl_seconds if memo_ttl_seconds is not None else ttl_seconds
        self._id_ttl = id_ttl_seconds if id_ttl_seconds is not None else self._memo_ttl
        self._sha: str | None = None
        self._batch_sha: str | None = None
        self._preview_sha: str | None = None

    @property
    def keys(self) -> Keys:
        return self._keys

    async def start(self) -> None:
        """Load the scripts: per call and preview (on every primary of a cluster), and the batch form
        on a standalone server.

        Called once before the first batch, and again when a server has lost
        its script cache. Raises StoreUnavailable if Redis cannot be reached.
        """
        with _unreachable_as_unavailable():
            if isinstance(self._client, RedisCluster):
                # redis-py sends SCRIPT LOAD to every primary by default; say so, since each
                # primary runs EVALSHA for its own slots.
                sha = await self._client.execute_command(
                    "SCRIPT LOAD", LUA, target_nodes=RedisCluster.PRIMARIES
                )
                preview_sha = await self._client.execute_command(
                    "SCRIPT LOAD", PREVIEW_LUA, target_nodes=RedisCluster.PRIMARIES
                )
            else:
                sha = await self._client.script_load(LUA)
                preview_sha = await self._client.script_load(PREVIEW_LUA)
                self._batch_sha = str(await self._client.script_load(BATCH_LUA))
        self._sha = str(sha)
        self._preview_sha = str(preview_sha)

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> bool:
        """True when the server (every primary of a cluster) answers."""
        try:
            if isinstance(self._client, RedisCluster):
                return bool(await self._client.execute_command("PING", target_nodes=RedisCluster.PRIMARIES))
            return bool(await self._client.ping())
        except (RedisError, RedisClusterException, OSError):
            return False

    async def serve(self, batch: Sequence[EventFeatures], *, preview: bool = False) -> list[Served]:
        if not batch:
            return []
        planned = plan_batch(
            batch, self._keys, self._ttl, self._memo_ttl, linked=not preview, id_ttl_s=self._id_ttl
        )
        results = await (self.preview_calls(planned.calls) if preview else self.apply_calls(planned.calls))
        return planned.served(batch, results)

    async def apply_and_read(self, batch: Sequence[EventFeatures]) -> list[list[float]]:
        return [served.values for served in await self.serve(batch)]

    async def apply_calls(self, calls: Sequence[Call]) -> list[list[float]]:
        return await self._calls(calls, preview=False)

    async def preview_calls(self, calls: Sequence[Call]) -> list[list[float]]:
        """What :meth:`apply_calls` would return for ``calls`` now, each against the state as it is;
        nothing changes. One pipelined EVALSHA per call."""
        return await self._calls(calls, preview=True)

    async def _calls(self, calls: Sequence[Call], *, preview: bool) -> list[list[float]]:
        if not calls:
            return []
        with _unreachable_as_unavailable():
            if self._sha is None:
                await self.start()
            try:
                replies = await self._run(calls, preview)
            except NoScriptError:
                # A server restarted (or a primary was added) and lacks the script: reload and
                # run the whole batch again. Calls already applied answer from their memo.
                await self.start()
                replies = await self._run(calls, preview)
        return [parse(reply) for reply in replies]

    async def _run(self, calls: Sequence[Call], preview: bool) -> list[bytes]:
        if preview:
            return await self._run_each(calls, self._preview_sha)
        if self._script_per_call:
            return await self._run_each(calls, self._sha)
        # A standalone server takes the batch as one EVALSHA of the batch script, keys and
        # arguments in one JSON document: one argument to pack, against one command per call
        # and one argument per key and set member (measured by `warden bench --only store`).
        document = json.dumps([[call.keys, call.args] for call in calls], separators=(",", ":"))
        reply: list[bytes] = await self._client.execute_command(
            "EVALSHA", (self._batch_sha or "").encode(), 0, document.encode()
        )
        return reply

    async def _run_each(self, calls: Sequence[Call], script_sha: str | None) -> list[bytes]:
        """One EVALSHA per call, pipelined: on a cluster each call's keys share one slot, a batch's do not."""
        sha = (script_sha or "").encode()
        # transaction=False: on a cluster redis-py groups the commands by the node owning each
        # EVALSHA's keys and sends each group as one pipeline, to all nodes concurrently.
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            # Not pipe.evalsha(): redis-py's cluster pipeline blocks that method (redis-py#2914)
            # although it routes a raw EVALSHA by its keys, which must share one slot. Bytes
            # because redis-py passes them through, where each str goes through a chain of type
            # checks: a third of the cost of packing a batch.
            pipe.execute_command(
                "EVALSHA", sha, len(call.keys), *map(str.encode, call.keys), *map(str.encode, call.args)
            )
        replies: list[bytes] = await pipe.execute(raise_on_error=True)
        return replies
