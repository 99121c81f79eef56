"""The Redis client factory: where it goes, with what, and what it refuses (no server is contacted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from warden.features.exceptions import StoreNotConfigured
from warden.features.store.redis_client import async_client, node_urls, server_client, sync_client, where
from warden.streams.settings import RedisSettings

REPO = Path(__file__).resolve().parents[2]

SECRET = "Pa55-word-9c1e"


def test_node_urls_for_a_server_and_for_a_cluster() -> None:
    assert node_urls(RedisSettings(url=SecretStr("redis://10.0.0.5:6380/0"))) == ["redis://10.0.0.5:6380/0"]
    cluster = RedisSettings(
        cluster_nodes="10.0.0.1:7000, redis://10.0.0.2:7001,,", url=SecretStr("redis://x:1")
    )
    assert node_urls(cluster) == ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]  # the nodes win over url
    tls = cluster.model_copy(update={"tls": True})
    assert node_urls(tls) == ["rediss://10.0.0.1:7000", "rediss://10.0.0.2:7001"]
    already = RedisSettings(url=SecretStr("rediss://10.0.0.5:6380/0"), tls=True)
    assert node_urls(already) == ["rediss://10.0.0.5:6380/0"]


def test_nothing_configured_is_a_typed_error() -> None:
    for settings in (RedisSettings(), RedisSettings(cluster_nodes=" , ")):
        with pytest.raises(StoreNotConfigured, match="WARDEN_REDIS__URL"):
            node_urls(settings)
        with pytest.raises(StoreNotConfigured):
            async_client(settings)
    with pytest.raises(StoreNotConfigured):
        server_client(RedisSettings(cluster_nodes="10.0.0.1:7000"))


def test_where_names_hosts_never_credentials() -> None:
    standalone = RedisSettings(url=SecretStr(f"redis://warden:{SECRET}@10.0.0.5:6380/0"))
    assert where(standalone) == "10.0.0.5:6380"
    cluster = RedisSettings(cluster_nodes=f"redis://:{SECRET}@10.0.0.1:7000,10.0.0.2")
    assert where(cluster) == "cluster 10.0.0.1:7000,10.0.0.2:6379"
    assert where(RedisSettings()) == "nowhere (not configured)"


def test_clients_carry_auth_tls_and_timeouts_from_the_settings() -> None:
    settings = RedisSettings(
        url=SecretStr("redis://10.0.0.5:6380/0"),
        username="warden",
        password=SecretStr(SECRET),
        tls=True,
        socket_timeout_s=1.5,
    )
    for client in (async_client(settings), sync_client(settings), server_client(settings)):
        assert isinstance(client, aioredis.Redis | redis.Redis)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["username"] == "warden"
        assert kwargs["password"] == SECRET
        assert kwargs["socket_timeout"] == 1.5
        assert kwargs["socket_connect_timeout"] == 1.5
        assert kwargs["ssl_cert_reqs"] == "required"
        assert "SSL" in client.connection_pool.connection_class.__name__


def test_a_cluster_gets_every_node_as_a_start_up_node() -> None:
    client = async_client(RedisSettings(cluster_nodes="10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002"))
    assert isinstance(client, AsyncRedisCluster)
    names = {node.name for node in client.nodes_manager.startup_nodes.values()}
    assert names == {"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"}


def test_a_cluster_speaks_tls_with_auth_when_told() -> None:
    client = async_client(
        RedisSettings(cluster_nodes="10.0.0.1:7000,10.0.0.2:7001", tls=True, password=SecretStr(SECRET))
    )
    assert isinstance(client, AsyncRedisCluster)
    assert client.connection_kwargs["connection_class"].__name__ == "SSLConnection"
    assert client.connection_kwargs["ssl_cert_reqs"] == "required"
    assert client.connection_kwargs["password"] == SECRET


#: Constructors of a Redis (or Valkey) client in redis-py and valkey-py.
_CONSTRUCTORS = frozenset(
    {"Redis", "StrictRedis", "RedisCluster", "Valkey", "ValkeyCluster", "from_url", "from_pool"}
)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _client_builders(source: str) -> list[str]:
    """The calls in ``source`` that build a redis/valkey client, as written (``redis.Redis``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rpartition(".")[2]
            if last in _CONSTRUCTORS and (
                last != "from_url" or "redis" in name.lower() or "valkey" in name.lower()
            ):
                found.append(name)
    return found


def test_the_builder_check_sees_every_way_of_building_a_client() -> None:
    source = (
        "import redis\nimport redis.asyncio as aioredis\nfrom redis import Redis\n"
        "redis.Redis(host='h')\naioredis.Redis.from_url('u')\nRedis()\n"
        "redis.RedisCluster.from_url('u')\nredis.from_url('u')\nsomething.from_url('u')\n"
    )
    assert _client_builders(source) == [
        "redis.Redis",
        "aioredis.Redis.from_url",
        "Redis",
        "redis.RedisCluster.from_url",
        "redis.from_url",
    ]


def test_every_client_is_built_by_the_factory() -> None:
    factory = REPO / "features" / "store" / "redis_client.py"
    elsewhere = {
        str(path.relative_to(REPO)): builders
        for folder in ("streams", "features", "models", "serving", "infra")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != factory and (builders := _client_builders(path.read_text(encoding="utf-8")))
    }
    assert elsewhere == {}
    assert _client_builders(factory.read_text(encoding="utf-8"))  # the check reads the factory's calls
