"""Security settings for real: Redis AUTH and TLS against a real server; secrets never leak."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from tests.integration.worker_pages import get, labelled, poll, read_outcomes, scrape, send_traffic
from warden.features.privacy.audit_redis import audit_redis
from warden.features.privacy.findings import AuditReport, Scanner
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import async_client, sync_client
from warden.infra.dev import devstack
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.settings import RedisSettings, WardenSettings
from warden.streams.topics import Topics


def _with_redis(settings: WardenSettings, **update: object) -> WardenSettings:
    return settings.model_copy(update={"redis": settings.redis.model_copy(update=update)})


def test_redis_auth_works_and_secrets_never_leak(
    settings: WardenSettings,
    base_env: dict[str, str],
    tmp_path: Path,
    secured_redis: tuple[str, str],
) -> None:
    url, password = secured_redis
    good = _with_redis(settings, url=SecretStr(url), username="warden", password=SecretStr(password))
    assert password not in repr(good)
    assert password not in str(good.redis)
    topics = Topics.from_settings(good.kafka)
    broker.ensure_topics(good.kafka, topics.all())

    log = tmp_path / "worker.log"
    with worker_process(good, base_env, log) as proc:
        wait_healthy(good, proc, timeout_s=90)
        ids = send_traffic(good, topics)
        verdicts, _ = read_outcomes(good, topics)
        assert {v.event_id for v in verdicts} == set(ids)
        pages = b"".join(get(good, path)[1] for path in ("/health", "/metrics", "/dashboard.json"))
    # The aggregates are in the server that needed the password.
    client = redis.Redis.from_url(url, username="warden", password=password)
    assert any(True for _ in client.scan_iter(match=f"{good.redis.key_prefix}:*", count=1000))

    # The same worker with a wrong password: degraded (200) with a reason, and still no secret anywhere.
    wrong_password = "Wrong-" + password
    port = devstack.free_port("127.0.0.1")
    wrong = _with_redis(good, password=SecretStr(wrong_password)).model_copy(
        update={
            "worker": good.worker.model_copy(update={"web_port": port, "app_id": good.worker.app_id + "-w"})
        }
    )
    wrong_log = tmp_path / "wrong-worker.log"
    with worker_process(wrong, base_env, wrong_log) as proc:

        def degraded() -> bool:
            assert proc.poll() is None, "a worker must not die of a wrong Redis password"
            try:
                status, body = get(wrong, "/health")
            except (urllib.error.URLError, OSError):
                return False
            return status == 200 and json.loads(body)["state"] == "degraded"

        poll(degraded, 90)
        _status, body = get(wrong, "/health")
        assert "feature store unavailable" in json.loads(body)["reasons"][0]
        metrics = scrape(wrong)
        assert metrics[("warden_store_degraded", ())] == 1
        assert metrics[("warden_store_errors_total", ())] >= 1
        assert labelled(metrics, "warden_health_state", "state")["degraded"] == 1
        pages += b"".join(get(wrong, path)[1] for path in ("/health", "/metrics", "/dashboard.json"))

    output = log.read_bytes() + wrong_log.read_bytes()
    assert b"redis" in wrong_log.read_bytes().lower()  # it did log the store problem
    for secret in (password, wrong_password):
        assert secret.encode() not in output
        assert secret.encode() not in pages
    # The CLI's settings errors do not echo them either.
    done = subprocess.run(
        [sys.executable, "-m", "warden.infra.cli", "worker"],
        env={**base_env, "WARDEN_REDIS__PASSWORD": password, "WARDEN_WORKER__BATCH_SIZE": "0"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"Traceback" not in done.stderr
    assert password.encode() not in done.stdout + done.stderr


SASL_PASSWORD = "s3cr3t-Pa55word-7f1c"  # a test secret to look for


def test_a_cli_that_cannot_reach_a_secured_broker_does_not_print_its_secrets(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "WARDEN_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "WARDEN_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "WARDEN_KAFKA__SASL_USERNAME": "warden",
        "WARDEN_KAFKA__SASL_PASSWORD": SASL_PASSWORD,
        "WARDEN_KAFKA__REQUEST_TIMEOUT_S": "2",
        "WARDEN_REDIS__URL": f"redis://:{SASL_PASSWORD}@127.0.0.1:1/0",
        "WARDEN_REDIS__PASSWORD": SASL_PASSWORD,
    }
    done = subprocess.run(
        [sys.executable, "-m", "warden.infra.cli", "feedback", "--event-id", "e1", "--label", "abuse"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output
    assert "broker unreachable at 127.0.0.1:1" in output  # one line saying why
    assert SASL_PASSWORD not in output


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=warden-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.cnf",
    )  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@contextlib.contextmanager
def _tls_proxy(target_port: int, cert: Path, key: Path) -> Iterator[int]:
    """A TLS listener on loopback relaying to a plain Redis port (the server's TLS end)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    loop = asyncio.new_event_loop()
    port = devstack.free_port("127.0.0.1")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_server(relay, "127.0.0.1", port, ssl=context, ssl_handshake_timeout=10), loop
    ).result(timeout=10)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.mark.skipif(not Path("/usr/bin/openssl").exists(), reason="no openssl to make test certificates")
