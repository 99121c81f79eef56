"""The privacy audit's Redis part: every key under the prefix, each value read by its type.

A standalone server is scanned once; a cluster is scanned on every primary
(``SCAN`` only walks the node it is sent to), after checking that those
primaries serve all 16384 slots. Each value is read with the command of its
type, never ``DUMP``, whose payload is compressed (LZF) and can hide text
from the scanner: ``GET`` for strings (HyperLogLogs included), ``HGETALL``,
``SMEMBERS``, ``ZRANGE … WITHSCORES``, ``LRANGE`` and ``XRANGE``. A key of
any other type, a reply that is an error, or a server that cannot be reached
is reported as not read, so the audit cannot pass over it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import redis
from redis.cluster import ClusterNode

from warden.features.privacy.findings import AuditReport, Family, Finding, Scanner, family_of, mask
from warden.features.store.redis_client import CLIENT_ERRORS, SyncClient, sync_client, where
from warden.streams.settings import RedisSettings

#: Keys read per pipelined round trip.
BATCH = 500
#: Hash slots in every Redis Cluster.
SLOTS = 16384
#: What ends the Redis part of the audit early: the server, AUTH or TLS failing, or a cluster whose
#: primaries do not serve every slot (ValueError).
_STOPS: tuple[type[Exception], ...] = (*CLIENT_ERRORS, ValueError)


def _pairs(pairs: Iterator[tuple[bytes, bytes]]) -> bytes:
    return b" ".join(field + b"=" + value for field, value in pairs)


def _zset(members: Sequence[tuple[bytes, float]]) -> bytes:
    return b" ".join(member + b"=" + repr(score).encode() for member, score in members)


def _stream(entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> bytes:
    return b" ".join(entry + b" " + _pairs(iter(fields.items())) for entry, fields in entries)


#: For each type: how to queue the read on a pipeline, and how to turn the reply into text.
_READERS: dict[bytes, tuple[Callable[[Any, bytes], Any], Callable[[Any], bytes]]] = {
    b"string": (lambda pipe, key: pipe.get(key), lambda value: value or b""),
    b"hash": (lambda pipe, key: pipe.hgetall(key), lambda value: _pairs(iter(value.items()))),
    b"set": (lambda pipe, key: pipe.smembers(key), lambda value: b" ".join(sorted(value))),
    b"zset": (lambda pipe, key: pipe.zrange(key, 0, -1, withscores=True), _zset),
    b"list": (lambda pipe, key: pipe.lrange(key, 0, -1), lambda value: b" ".join(value)),
    b"stream": (lambda pipe, key: pipe.xrange(key, "-", "+"), _stream),
}


def _read(node: redis.Redis, keys: Sequence[bytes]) -> list[tuple[int, bytes | str]]:
    """TTL and the value's text (or why it could not be read) of each key, in two round trips.

    A TTL of -2 means the key expired between the scan and the read.
    """
    pipe = node.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.ttl(key)
    answers = pipe.execute(raise_on_error=False)
    kinds, ttls = answers[0::2], answers[1::2]
    pipe = node.pipeline(transaction=False)
    queued: list[Callable[[Any], bytes] | str] = []
    for key, kind in zip(keys, kinds, strict=True):
        if isinstance(kind, Exception):
            queued.append(f"TYPE failed: {kind}")
        elif kind == b"none":
            queued.append("")
        elif kind in _READERS:
            queue, render = _READERS[kind]
            queue(pipe, key)
            queued.append(render)
        else:
            queued.append(f"a value of type {kind.decode('utf-8', 'replace')} cannot be read as text")
    replies = iter(pipe.execute(raise_on_error=False))
    out: list[tuple[int, bytes | str]] = []
    for ttl, step in zip(ttls, queued, strict=True):
        ttl_s = -2 if isinstance(ttl, Exception) or step == "" else int(ttl)
        if isinstance(step, str):
            out.append((ttl_s, step))
            continue
        reply = next(replies)
        out.append((ttl_s, f"read failed: {reply}" if isinstance(reply, Exception) else step(reply)))
    return out


def _audit_node(node: redis.Redis, prefix: str, scanner: Scanner, report: AuditReport) -> int:
    """Every key under ``prefix`` on one server: families, TTLs, names and values scanned.

    Returns how many keys were read.
    """
    read = 0
    batch: list[bytes] = []

    def flush() -> None:
        nonlocal read
        for key, (ttl, value) in zip(batch, _read(node, batch), strict=True):
            if ttl == -2:
                report.expired += 1  # gone before it could be read: it holds nothing any more
                continue
            name = key.decode("utf-8", "replace")
            family = family_of(name, prefix)
            report.families.setdefault(family, Family()).add(ttl)
            if isinstance(value, str):
                report.unread.append(f"redis {family}: key {mask(key)}: {value}")
                continue
            read += 1
            if ttl == -1:
                report.findings.append(Finding(f"redis {family}", "no-ttl", mask(key)))
            report.findings.extend(scanner.scan(f"redis {family}", key + b" " + value))
        batch.clear()

    for key in node.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= BATCH:
            flush()
    flush()
    return read


def _primaries(client: redis.RedisCluster) -> list[ClusterNode]:
    """The cluster's primaries; raises ValueError unless together they serve every slot."""
    primaries: list[ClusterNode] = client.get_primaries()  # type: ignore[no-untyped-call]
    if not primaries:
        raise ValueError("the cluster reports no primary")
    # redis-py parses CLUSTER SLOTS into {(first, last): {"primary": (host, port), ...}}.
    slot_map: Any = client.cluster_slots(target_nodes=primaries[0])  # type: ignore[type-var]
    known = {(node.host, node.port) for node in primaries}
    served = 0
    if isinstance(slot_map, Mapping):
        for (first, last), owners in slot_map.items():
            if tuple(owners["primary"]) in known:
                served += int(last) - int(first) + 1
    if served != SLOTS:
        raise ValueError(f"the primaries found serve {served:,} of {SLOTS:,} slots")
    return primaries


def audit_redis(settings: RedisSettings, scanner: Scanner, report: AuditReport) -> None:
    """Every key under the prefix on the configured server, or on every primary of the configured cluster.

    Anything that stops a full read (no connection, AUTH or TLS refused,
    slots not covered) is recorded in ``report.unread``: the audit fails.
    """
    place = where(settings)
    prefix = settings.key_prefix
    client: SyncClient | None = None
    total = 0
    try:
        client = sync_client(settings)  # a cluster client reads the slot map here
        if isinstance(client, redis.RedisCluster):
            for node in _primaries(client):
                read = _audit_node(client.get_redis_connection(node), prefix, scanner, report)
                report.scanned[f"redis keys on primary {node.name}"] = read
                total += read
        else:
            total = _audit_node(client, prefix, scanner, report)
    except _STOPS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        report.unread.append(f"redis {place}: {reason}")
    finally:
        if client is not None:
            client.close()
    report.scanned["redis keys"] = total
    report.scope.append(f"redis: every key under '{prefix}:*' on {place}")
