"""The local Redis Cluster, and what the Redis store needs from a cluster beyond the store contract."""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from tests.integration.test_review_queue import _fill, _unrelated
from tests.integration.test_store import stream
from warden.features.exceptions import StoreUnavailable
from warden.features.store.aggregations import SENDER, Entity
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import async_client
from warden.features.store.scripts import LUA
from warden.infra.dev import devstack
from warden.infra.dev.rediscluster import SLOTS, ClusterState, LocalCluster
from warden.serving.review.queue import ReviewQueue
from warden.streams.settings import DevSettings, RedisSettings, WardenSettings
from warden.streams.sources.campaign import campaign

SCRIPT_SHA = hashlib.sha1(LUA.encode()).hexdigest()


class _UntaggedKeys(Keys):
    """A broken key layout without hash tags: one event's keys land in several slots."""

    def base(self, entity: Entity, pseudonym: str) -> str:
        return f"{self.prefix}:{entity.kind}:{pseudonym}"

    def account(self, pseudonym: str, family: str) -> str:
        return f"{self.prefix}:account:{pseudonym}:{family}"


@pytest.fixture
def keys() -> Keys:
    return Keys(f"c{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def cluster_client(redis_cluster: ClusterState) -> AsyncIterator[RedisCluster]:
    client = async_client(redis_cluster.redis_settings())
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


async def _script_on(client: RedisCluster) -> dict[str, bool]:
    await client.initialize()
    return {
        node.name: (await client.execute_command("SCRIPT EXISTS", SCRIPT_SHA, target_nodes=node)) == [True]
        for node in client.get_primaries()
    }


def test_the_cluster_is_three_masters_sharing_every_slot(redis_cluster: ClusterState) -> None:
    assert len(redis_cluster.urls) == len(set(redis_cluster.urls)) == 3
    assert redis_cluster.binary == devstack.redis_binary()
    for url in redis_cluster.urls:
        with redis.Redis.from_url(url) as client:
            info = client.execute_command("CLUSTER INFO")
            ranges = client.execute_command("CLUSTER SLOTS")
        assert info["cluster_state"] == "ok"
        assert info["cluster_known_nodes"] == "3"
        assert sum(last - first + 1 for first, last, *_ in ranges) == SLOTS
        assert all(len(owners) == 1 for _, _, *owners in ranges)  # no replicas


async def test_the_script_is_loaded_on_every_primary(cluster_client: RedisCluster, keys: Keys) -> None:
    await cluster_client.script_flush()
    await RedisStore(cluster_client, keys, 3600).start()
    assert list((await _script_on(cluster_client)).values()) == [True, True, True]


async def test_a_batch_is_one_pipeline_per_primary(
    cluster_client: RedisCluster, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: Counter[str] = Counter()
    original = ClusterNode.execute_pipeline

    async def counting(node: ClusterNode, commands: list[Any]) -> bool:
        sent[node.name] += 1
        return await original(node, commands)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counting)
    store = RedisStore(cluster_client, keys, 3600)
    await store.start()
    assert len(await store.apply_and_read(stream(seed=11, n=200))) == 200
    assert sorted(sent.values()) == [1, 1, 1]


async def test_the_review_queue_runs_on_a_cluster(
    cluster_client: RedisCluster, keys: Keys, settings: WardenSettings
) -> None:
    # Every review key shares the {rq} tag, so the batch's script and merges go to one primary.
    start = time.time() - 3600
    fraud = campaign(24, start, ["accounts@example.org"], seed=7)
    events = sorted([*fraud, *_unrelated(6, start)], key=lambda e: e.timestamp)
    queue = ReviewQueue(cluster_client, keys.prefix, settings.review)
    candidates = await _fill(settings, cluster_client, [queue], events)
    assert len(candidates) == len(events)
    fraud_ids = {e.event_id for e in fraud}
    groups = Counter(c.group for c in candidates if c.event_id in fraud_ids)
    largest, size = groups.most_common(1)[0]
    assert size >= 22
    (top,) = [g for g in await queue.top(50) if g.group == largest]
    assert top.size == size
    assert sum(top.actions.values()) == size
    assert all(c.event_id in fraud_ids for c in top.examples)


async def test_a_primary_that_lost_the_script_gets_it_back(cluster_client: RedisCluster, keys: Keys) -> None:
    store = RedisStore(cluster_client, keys, 3600)
    events = stream(seed=12, n=120)
    first = await store.apply_and_read(events)
    victim = cluster_client.get_node_from_key(keys.window(SENDER, events[-1].sender, 3600))
    await cluster_client.execute_command("SCRIPT FLUSH", target_nodes=victim)
    assert (await _script_on(cluster_client))[victim.name] is False
    # The other primaries apply their part again: the once-only script serves the same values.
    assert await store.apply_and_read(events[-30:]) == first[-30:]
    assert all((await _script_on(cluster_client)).values())


async def test_keys_of_one_event_in_several_slots_are_a_bug_not_an_outage(
    cluster_client: RedisCluster,
) -> None:
    store = RedisStore(cluster_client, _UntaggedKeys(f"c{uuid.uuid4().hex[:10]}"), 3600)
    await store.start()
    with pytest.raises(RedisClusterException, match="same key slot"):
        await store.apply_and_read(stream(seed=13, n=3))


async def test_an_unreachable_cluster_is_store_unavailable() -> None:
    client = async_client(RedisSettings(cluster_nodes=f"127.0.0.1:{devstack.free_port('127.0.0.1')}"))
    store = RedisStore(client, Keys("unreachable"), 3600)
    with pytest.raises(StoreUnavailable):
        await store.start()
    with pytest.raises(StoreUnavailable):
        await store.apply_and_read(stream(seed=14, n=3))
    assert await store.ping() is False
    await store.close()


@pytest.mark.slow
async def test_losing_a_primary_is_store_unavailable_and_stop_leaves_no_node(tmp_path: Path) -> None:
    cluster = LocalCluster(DevSettings(state_dir=tmp_path))
    state = cluster.start()
    try:
        store = RedisStore(async_client(state.redis_settings()), Keys("chaos"), 3600)
        events = stream(seed=15, n=100)
        await store.apply_and_read(events)
        assert await store.ping() is True
        os.kill(state.pids[1], signal.SIGKILL)
        with pytest.raises(StoreUnavailable):
            await store.apply_and_read(events)
        assert await store.ping() is False
        await store.close()
    finally:
        cluster.stop()
    for pid in state.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
