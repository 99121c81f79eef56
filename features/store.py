"""The Redis feature store: behavioural aggregates, updated and read per micro-batch.

For each event a server-side script adds the event to its sender's
aggregates and returns their values *including* that event, at that event's
time (point-in-time: later events never leak into an earlier event's row).
A whole micro-batch is one pipelined round trip. The key layout and the
once-only mechanism are documented in :mod:`features.keys`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
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


class RedisStore:
    """The feature store on a Redis (or Valkey) server, standalone or cluster.

    Built by the entry point with a client it owns; :meth:`start` must be
    awaited once before the first batch.
    """

    def __init__(self, client: aioredis.Redis, keys: Keys, ttl_seconds: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl = ttl_seconds
        self._sha: str | None = None

    async def start(self) -> None:
        """Load the update script. Raises StoreUnavailable if Redis cannot be reached."""
        try:
            self._sha = str(await self._client.script_load(_APPLY_AND_READ))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"redis unreachable: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def apply_and_read(self, batch: Sequence[MailFeatures]) -> list[list[float]]:
        if not batch:
            return []
        try:
            if self._sha is None:
                await self.start()
            try:
                results = await self._run(batch)
            except NoScriptError:
                # Redis restarted and lost its script cache: reload and run again.
                await self.start()
                results = await self._run(batch)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"redis unreachable: {exc}") from exc
        return [[float(events), float(distinct)] for events, distinct in results]

    async def _run(self, batch: Sequence[MailFeatures]) -> list[list[int]]:
        sha = self._sha or ""
        pipe = self._client.pipeline(transaction=False)
        for event in batch:
            script_keys, args = script_arguments(event, self._keys, self._ttl)
            pipe.evalsha(sha, len(script_keys), *script_keys, *args)
        results: list[list[int]] = await pipe.execute(raise_on_error=True)
        return results
