"""Metrics, health and the live dashboard of a real worker under real traffic; Redis AUTH for real.

The dashboard test drives Debian's chromium through Playwright (never a
downloaded browser build); `make test` installs the package when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from infra import devstack
from infra.metrics import bucket_quantile
from infra.settings import WardenSettings
from infra.worker_process import child_process, wait_healthy, worker_process
from streams import broker, corpus
from streams.records import DeadLetter, Verdict, decode
from streams.replay import replay
from streams.topics import Topics

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "infra" / "docs" / "dashboard.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BAD = [b"{not json", b"\xc3\x28 invalid utf-8", b'"a string"']
N = 160

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(settings: WardenSettings, path: str) -> tuple[int, bytes]:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _scrape(settings: WardenSettings) -> Samples:
    status, body = _get(settings, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def _total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def _labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def _poll(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _send_traffic(settings: WardenSettings, topics: Topics) -> list[str]:
    mails = corpus.load(settings.corpus, corpus.NEWER)[:N]
    producer = broker.producer(settings.kafka)
    replay([m.event for m in mails[: N // 2]], producer, topics.mail_events)
    for raw in BAD:
        producer.send(topics.mail_events.name, value=raw)
    replay([m.event for m in mails[N // 2 :]], producer, topics.mail_events)
    producer.close()
    return [m.event.event_id for m in mails]


def _read_outcomes(settings: WardenSettings, topics: Topics) -> tuple[list[Verdict], list[DeadLetter]]:
    verdicts: list[Verdict] = []
    letters: list[DeadLetter] = []
    reader = broker.TopicReader(settings.kafka, (topics.verdicts, topics.dead_letters))
    for message in reader.until(lambda: len(verdicts) >= N and len(letters) >= len(BAD), timeout_s=120):
        assert message.value is not None
        if message.topic == topics.verdicts.name:
            verdicts.append(decode(Verdict, message.value))
        else:
            letters.append(decode(DeadLetter, message.value))
    reader.close()
    return verdicts, letters


@contextlib.contextmanager
def _browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _ms(samples: Samples, q: float) -> str:
    buckets = sorted(
        (math.inf if le == "+Inf" else float(le), v)
        for le, v in _labelled(samples, "warden_end_to_end_seconds_bucket", "le").items()
    )
    return f"{bucket_quantile(buckets, q) * 1000:.1f}"


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (make test installs Debian's chromium with apt-get)"
)
def test_metrics_health_and_the_live_dashboard_follow_real_traffic(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    base = f"http://{settings.worker.web_host}:{settings.worker.web_port}"
    with worker_process(settings, base_env, tmp_path / "worker.log") as proc, _browser() as browser:
        wait_healthy(settings, proc, timeout_s=90)
        status, body = _get(settings, "/health")
        health = json.loads(body)
        assert (status, health["state"], health["reasons"]) == (200, "ready", [])
        before = _scrape(settings)
        assert _total(before, "warden_verdicts_total") == 0
        assert _labelled(before, "warden_health_state", "state")["ready"] == 1

        page = browser.new_page(viewport={"width": 1200, "height": 640})  # type: ignore[attr-defined]
        page.goto(f"{base}/dashboard")
        page.wait_for_function("document.getElementById('state').textContent === 'ready'", timeout=15_000)
        assert page.text_content("#verdicts-total") == "0"

        ids = _send_traffic(settings, topics)
        verdicts, letters = _read_outcomes(settings, topics)
        assert {v.event_id for v in verdicts} == set(ids)
        assert len(letters) == len(BAD)

        # The page updates by itself: no reload between the empty and the full figures.
        page.wait_for_function(
            f"document.getElementById('verdicts-total').textContent === '{N}'"
            f" && document.getElementById('dead-letters').textContent === '{len(BAD)}'",
            timeout=30_000,
        )
        shown = {
            key: page.text_content(f"#{key}")
            for key in (
                "model-version",
                "throughput",
                "p50",
                "p95",
                "p99",
                "events-in",
                "dead-letters",
                "dead-letter-rate",
                "verdicts-allow",
                "verdicts-junk",
                "verdicts-block",
                "state",
            )
        }
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        after = _scrape(settings)

        # Every figure on the page, recomputed from one scrape of /metrics.
        actions = _labelled(after, "warden_verdicts_total", "action")
        events_in = _total(after, "warden_events_in_total")
        dead = _total(after, "warden_dead_letters_total")
        champion = [
            dict(labels)["version"]
            for (name, labels), _ in after.items()
            if name == "warden_model_info" and dict(labels)["role"] == "champion"
        ]
        assert shown["model-version"] == champion[0] == verdicts[0].model_version
        assert shown["events-in"] == f"{events_in:.0f}" == str(N + len(BAD))
        assert shown["dead-letters"] == f"{dead:.0f}"
        assert shown["dead-letter-rate"] == f"{100 * dead / events_in:.2f}"
        for action in ("allow", "junk", "block"):
            assert shown[f"verdicts-{action}"] == f"{actions[action]:.0f}"
            assert actions[action] == sum(v.action == action for v in verdicts)
        for q in (50, 95, 99):
            assert shown[f"p{q}"] == _ms(after, q / 100)
        assert float(shown["throughput"] or 0) > 0
        assert shown["state"] == "ready"

        # Everything was processed, so the sampled lag of the input partitions comes down to 0.
        def caught_up() -> bool:
            lag = _scrape(settings)
            input_lag = [
                v
                for (name, labels), v in lag.items()
                if name == "warden_consumer_lag" and dict(labels)["topic"] == topics.mail_events.name
            ]
            return len(input_lag) == topics.mail_events.partitions and sum(input_lag) == 0

        _poll(caught_up, 30)

    # Values moved with the traffic, consistently with what reached the topics.
    assert _labelled(after, "warden_events_in_total", "kind") == {"mail": N + len(BAD)}
    assert _labelled(after, "warden_events_out_total", "kind") == {"mail": N}
    reasons = _labelled(after, "warden_dead_letters_total", "reason")
    assert (reasons["not_json"], reasons["not_utf8"], reasons["not_object"]) == (1, 1, 1)
    assert after[("warden_end_to_end_seconds_count", ())] == N
    assert after[("warden_batch_size_sum", ())] == N
    batches = after[("warden_score_batches_total", ())]
    assert after[("warden_batch_size_count", ())] == batches > 0
    for stage, count in _labelled(after, "warden_stage_seconds_count", "stage").items():
        assert count > 0, stage
    assert set(_labelled(after, "warden_stage_seconds_count", "stage")) == {
        "decode",
        "features",
        "store",
        "score",
        "produce",
    }
    lag_topics = {dict(labels)["topic"] for (name, labels) in after if name == "warden_consumer_lag"}
    assert topics.mail_events.name in lag_topics
    assert after[("warden_store_errors_total", ())] == 0
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A Redis (or Valkey) server that needs AUTH: an ACL user ``warden`` and a default password."""
    password = "AuthTest-" + os.urandom(6).hex()
    port = devstack.free_port("127.0.0.1")
    argv = [
        devstack.redis_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
        "--requirepass",
        "default-" + password,
        "--user",
        "warden",
        "on",
        f">{password}",
        "~*",
        "&*",
        "+@all",
    ]
    with child_process(argv, None, tmp_path / "secured-redis.log") as proc:
        url = f"redis://127.0.0.1:{port}/0"

        def up() -> bool:
            assert proc.poll() is None, "the secured redis exited"
            try:
                return bool(redis.Redis.from_url(url, username="warden", password=password).ping())
            except redis.ConnectionError:
                return False

        _poll(up, 20)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url).ping()  # no password: refused
        yield url, password


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
        ids = _send_traffic(good, topics)
        verdicts, _ = _read_outcomes(good, topics)
        assert {v.event_id for v in verdicts} == set(ids)
        pages = b"".join(_get(good, path)[1] for path in ("/health", "/metrics", "/dashboard.json"))
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
                status, body = _get(wrong, "/health")
            except (urllib.error.URLError, OSError):
                return False
            return status == 200 and json.loads(body)["state"] == "degraded"

        _poll(degraded, 90)
        _status, body = _get(wrong, "/health")
        assert "feature store unavailable" in json.loads(body)["reasons"][0]
        metrics = _scrape(wrong)
        assert metrics[("warden_store_degraded", ())] == 1
        assert metrics[("warden_store_errors_total", ())] >= 1
        assert _labelled(metrics, "warden_health_state", "state")["degraded"] == 1
        pages += b"".join(_get(wrong, path)[1] for path in ("/health", "/metrics", "/dashboard.json"))

    output = log.read_bytes() + wrong_log.read_bytes()
    assert b"redis" in wrong_log.read_bytes().lower()  # it did log the store problem
    for secret in (password, wrong_password):
        assert secret.encode() not in output
        assert secret.encode() not in pages
    # The CLI's settings errors do not echo them either.
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "worker"],
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
        [sys.executable, "-m", "infra.cli", "feedback", "--event-id", "e1", "--label", "abuse"],
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
    import asyncio
    import ssl
    import threading

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
    from features.keys import Keys
    from features.store import RedisStore, connect
    from infra.security import redis_options
    from infra.settings import RedisSettings

    url, password = secured_redis
    ca, cert, key = _certificates(tmp_path)
    with _tls_proxy(int(url.rsplit(":", 1)[1].split("/")[0]), cert, key) as port:
        tls_url = f"redis://127.0.0.1:{port}/0"
        trusted = RedisSettings(
            url=SecretStr(tls_url), username="warden", password=SecretStr(password), tls=True, tls_ca_file=ca
        )
        store = RedisStore(
            connect(tls_url, cluster=False, tls=True, options=redis_options(trusted), socket_timeout_s=10),
            Keys("tls"),
            3600,
        )
        await store.start()  # loads the script: TLS handshake, AUTH and a command all went through
        assert await store.ping()
        await store.close()

        # Without the CA the server's certificate is refused: TLS is verified, not just spoken.
        untrusted = trusted.model_copy(update={"tls_ca_file": None})
        client = connect(tls_url, cluster=False, tls=True, options=redis_options(untrusted))
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            await client.ping()
        await client.aclose()
