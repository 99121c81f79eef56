"""One contract over every feature store: in memory, standalone Redis and Redis Cluster agree."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from features.keys import Keys
from features.store import FeatureStore, RedisClient, RedisStore, connect
from features.testing import InMemoryStore, features_for
from infra.rediscluster import ClusterState
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


def _connect(request: pytest.FixtureRequest, settings: WardenSettings) -> RedisClient:
    """A client on the session's standalone Redis, or on its cluster (started on first use)."""
    if request.param == "cluster":
        cluster: ClusterState = request.getfixturevalue("redis_cluster")
        return connect(cluster.urls, cluster=True)
    assert settings.redis.url is not None
    return connect(settings.redis.url.get_secret_value(), cluster=False)


def _redis_store(client: RedisClient, settings: WardenSettings) -> RedisStore:
    return RedisStore(client, Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest, settings: WardenSettings) -> AsyncIterator[FeatureStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    redis_store = _redis_store(_connect(request, settings), settings)
    await redis_store.start()
    yield redis_store
    await redis_store.close()


@pytest.fixture(params=["redis", "cluster"])
async def redis_client(
    request: pytest.FixtureRequest, settings: WardenSettings
) -> AsyncIterator[RedisClient]:
    """A client on a standalone Redis or on a Redis Cluster, for tests that look at the keys."""
    client = _connect(request, settings)
    yield client
    await client.aclose()


async def _scan(client: RedisClient, prefix: str) -> dict[bytes, str]:
    """Every key under ``prefix``, with the node holding it; a cluster's primaries one by one."""
    if not isinstance(client, RedisCluster):
        return {key: "standalone" async for key in client.scan_iter(match=f"{prefix}:*")}
    await client.initialize()
    located: dict[bytes, str] = {}
    for node in client.get_primaries():
        async for key in client.scan_iter(match=f"{prefix}:*", target_nodes=node):
            located[key] = node.name
    return located


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


async def test_redis_keys_expire_and_hold_pseudonyms_only(
    redis_client: RedisClient, settings: WardenSettings
) -> None:
    await _redis_store(redis_client, settings).apply_and_read(stream(seed=5, n=50))
    keys = await _scan(redis_client, settings.redis.key_prefix)
    assert keys
    for key in keys:
        assert 0 < await redis_client.ttl(key) <= settings.redis.ttl_seconds
        assert b"{s:k1.sender" in key


async def test_an_entitys_keys_share_one_slot_on_the_node_that_owns_it(
    redis_client: RedisClient, settings: WardenSettings
) -> None:
    """Each event's script touches one slot only, so it runs on one cluster node."""
    await _redis_store(redis_client, settings).apply_and_read(stream(seed=9, n=80))
    located = await _scan(redis_client, settings.redis.key_prefix)
    slots: dict[bytes, set[int]] = defaultdict(set)
    for key, node in located.items():
        tag = key[key.index(b"{") : key.index(b"}") + 1]
        slots[tag].add(key_slot(key))
        if isinstance(redis_client, RedisCluster):
            assert node == redis_client.get_node_from_key(key).name
    assert len(slots) == 8
    assert all(len(entity_slots) == 1 for entity_slots in slots.values())
    if isinstance(redis_client, RedisCluster):
        # The senders spread over the primaries, so the batch above really was split.
        assert len(set(located.values())) > 1


async def test_redis_store_recovers_its_script_after_a_flush(
    redis_client: RedisClient, settings: WardenSettings
) -> None:
    redis_store = _redis_store(redis_client, settings)
    await redis_store.start()
    await redis_client.script_flush()  # on a cluster: every primary
    assert await redis_store.apply_and_read(stream(seed=6, n=3))


async def _snapshot(client: RedisClient, prefix: str) -> dict[bytes, object]:
    state: dict[bytes, object] = {}
    for key in await _scan(client, prefix):
        kind = await client.type(key)
        if kind == b"zset":
            state[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            state[key] = await client.hgetall(key)
        else:
            state[key] = await client.get(key)
    return state


async def test_replay_leaves_every_redis_key_as_if_applied_once(
    redis_client: RedisClient, settings: WardenSettings
) -> None:
    redis_store = _redis_store(redis_client, settings)
    events = stream(seed=8, n=200)
    await redis_store.apply_and_read(events)
    before = await _snapshot(redis_client, settings.redis.key_prefix)
    assert before
    await redis_store.apply_and_read(events[-50:])
    await redis_store.apply_and_read(events[-50:])
    assert await _snapshot(redis_client, settings.redis.key_prefix) == before
