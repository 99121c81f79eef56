"""One contract over every feature store: in memory, standalone Redis and Redis Cluster agree."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from warden.features.ingest.extraction import to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.aggregations import AGGREGATES, IP, SENDER, SENDER_DOMAIN, URL_DOMAIN
from warden.features.store.keys import Keys
from warden.features.store.operations import report
from warden.features.store.redis import FeatureStore, RedisClient, RedisStore
from warden.features.store.redis_client import async_client
from warden.features.testing import InMemoryStore, features_for
from warden.infra.dev.rediscluster import ClusterState
from warden.streams.records import MailFeatures, SourcePosition
from warden.streams.settings import WardenSettings
from warden.streams.sources.replay import Recorded, stamped


def event(
    i: int, ts: float, sender: str, recipients: list[str], rng: random.Random | None = None
) -> MailFeatures:
    rng = rng or random.Random(i)
    domains = sorted({f"k1.url{rng.randrange(12)}" for _ in range(rng.randrange(0, 3))})
    ip = f"k1.ip{rng.randrange(5)}" if rng.random() < 0.8 else ""
    return features_for(f"e{i}", ts, sender, recipients, offset=i, url_domains=domains, sending_ip=ip)


def stream(seed: int = 3, n: int = 400) -> list[MailFeatures]:
    """Mail among 8 senders and 60 accounts over a few hours; some senders also receive."""
    rng = random.Random(seed)
    ts = 1_030_000_000.0
    out = []
    for i in range(n):
        ts += rng.expovariate(1 / 120)
        sender = f"k1.sender{rng.randrange(8)}"
        recipients = sorted({f"k1.r{rng.randrange(60)}" for _ in range(rng.randrange(1, 5))})
        if rng.random() < 0.2:
            recipients = sorted({*recipients, f"k1.sender{rng.randrange(8)}"})
        out.append(event(i, ts, sender, recipients, rng))
    return out


def shuffled_with_duplicates(events: list[MailFeatures], seed: int) -> list[MailFeatures]:
    """The same events with 20% delivered twice and local reorderings (as Kafka may after a crash)."""
    rng = random.Random(seed)
    out = list(events) + [e for e in events if rng.random() < 0.2]
    out.sort(key=lambda e: e.source.offset + rng.uniform(-15, 15))
    return out


async def redis_state(client: RedisClient, prefix: str) -> dict[str, object]:
    """Every aggregate key under ``prefix`` (memo hashes left out), read as plain values."""
    state: dict[str, object] = {}
    for raw in await _scan(client, prefix):
        key = raw.decode()
        if Keys.is_memo(key) or key.endswith(":served"):  # bookkeeping, and feedback's served rows
            continue
        kind = await client.type(raw)
        if kind == b"hash":
            fields = await client.hgetall(raw)
            if key.endswith(":rep"):
                state[key] = {f.decode(): float(v) for f, v in fields.items()}
            else:
                state[key] = {f.decode(): int(v) for f, v in fields.items()}
        elif kind == b"set":
            state[key] = {m.decode() for m in await client.smembers(raw)}
        elif ":hll:" in key:
            state[key] = ("hll", await client.pfcount(raw))
        else:
            state[key] = (await client.get(raw) or b"").decode()
    return state


async def assert_redis_applied_each_once(settings: WardenSettings, events: Sequence[Recorded]) -> None:
    """The workers' Redis (standalone or cluster) equals applying every event exactly once, offline,
    each at the time its replay stamped it with (streams.sources.replay)."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    reference = InMemoryStore(Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    position = SourcePosition(topic="reference", partition=0, offset=0)
    reference.apply_and_read_now(
        [to_features(e, pseudonymiser, position, 0, event_time=at) for e, at in map(stamped, events)]
    )
    client = async_client(settings.redis)
    try:
        await assert_matches_reference(client, settings.redis.key_prefix, reference)
    finally:
        await client.aclose()


