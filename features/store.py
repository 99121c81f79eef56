"""The Redis feature store: behavioural aggregates, updated and read per micro-batch.

For each event a server-side script adds the event to its sender's
aggregates and returns their values *including* that event, at that event's
time (point-in-time: later events never leak into an earlier event's row).
A whole micro-batch is one pipelined round trip. The key layout and the
once-only mechanism are documented in :mod:`features.keys`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Protocol, TypeAlias
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from features.definitions import SENDER_DISTINCT_RECIPIENTS_24H, SENDER_EVENTS_1H
from features.exceptions import StoreUnavailable
from features.keys import Keys
from streams.records import MailFeatures

# KEYS[1] = sender events zset; KEYS[2] = results hash; KEYS[3..] = recipient HLL
# buckets, this hour first. ARGV = event id, event time, count-from (exclusive),
# memo span (seconds), ttl, recipients...
_APPLY_AND_READ = """
local id = ARGV[1]
local ts = tonumber(ARGV[2])
local ttl = ARGV[5]
local prior = redis.call('HGET', KEYS[2], id)
if prior then
  local sep = string.find(prior, ':', 1, true)
  return {tonumber(string.sub(prior, 1, sep - 1)), tonumber(string.sub(prior, sep + 1))}
end
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local latest = ts
if newest[2] and tonumber(newest[2]) > latest then latest = tonumber(newest[2]) end
local horizon = latest - tonumber(ARGV[4])
local late = ts < horizon
if not late then
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. horizon)
  for i = 1, #stale, 500 do
    local chunk = {unpack(stale, i, math.min(i + 499, #stale))}
    redis.call('ZREM', KEYS[1], unpack(chunk))
    redis.call('HDEL', KEYS[2], unpack(chunk))
  end
end
local events = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[3], ARGV[2])
if late then events = events + 1 end
if #ARGV > 5 then
  redis.call('PFADD', KEYS[3], unpack(ARGV, 6, #ARGV))
else
  redis.call('PFADD', KEYS[3])
end
local distinct = redis.call('PFCOUNT', unpack(KEYS, 3, #KEYS))
if not late then
  redis.call('HSET', KEYS[2], id, events .. ':' .. distinct)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return {events, distinct}
"""


class FeatureStore(Protocol):
    """What the scoring stage needs from a store (Redis in production, memory in tests)."""

    async def apply_and_read(self, batch: Sequence[MailFeatures]) -> list[list[float]]:
        """Apply each event's updates and return its aggregate values, in schema order.

        Called once per micro-batch, before scoring. Raises
        :class:`StoreUnavailable` when the store cannot be reached; nothing is
        half-applied in a way a retry would double, so the caller retries the
        whole batch.
        """
        ...


#: Events (and the values served for them) are kept this long behind the sender's newest
#: event; an event older than that ("late") is counted but neither stored nor memoised.
MEMO_SPAN_S = 2 * SENDER_EVENTS_1H.window_s


def _hour(timestamp: float) -> int:
    return math.floor(timestamp / 3600)


def script_arguments(event: MailFeatures, keys: Keys, ttl_seconds: int) -> tuple[list[str], list[str]]:
    """The keys and arguments of the update script for one event."""
    hour = _hour(event.timestamp)
    buckets = SENDER_DISTINCT_RECIPIENTS_24H.buckets
    script_keys = [keys.sender_events(event.sender), keys.sender_results(event.sender)] + [
        keys.sender_recipients(event.sender, hour - back) for back in range(buckets)
    ]
    window = SENDER_EVENTS_1H.window_s
    args = [
        event.event_id,
        repr(event.timestamp),
        repr(event.timestamp - window),
        str(MEMO_SPAN_S),
        str(ttl_seconds),
        *event.recipients,
    ]
    return script_keys, args


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


def connect(
    urls: str | Sequence[str], *, cluster: bool, socket_timeout_s: float | None = None
) -> RedisClient:
    """A client for :class:`RedisStore`, built by an entry point.

    Standalone: one ``redis://`` URL. Cluster: one or more node URLs, all used
    as start-up nodes; the client discovers the rest of the cluster from them.
    Credentials and TLS come from the first URL. Nothing is connected yet.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list or (len(url_list) > 1 and not cluster):
        raise ValueError(f"a standalone store needs exactly one URL, got {len(url_list)}")
    if not cluster:
        return aioredis.Redis.from_url(
            url_list[0], socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )
    others = [urlsplit(url) for url in url_list[1:]]
    return RedisCluster.from_url(
        url_list[0],
        startup_nodes=[ClusterNode(part.hostname or "localhost", part.port or 6379) for part in others],
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
    )


class RedisStore:
    """The feature store on a Redis (or Valkey) server, standalone or cluster.

    Built by the entry point with a client it owns; :meth:`start` must be
    awaited once before the first batch. On a cluster every key of one event
    shares a hash tag (:mod:`features.keys`), so each script runs on one
    primary, and a batch is one pipelined round trip per primary it touches.
    """

    def __init__(self, client: RedisClient, keys: Keys, ttl_seconds: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl = ttl_seconds
        self._sha: str | None = None

    async def start(self) -> None:
        """Load the update script (on every primary of a cluster).

        Called once before the first batch, and again when a server has lost
        its script cache. Raises StoreUnavailable if Redis cannot be reached.
        """
        with _unreachable_as_unavailable():
            if isinstance(self._client, RedisCluster):
                # redis-py sends SCRIPT LOAD to every primary by default; say so, since each
                # primary runs EVALSHA for its own slots.
                sha = await self._client.execute_command(
                    "SCRIPT LOAD", _APPLY_AND_READ, target_nodes=RedisCluster.PRIMARIES
                )
            else:
                sha = await self._client.script_load(_APPLY_AND_READ)
        self._sha = str(sha)

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

    async def apply_and_read(self, batch: Sequence[MailFeatures]) -> list[list[float]]:
        if not batch:
            return []
        with _unreachable_as_unavailable():
            if self._sha is None:
                await self.start()
            try:
                results = await self._run(batch)
            except NoScriptError:
                # A server restarted (or a primary was added) and lacks the script: reload and
                # run the whole batch again. On a cluster the other primaries have applied their
                # part by now; the once-only script makes running it again a no-op there.
                await self.start()
                results = await self._run(batch)
        return [[float(events), float(distinct)] for events, distinct in results]

    async def _run(self, batch: Sequence[MailFeatures]) -> list[list[int]]:
        sha = self._sha or ""
        # transaction=False: on a cluster redis-py groups the commands by the node owning each
        # EVALSHA's keys and sends each group as one pipeline, to all nodes concurrently.
        pipe = self._client.pipeline(transaction=False)
        for event in batch:
            script_keys, args = script_arguments(event, self._keys, self._ttl)
            # Not pipe.evalsha(): redis-py's cluster pipeline blocks that method (redis-py#2914)
            # although it routes a raw EVALSHA by its keys, which must share one slot.
            pipe.execute_command("EVALSHA", sha, len(script_keys), *script_keys, *args)
        results: list[list[int]] = await pipe.execute(raise_on_error=True)
        return results