async def test_redis_tls_settings_verify_the_server_and_carry_auth(
    secured_redis: tuple[str, str], tmp_path: Path
) -> None:
    url, password = secured_redis
    ca, cert, key = _certificates(tmp_path)
    with _tls_proxy(int(url.rsplit(":", 1)[1].split("/")[0]), cert, key) as port:
        tls_url = f"redis://127.0.0.1:{port}/0"
        trusted = RedisSettings(
            url=SecretStr(tls_url), username="warden", password=SecretStr(password), tls=True, tls_ca_file=ca
        )
        store = RedisStore(
            async_client(trusted.model_copy(update={"socket_timeout_s": 10.0})),
            Keys("tls"),
            3600,
        )
        await store.start()  # loads the script: TLS handshake, AUTH and a command all went through
        assert await store.ping()
        await store.close()

        # Without the CA the server's certificate is refused: TLS is verified, not just spoken.
        untrusted = trusted.model_copy(update={"tls_ca_file": None})
        client = async_client(untrusted)
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            await client.ping()
        await client.aclose()


@pytest.mark.skipif(not Path("/usr/bin/openssl").exists(), reason="no openssl to make test certificates")
def test_the_audit_and_the_review_cli_speak_tls_with_auth(
    settings: WardenSettings, base_env: dict[str, str], secured_redis: tuple[str, str], tmp_path: Path
) -> None:
    url, password = secured_redis
    ca, cert, key = _certificates(tmp_path)
    with _tls_proxy(int(url.rsplit(":", 1)[1].split("/")[0]), cert, key) as port:
        tls_url = f"redis://127.0.0.1:{port}/0"
        trusted = settings.redis.model_copy(
            update={
                "url": SecretStr(tls_url),
                "username": "warden",
                "password": SecretStr(password),
                "tls": True,
                "tls_ca_file": ca,
                "socket_timeout_s": 10.0,
            }
        )
        client = sync_client(trusted)
        client.set(f"{trusted.key_prefix}:{{a:k1.1}}:sender:first", b"bob@example.org", ex=600)
        client.close()
        report = AuditReport()
        audit_redis(trusted, Scanner(()), report)
        assert report.unread == []
        assert report.scanned["redis keys"] == 1
        assert [f.kind for f in report.findings] == ["address"]
        refused = AuditReport()
        audit_redis(trusted.model_copy(update={"tls_ca_file": None}), Scanner(()), refused)
        assert len(refused.unread) == 1
        assert "certificate verify failed" in refused.unread[0]

        env = {
            **base_env,
            "WARDEN_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers or "",
            "WARDEN_REDIS__URL": tls_url,
            "WARDEN_REDIS__KEY_PREFIX": trusted.key_prefix,
            "WARDEN_REDIS__USERNAME": "warden",
            "WARDEN_REDIS__PASSWORD": password,
            "WARDEN_REDIS__TLS": "true",
            "WARDEN_REDIS__TLS_CA_FILE": str(ca),
        }
        review = [sys.executable, "-m", "warden.infra.cli", "review", "--top", "3"]
        shown = subprocess.run(review, env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == "the review queue is empty\n"
        env.pop("WARDEN_REDIS__TLS_CA_FILE")
        untrusted = subprocess.run(review, env=env, capture_output=True, text=True, timeout=120)
    assert untrusted.returncode == 1
    assert untrusted.stderr.count("\n") == 1, untrusted.stderr
    assert "certificate verify failed" in untrusted.stderr
    assert password not in untrusted.stderr
