"""One contract over every feature store: in memory and Redis agree."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from features.keys import Keys
from features.store import FeatureStore, RedisStore
from features.testing import InMemoryStore, features_for
from infra.settings import WardenSettings
from streams.records import MailFeatures


def event(i: int, ts: float, sender: str, recipients: list[str]) -> MailFeatures:
    return features_for(f"e{i}", ts, sender, recipients, offset=i)


def stream(seed: int = 3, n: int = 400) -> list[MailFeatures]:
    rng = random.Random(seed)
    ts = 1_030_000_000.0
    out = []
    for i in range(n):
        ts += rng.expovariate(1 / 120)
        sender = f"k1.sender{rng.randrange(8)}"
        recipients = sorted({f"k1.r{rng.randrange(60)}" for _ in range(rng.randrange(1, 5))})
        out.append(event(i, ts, sender, recipients))
    return out


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, settings: WardenSettings) -> AsyncIterator[FeatureStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    assert settings.redis.url is not None
    client = aioredis.Redis.from_url(settings.redis.url.get_secret_value())
    redis_store = RedisStore(client, Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    await redis_store.start()
    yield redis_store
    await redis_store.close()


async def test_every_store_computes_the_reference_aggregates(store: FeatureStore) -> None:
    events = stream()
    reference = InMemoryStore().apply_and_read_now(events)
    got: list[list[float]] = []
    for start in range(0, len(events), 37):
        got.extend(await store.apply_and_read(events[start : start + 37]))
    for (count, distinct), (want_count, want_distinct) in zip(got, reference, strict=True):
        assert count == want_count
        # Redis counts distinct values with HyperLogLog: exact enough at these sizes.
        assert abs(distinct - want_distinct) <= max(1.0, 0.02 * want_distinct)


async def test_replaying_recent_events_serves_the_same_values(store: FeatureStore) -> None:
    """A crash replays the uncommitted tail: it must be served exactly what it was served."""
    events = stream(seed=4, n=120)
    first = await store.apply_and_read(events)
    tail = events[-30:]
    assert await store.apply_and_read(tail) == first[-30:]
    assert await store.apply_and_read(events[-1:]) == first[-1:]


async def test_late_events_are_counted_but_not_stored(store: FeatureStore) -> None:
    events = stream(seed=7, n=60)
    await store.apply_and_read(events)
    late = event(999, events[0].timestamp, events[-1].sender, ["k1.late"])
    ((count, distinct),) = await store.apply_and_read([late])
    assert count >= 1
    assert distinct >= 1


async def test_redis_keys_expire_and_hold_pseudonyms_only(settings: WardenSettings) -> None:
    assert settings.redis.url is not None
    client = aioredis.Redis.from_url(settings.redis.url.get_secret_value())
    redis_store = RedisStore(client, Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    await redis_store.apply_and_read(stream(seed=5, n=50))
    keys = [k async for k in client.scan_iter(match=f"{settings.redis.key_prefix}:*")]
    assert keys
    for key in keys:
        assert 0 < await client.ttl(key) <= settings.redis.ttl_seconds
        assert b"{s:k1.sender" in key
    await redis_store.close()


async def test_redis_store_recovers_its_script_after_a_flush(settings: WardenSettings) -> None:
    assert settings.redis.url is not None
    client = aioredis.Redis.from_url(settings.redis.url.get_secret_value())
    redis_store = RedisStore(client, Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    await redis_store.start()
    await client.script_flush()
    assert await redis_store.apply_and_read(stream(seed=6, n=3))
    await redis_store.close()


async def _snapshot(client: aioredis.Redis, prefix: str) -> dict[bytes, object]:
    state: dict[bytes, object] = {}
    async for key in client.scan_iter(match=f"{prefix}:*"):
        kind = await client.type(key)
        if kind == b"zset":
            state[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            state[key] = await client.hgetall(key)
        else:
            state[key] = await client.get(key)
    return state


async def test_replay_leaves_every_redis_key_as_if_applied_once(settings: WardenSettings) -> None:
    assert settings.redis.url is not None
    client = aioredis.Redis.from_url(settings.redis.url.get_secret_value())
    redis_store = RedisStore(client, Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    events = stream(seed=8, n=200)
    await redis_store.apply_and_read(events)
    before = await _snapshot(client, settings.redis.key_prefix)
    await redis_store.apply_and_read(events[-50:])
    await redis_store.apply_and_read(events[-50:])
    assert await _snapshot(client, settings.redis.key_prefix) == before
    await redis_store.close()
