"""The privacy audit reads everything it is pointed at: every Redis type, every primary, every topic record.

On the session's standalone Redis and on the three-master cluster fixture:
values of every type are read as the type (a raw address hidden in a
compressible value, where ``DUMP`` would show it only LZF-compressed, is
found), a key without TTL fails, a cluster configured only by its nodes is
audited through the CLI, an unreachable server fails the audit instead of
being skipped, and a sampled topic read says it was a sample.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from warden.features.privacy.audit import audit, derived_topics
from warden.features.privacy.audit_redis import audit_redis
from warden.features.privacy.findings import AuditReport, Scanner
from warden.features.store.redis_client import SyncClient, sync_client
from warden.infra.cli.main import main
from warden.infra.dev import devstack
from warden.infra.dev.rediscluster import ClusterState
from warden.streams import broker
from warden.streams.exceptions import ExitCode
from warden.streams.settings import RedisSettings, WardenSettings
from warden.streams.topics import Topics

RAW = b"alice@example.com"
#: 437 bytes that LZF compresses to ~40: in a DUMP payload the address is no longer contiguous.
COMPRESSIBLE = b"alice example " * 30 + RAW
ENTITIES = 24


def _redis_settings(request: pytest.FixtureRequest, settings: WardenSettings) -> RedisSettings:
    prefix = f"pa{uuid.uuid4().hex[:10]}"
    if request.param == "cluster":
        cluster: ClusterState = request.getfixturevalue("redis_cluster")
        return cluster.redis_settings().model_copy(update={"key_prefix": prefix})
    return settings.redis.model_copy(update={"key_prefix": prefix})


@pytest.fixture(params=["standalone", "cluster"])
def server(request: pytest.FixtureRequest, settings: WardenSettings) -> Iterator[RedisSettings]:
    """Redis settings with a fresh prefix, on the session's server or on the cluster; keys removed after."""
    redis_settings = _redis_settings(request, settings)
    yield redis_settings
    client = sync_client(redis_settings)
    try:
        for key in list(client.scan_iter(match=f"{redis_settings.key_prefix}:*", count=1000)):
            client.delete(key)
    finally:
        client.close()


def _plant_every_type(client: SyncClient, prefix: str, tag: str, text: bytes, ttl: int = 600) -> list[str]:
    """One key of each type Redis has, all holding ``text``, under one hash tag; returns the keys."""
    keys = {kind: f"{prefix}:{{t:{tag}}}:{kind}" for kind in ("str", "hash", "set", "zset", "list", "stream")}
    client.set(keys["str"], text)
    client.hset(keys["hash"], mapping={b"note": text, b"n": b"1"})
    client.sadd(keys["set"], text, b"k1.other")
    client.zadd(keys["zset"], {text: 2.5, b"k1.other": 1.0})
    client.rpush(keys["list"], b"k1.first", text)
    client.xadd(keys["stream"], {b"note": text})
    for key in keys.values():
        client.expire(key, ttl)
    return list(keys.values())


def _audit(redis_settings: RedisSettings) -> AuditReport:
    report = AuditReport()
    audit_redis(redis_settings, Scanner(()), report)
    return report


def test_every_value_is_read_by_type_on_every_primary(server: RedisSettings) -> None:
    prefix = server.key_prefix
    client = sync_client(server)
    try:
        clean = [
            key
            for index in range(ENTITIES)
            for key in _plant_every_type(client, prefix, f"k1.{index:04x}", b"k1.9f2c0a 17 0.25")
        ]
        client.pfadd(f"{prefix}:{{u:k1.77ab}}:url_domain:hll:senders:1", *[f"k1.{i}" for i in range(50)])
        client.expire(f"{prefix}:{{u:k1.77ab}}:url_domain:hll:senders:1", 600)
        report = _audit(server)
        out = io.StringIO()
        report.write(out)
        assert report.passed, out.getvalue()
        assert "privacy audit PASSED" in out.getvalue()
        assert report.scanned["redis keys"] == len(clean) + 1
        if server.cluster_nodes:
            per_primary = {k: v for k, v in report.scanned.items() if k.startswith("redis keys on primary")}
            assert len(per_primary) == 3
            assert all(count > 0 for count in per_primary.values())  # the keys spread over every primary
            assert sum(per_primary.values()) == len(clean) + 1

        # A raw address in a compressible value of every type, and a clean key without a TTL.
        planted = _plant_every_type(client, prefix, "k1.dirty", COMPRESSIBLE)
        for key in (planted[0], planted[1]):
            dump = client.dump(key)
            assert isinstance(dump, bytes)
            assert RAW not in dump  # what a DUMP-based audit would have scanned
        client.set(f"{prefix}:{{t:k1.forever}}:str", b"k1.9f2c0a")
        report = _audit(server)
    finally:
        client.close()
    found = {(f.kind, f.where) for f in report.findings}
    for kind in ("str", "hash", "set", "zset", "list", "stream"):
        assert ("address", f"redis {{t:*}}:{kind}") in found, kind
    assert ("no-ttl", "redis {t:*}:str") in found
    assert len(report.findings) == 7
    out = io.StringIO()
    report.write(out)
    assert "privacy audit FAILED with 7 finding(s)" in out.getvalue()
    assert RAW.decode() not in out.getvalue()


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_a_redis_that_cannot_be_reached_fails_the_audit(kind: str) -> None:
    port = devstack.free_port("127.0.0.1")
    redis_settings = (
        RedisSettings(url=SecretStr(f"redis://127.0.0.1:{port}/0"), socket_timeout_s=2.0)
        if kind == "standalone"
        else RedisSettings(cluster_nodes=f"127.0.0.1:{port}", socket_timeout_s=2.0)
    )
    report = _audit(redis_settings)
    assert len(report.unread) == 1
    assert report.unread[0].startswith(f"redis {'cluster ' if kind == 'cluster' else ''}127.0.0.1:{port}: ")
    assert not report.passed
    assert report.verdict() == "FAILED with 1 place(s) not read"