async def assert_matches_reference(client: RedisClient, prefix: str, reference: InMemoryStore) -> None:
    """Redis holds exactly the reference's aggregates: same keys, same values.

    HyperLogLogs are compared by loading the reference's exact sets into
    scratch keys in the same slot and comparing the estimates, which are a
    function of the registers alone.
    """
    got = await redis_state(client, prefix)
    want = reference.state()
    assert set(got) == set(want)
    for key, value in want.items():
        if ":hll:" in key:
            assert isinstance(value, set)
            scratch = f"{key}:scratch"
            await client.delete(scratch)
            if value:
                await client.pfadd(scratch, *value)
            else:
                await client.pfadd(scratch)
            assert got[key] == ("hll", await client.pfcount(scratch)), key
            await client.delete(scratch)
        else:
            assert got[key] == value, key


def _connect(request: pytest.FixtureRequest, settings: WardenSettings) -> RedisClient:
    """A client on the session's standalone Redis, or on its cluster (started on first use)."""
    if request.param == "cluster":
        cluster: ClusterState = request.getfixturevalue("redis_cluster")
        return async_client(cluster.redis_settings())
    return async_client(settings.redis)


def _redis_store(client: RedisClient, settings: WardenSettings) -> RedisStore:
    return RedisStore(
        client, Keys(settings.redis.key_prefix), settings.redis.ttl_seconds, settings.redis.memo_ttl_seconds
    )


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
    # SCAN walks the whole keyspace whatever the pattern (the session's Redis holds every earlier
    # test's keys): large steps, not the default 10 keys a call.
    if not isinstance(client, RedisCluster):
        return {key: "standalone" async for key in client.scan_iter(match=f"{prefix}:*", count=10_000)}
    await client.initialize()
    located: dict[bytes, str] = {}
    for node in client.get_primaries():
        async for key in client.scan_iter(match=f"{prefix}:*", count=10_000, target_nodes=node):
            located[key] = node.name
    return located


def assert_rows_match(got: list[list[float]], reference: list[list[float]]) -> None:
    """The same values, exactly, but for distinct counts (HyperLogLog estimates in Redis)."""
    names = [a.name for a in AGGREGATES]
    assert len(got) == len(reference)
    for row, want in zip(got, reference, strict=True):
        for name, value, expected in zip(names, row, want, strict=True):
            if "distinct" in name:
                # Redis counts distinct values with HyperLogLog: exact enough at these sizes.
                assert abs(value - expected) <= max(1.0, 0.02 * expected), name
            else:
                assert value == expected, name


async def test_every_store_computes_the_reference_aggregates(store: FeatureStore) -> None:
    events = stream()
    reference = InMemoryStore().apply_and_read_now(events)
    got: list[list[float]] = []
    for start in range(0, len(events), 37):
        got.extend(await store.apply_and_read(events[start : start + 37]))
    assert_rows_match(got, reference)


async def test_feedback_reports_build_the_reference_reputation(store: FeatureStore) -> None:
    """Reports count once per report id, decay, and age out alike in every store."""
    assert isinstance(store, InMemoryStore | RedisStore)
    reference = InMemoryStore(store.keys)
    rng = random.Random(11)
    events = stream(seed=11, n=120)
    for start in range(0, len(events), 20):
        batch = events[start : start + 20]
        reports = []
        for _ in range(8):
            e = rng.choice(batch)
            entity, pseudonym = rng.choice(
                [
                    (SENDER, e.sender),
                    (SENDER_DOMAIN, e.sender_domain),
                    (IP, "k1.ip1"),
                    (URL_DOMAIN, "k1.url3"),
                ]
            )
            reports.append(
                report(
                    entity,
                    pseudonym,
                    rng.choice(["abuse", "legit"]),
                    rng.choice([1.0, 0.5, 2.0, 0.25]),  # exact in binary: both sides add them alike
                    e.timestamp - rng.uniform(0, 40 * 86400),  # some older than the reputation window
                    f"f{rng.randrange(40)}",  # repeated ids: applied once
                    store.keys,
                    3600,
                    3600,
                )
            )
        assert await store.apply_calls(reports) == await reference.apply_calls(reports)
        assert_rows_match(await store.apply_and_read(batch), reference.apply_and_read_now(batch))


