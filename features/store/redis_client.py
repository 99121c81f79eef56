"""Every Redis client Warden makes, built one way from :class:`~streams.settings.RedisSettings`.

The worker's store, the review CLI, the privacy audit, the demo, the benches,
the dev stack's health checks and the Rspamd peer's private server all take
their client from here (tests/unit/test_redis_client.py fails on a client
built anywhere else), so each
one speaks to the configured server the same way: a standalone server
(``url``) or a cluster (``cluster_nodes``, all used as start-up nodes), with
the configured AUTH user and password, TLS (``tls`` or a ``rediss://`` URL,
with the CA, certificate and key files) and socket timeout. Two flavours:
:func:`async_client` for the event loop (worker, review queue, benches) and
:func:`sync_client` for batch tools (the privacy audit), and
:func:`server_client` for one server as it is (health checks, cluster set-up).
An asyncio client connects on its first command; a blocking cluster client
reads the cluster's slot map as it is built, so building one can raise
:data:`CLIENT_ERRORS` too.
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode
from redis.exceptions import RedisClusterException, RedisError

from warden.features.exceptions import StoreNotConfigured
from warden.streams.security import redis_options
from warden.streams.settings import RedisSettings

#: A client for the event loop: standalone or cluster (what :class:`features.store.redis.RedisStore` takes).
AsyncClient: TypeAlias = aioredis.Redis | AsyncRedisCluster
#: A blocking client: standalone or cluster.
SyncClient: TypeAlias = redis.Redis | redis.RedisCluster

#: What a command on a client from here raises when the server cannot be reached, refuses the
#: credentials or TLS, or the cluster is down (a cluster client that reaches no start-up node
#: raises a bare RedisClusterException, which is not a RedisError).
CLIENT_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


def node_urls(settings: RedisSettings) -> list[str]:
    """The URLs the client starts from: the cluster's nodes, else the one standalone URL.

    A cluster node may be written ``host:port`` or as a URL; ``tls`` turns
    ``redis://`` into ``rediss://``. Raises :class:`StoreNotConfigured` when
    neither is set.
    """
    if settings.cluster_nodes:
        urls = [node.strip() for node in settings.cluster_nodes.split(",") if node.strip()]
        urls = [url if "://" in url else f"redis://{url}" for url in urls]
    elif settings.url is not None:
        urls = [settings.url.get_secret_value()]
    else:
        urls = []
    if not urls:
        raise StoreNotConfigured("no Redis configured: set WARDEN_REDIS__URL or WARDEN_REDIS__CLUSTER_NODES")
    return [_tls(url) if settings.tls else url for url in urls]


def _tls(url: str) -> str:
    return "rediss://" + url.removeprefix("redis://") if url.startswith("redis://") else url


def where(settings: RedisSettings) -> str:
    """Where the client goes, for messages: host:port of each node, never a credential."""
    try:
        urls = node_urls(settings)
    except StoreNotConfigured:
        return "nowhere (not configured)"
    places = ",".join(f"{part.hostname}:{part.port or 6379}" for part in map(urlsplit, urls))
    return f"cluster {places}" if settings.cluster_nodes else places


def _options(settings: RedisSettings) -> dict[str, Any]:
    # Credentials and TLS files from the settings override any written in the URL.
    return {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        **redis_options(settings),
    }


def async_client(settings: RedisSettings) -> AsyncClient:
    """A client for the event loop, owned (and closed with ``aclose``) by the caller that built it."""
    urls = node_urls(settings)
    if not settings.cluster_nodes:
        return aioredis.Redis.from_url(urls[0], **_options(settings))
    others = [urlsplit(url) for url in urls[1:]]
    return AsyncRedisCluster.from_url(
        urls[0],
        startup_nodes=[AsyncClusterNode(part.hostname or "localhost", part.port or 6379) for part in others],
        **_options(settings),
    )


def sync_client(settings: RedisSettings) -> SyncClient:
    """A blocking client, owned (and closed with ``close``) by the caller that built it.

    For a cluster this asks a start-up node for the slot map, and raises
    :data:`CLIENT_ERRORS` when none answers.
    """
    urls = node_urls(settings)
    if not settings.cluster_nodes:
        return server_client(settings)
    others = [urlsplit(url) for url in urls[1:]]
    return redis.RedisCluster.from_url(
        urls[0],
        startup_nodes=[
            ClusterNode(part.hostname or "localhost", part.port or 6379)  # type: ignore[no-untyped-call]
            for part in others
        ],
        **_options(settings),
    )


def server_client(settings: RedisSettings) -> redis.Redis:
    """A blocking client for the one server ``url`` names, never routed as a cluster member.

    For what talks to one server as it is: health checks, the set-up of a
    cluster's nodes, a server's ``INFO``. Raises :class:`StoreNotConfigured`
    when no URL is set.
    """
    if settings.url is None:
        raise StoreNotConfigured("no Redis server URL configured (WARDEN_REDIS__URL)")
    url = settings.url.get_secret_value()
    return redis.Redis.from_url(_tls(url) if settings.tls else url, **_options(settings))


def at(url: str, *, socket_timeout_s: float = 5.0) -> RedisSettings:
    """Settings for a server Warden started itself (dev stack, cluster nodes): no AUTH, no TLS."""
    return RedisSettings(url=SecretStr(url), socket_timeout_s=socket_timeout_s)