def test_the_cli_audits_a_cluster_given_only_by_its_nodes(
    settings: WardenSettings,
    redis_cluster: ClusterState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"pa{uuid.uuid4().hex[:10]}"
    cluster = redis_cluster.redis_settings().model_copy(update={"key_prefix": prefix})
    broker.ensure_topics(settings.kafka, Topics.from_settings(settings.kafka).all())
    client = sync_client(cluster)
    keys = _plant_every_type(client, prefix, "k1.dirty", COMPRESSIBLE)
    log = tmp_path / "worker.log"
    log.write_text("scored 3 events in 2 ms\n")
    for name in [n for n in os.environ if n.startswith("WARDEN_")]:
        monkeypatch.delenv(name)
    for name, value in {
        "WARDEN_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers or "",
        "WARDEN_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "WARDEN_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "WARDEN_REDIS__CLUSTER_NODES": cluster.cluster_nodes or "",
        "WARDEN_REDIS__KEY_PREFIX": prefix,
        "WARDEN_MODELS__REGISTRY_DIR": str(settings.models.registry_dir),
        "WARDEN_CORPUS__CACHE_DIR": str(settings.corpus.cache_dir),
    }.items():
        monkeypatch.setenv(name, value)
    try:
        capsys.readouterr()
        assert main(["privacy", "audit", "--log", str(log)]) == ExitCode.FAILURE
        captured = capsys.readouterr()
    finally:
        client.delete(*keys)
        client.close()
    assert (
        sum(line.startswith("read in full: redis keys on primary") for line in captured.out.splitlines()) == 3
    )
    assert captured.out.count("FINDING address") == 6
    assert RAW.decode() not in captured.out + captured.err
    assert captured.err.startswith("warden: error: privacy audit FAILED with 6 finding(s)")
    assert captured.err.count("\n") == 1


def test_every_topic_record_is_read_unless_a_sample_is_asked_for(settings: WardenSettings) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    producer = broker.producer(settings.kafka)
    records = 2_500
    for index in range(records):
        body = {"event_id": f"e-{index}", "sender": "k1.9f2c0a", "score": 0.25}
        if index == records - 1:
            body["reporter"] = RAW.decode()  # the last record only: a sample of the first ones misses it
        producer.send(topics.verdicts.name, value=json.dumps(body).encode(), partition=0)
    producer.flush()
    producer.close()
    derived = {f"topic {t.name}" for t in derived_topics(topics)}

    full = audit(settings, [], sample=None)
    assert [(f.kind, f.where) for f in full.findings] == [("address", f"topic {topics.verdicts.name}")]
    assert full.scanned[f"topic {topics.verdicts.name}"] == records
    assert derived <= set(full.scanned)  # every derived topic read to its end (most are empty)
    assert not full.sampled
    assert not full.unread

    sampled = audit(settings, [], sample=100)
    assert sampled.findings == []
    assert sampled.clean
    assert not sampled.passed
    assert sampled.sampled == {f"topic {topics.verdicts.name}": (100, records)}
    out = io.StringIO()
    sampled.write(out)
    verdict = out.getvalue().splitlines()[-1]
    assert "PASSED" not in verdict
    assert f"topic {topics.verdicts.name} 100 of 2,500 records" in verdict
    assert f"SAMPLED: topic {topics.verdicts.name}: the first 100 of 2,500 records" in out.getvalue()


def test_the_audit_uses_the_configured_auth(settings: WardenSettings, secured_redis: tuple[str, str]) -> None:
    url, password = secured_redis
    secured = settings.redis.model_copy(
        update={"url": SecretStr(url), "username": "warden", "password": SecretStr(password)}
    )
    client = sync_client(secured)
    client.set(f"{secured.key_prefix}:{{a:k1.1}}:sender:first", COMPRESSIBLE, ex=600)
    client.close()
    report = _audit(secured)
    assert [(f.kind, f.where) for f in report.findings] == [("address", "redis {a:*}:sender:first")]
    assert report.unread == []

    wrong = _audit(secured.model_copy(update={"password": SecretStr("Wrong-" + password)}))
    assert wrong.findings == []
    assert len(wrong.unread) == 1
    assert "invalid username-password pair" in wrong.unread[0]
    assert password not in wrong.unread[0]
    assert wrong.verdict() == "FAILED with 1 place(s) not read"