async def test_members_travel_intact_whatever_they_contain(store: FeatureStore) -> None:
    """Set members have ARGV entries of their own, never parsed out of a call's program."""
    odd = ["k1.a b", 'k1."q"', "k1.ünï", "k1.c,d;e", "k1.[1]\\n"]
    events = [
        features_for(
            f"odd{i}",
            1_030_000_000.0 + 60 * i,
            odd[i % 5],
            sorted({odd[(i + 1) % 5], odd[(i + 3) % 5]}),
            offset=i,
            url_domains=[odd[(i + 2) % 5]],
            sending_ip=odd[(i + 4) % 5],
        )
        for i in range(30)
    ]
    reference = InMemoryStore().apply_and_read_now(events)
    assert_rows_match(await store.apply_and_read(events), reference)


async def test_replaying_recent_events_serves_the_same_values(store: FeatureStore) -> None:
    """A crash replays the uncommitted tail: it must be served exactly what it was served."""
    events = stream(seed=4, n=120)
    first = await store.apply_and_read(events)
    tail = events[-30:]
    assert await store.apply_and_read(tail) == first[-30:]
    assert await store.apply_and_read(events[-1:]) == first[-1:]


async def test_late_events_are_served_in_their_own_time(store: FeatureStore) -> None:
    events = stream(seed=7, n=60)
    await store.apply_and_read(events)
    late = event(999, events[0].timestamp - 30, events[-1].sender, ["k1.late"])
    ((*values,),) = await store.apply_and_read([late])
    named = dict(zip((a.name for a in AGGREGATES), values, strict=True))
    # Far behind the sender's newest event for a one-minute window: not counted there ...
    assert named["sender_events_1m"] == 0.0
    # ... but well inside the day, where it counts with its own time.
    assert named["sender_events_24h"] >= 1.0
    assert named["sender_distinct_recipients_24h"] >= 1.0


async def test_redis_keys_expire_and_hold_pseudonyms_only(
    redis_client: RedisClient, settings: WardenSettings
) -> None:
    await _redis_store(redis_client, settings).apply_and_read(stream(seed=5, n=50))
    keys = await _scan(redis_client, settings.redis.key_prefix)
    assert keys
    longest = max(settings.redis.ttl_seconds, settings.redis.memo_ttl_seconds)
    for key in keys:
        assert 0 < await redis_client.ttl(key) <= longest
        tag = key[key.index(b"{") + 1 : key.index(b"}")]
        assert tag.split(b":", 1)[0] in (b"a", b"d", b"i", b"u")
        assert tag.split(b":", 1)[1].startswith(b"k1.")


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
    assert len(slots) >= 8 + 60 // 2
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


async def test_replay_duplicates_and_reordering_leave_the_reference_state(
    redis_client: RedisClient, settings: WardenSettings
) -> None:
    """Once, again from the start, and shuffled with duplicates: always the reference, exactly."""
    redis_store = _redis_store(redis_client, settings)
    prefix = settings.redis.key_prefix
    events = stream(seed=8, n=250)
    reference = InMemoryStore(Keys(prefix), settings.redis.ttl_seconds)
    reference.apply_and_read_now(events)
    for start in range(0, len(events), 64):
        await redis_store.apply_and_read(events[start : start + 64])
    await assert_matches_reference(redis_client, prefix, reference)
    for start in range(0, len(events), 64):  # a full replay from the first offset
        await redis_store.apply_and_read(events[start : start + 64])
    await assert_matches_reference(redis_client, prefix, reference)
    messy = shuffled_with_duplicates(events, seed=1)
    for start in range(0, len(messy), 50):
        await redis_store.apply_and_read(messy[start : start + 50])
    await assert_matches_reference(redis_client, prefix, reference)


async def test_reordered_delivery_builds_the_same_state_from_scratch(
    redis_client: RedisClient, settings: WardenSettings
) -> None:
    """Aggregates do not depend on arrival order within the window (only served values may)."""
    prefix = settings.redis.key_prefix
    events = stream(seed=10, n=200)
    reference = InMemoryStore(Keys(prefix), settings.redis.ttl_seconds)
    reference.apply_and_read_now(events)
    messy = shuffled_with_duplicates(events, seed=2)
    redis_store = _redis_store(redis_client, settings)
    for start in range(0, len(messy), 40):
        await redis_store.apply_and_read(messy[start : start + 40])
    await assert_matches_reference(redis_client, prefix, reference)
