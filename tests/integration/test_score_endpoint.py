"""``POST /score`` on a real worker: read-only, authenticated, JSON only, bounded, and with a deadline."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import redis
from pydantic import SecretStr

from tests.integration.outcomes import Outcomes, metrics
from tests.integration.test_store_content import _dump, assert_same_keys
from warden.features.store.redis_client import async_client
from warden.infra.dev.worker_process import run_cli, wait_healthy, worker_process
from warden.streams import broker
from warden.streams.provenance import content_digest, derived_event_id
from warden.streams.records import Verdict, encode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay
from warden.streams.topics import Topics

TOKEN = "s3cret-" + "t" * 40
LIMIT = 200_000


def _post(
    settings: WardenSettings,
    body: bytes,
    *,
    token: str | None = TOKEN,
    content_type: str = "application/json",
) -> tuple[int, dict[str, object], dict[str, str]]:
    """Status, JSON body and headers of a ``POST /score``."""
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/score"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=8) as response:
            return int(response.status), json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}"), dict(exc.headers)


def _chunked_status(settings: WardenSettings, size: int) -> int:
    """The status of a body of ``size`` bytes sent in chunks (no Content-Length to refuse it by)."""

    def chunks() -> Iterator[bytes]:
        for _ in range(size // 10_000):
            yield b" " * 10_000

    connection = http.client.HTTPConnection(settings.worker.web_host, settings.worker.web_port, timeout=8)
    try:
        connection.request(
            "POST",
            "/score",
            body=chunks(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            encode_chunked=True,
        )
        return connection.getresponse().status
    except (ConnectionResetError, BrokenPipeError):
        return 413  # the server answered and closed before every chunk was sent
    finally:
        connection.close()


def _status(settings: WardenSettings, path: str) -> int:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_post_score_is_read_only_authenticated_json_bounded_and_answers_in_time(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    live = settings.model_copy(
        update={
            "serving": settings.serving.model_copy(
                update={"score_token": SecretStr(TOKEN), "score_timeout_s": 0.5}
            ),
            "ingest": settings.ingest.model_copy(update={"max_payload_bytes": LIMIT}),
        }
    )
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    mails = corpus.load(live.corpus, corpus.SECOND_HALF)
    streamed, posted = mails[:40], mails[40:46]
    assert live.redis.url is not None
    client = async_client(live.redis)
    outcomes = Outcomes(live)
    env = {**base_env, "WARDEN_INGEST__MAX_PAYLOAD_BYTES": str(LIMIT)}
    with worker_process(live, env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        # Faust's own views are off.
        assert _status(live, "/router") == 404
        assert _status(live, "/table") == 404
        assert _status(live, "/health") == 200

        good = encode(posted[0].event)
        # No token, a wrong one, another scheme: 401, and nothing else is said.
        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
            status, body, headers = _post(live, good, token=token)
            assert status == 401
            assert headers.get("WWW-Authenticate") == "Bearer"
            assert set(body) == {"error"}
        # Not JSON by its content type: a browser's cross-site form or text post.
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            assert _post(live, good, content_type=content_type)[0] == 415
        # Over the body limit, declared or streamed in chunks.
        assert _post(live, b" " * (LIMIT + 1))[0] == 413
        assert _chunked_status(live, LIMIT + 100_000) == 413
        status, body, _ = _post(live, b"{not json")
        assert status == 400
        assert "not JSON" in str(body["error"])

        # Read-only: with aggregates in the store, scoring changes no key, not even a memo.
        producer = broker.producer(live.kafka)
        replay([m.event for m in streamed], producer, topics.mail_events)
        producer.close()
        outcomes.read_until(lambda o: len(o.settled()) >= len(streamed), 120)
        started = time.monotonic()
        before = await _dump(client, live.redis.key_prefix)
        assert before
        verdicts = []
        for mail in posted:
            status, body, _ = _post(live, encode(mail.event))
            assert status == 200, body
            verdicts.append(Verdict.model_validate(body))
        assert [v.event_id for v in verdicts] == [m.event.event_id for m in posted]
        assert all(v.original_event_id is None for v in verdicts)
        # An id the stream scored, posted with other content: answered under its derived id.
        reused = posted[1].event.model_copy(update={"event_id": streamed[3].event.event_id})
        status, body, _ = _post(live, encode(reused))
        assert status == 200
        answer = Verdict.model_validate(body)
        assert answer.original_event_id == reused.event_id
        assert answer.event_id == derived_event_id(reused.event_id, content_digest(encode(reused)))
        after = await _dump(client, live.redis.key_prefix)
        assert_same_keys(before, after, int((time.monotonic() - started) * 1000))

        # A store that does not answer: 503 at the deadline, not a request held until it does.
        # (WRITE pauses every script that may write, as the store's scripts may; UNPAUSE still runs.)
        pause = redis.Redis.from_url(live.redis.url.get_secret_value(), socket_timeout=30)
        pause.execute_command("CLIENT", "PAUSE", 15_000, "WRITE")
        try:
            status, body, _ = _post(live, encode(posted[2].event))
        finally:
            pause.execute_command("CLIENT", "UNPAUSE")
            pause.close()
        assert status == 503
        assert "did not answer" in str(body["error"])
        refused = metrics(live)
    await client.aclose()
    outcomes.close()
    for code, count in (("401", 4), ("415", 3), ("413", 2), ("400", 1), ("503", 1)):
        assert refused[f'warden_score_refused_total{{status="{code}"}}'] == count, code


def test_a_worker_listening_beyond_loopback_without_a_token_refuses_to_start(
    settings: WardenSettings, base_env: dict[str, str]
) -> None:
    exposed = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"web_host": "0.0.0.0"})}
    )
    # The services' addresses and the other secrets through the pipe, as for any worker child.
    done = run_cli(exposed, base_env, ["worker"], {"WARDEN_WORKER__WEB_HOST": "0.0.0.0"}, timeout_s=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("warden: error: ")
    assert "beyond loopback" in line
    assert "WARDEN_SERVING__SCORE_TOKEN" in line
