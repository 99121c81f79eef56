"""What a running worker produced and reports: verdicts, dead letters, /health and /metrics."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable

from warden.streams import broker
from warden.streams.records import DeadLetter, Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics


class Outcomes:
    """Verdicts and dead letters read from the start of their topics, by event id."""

    def __init__(self, settings: WardenSettings) -> None:
        topics = Topics.from_settings(settings.kafka)
        self._verdicts_topic = topics.verdicts.name
        self._reader = broker.TopicReader(settings.kafka, (topics.verdicts, topics.dead_letters))
        self.verdicts: dict[str, list[Verdict]] = defaultdict(list)
        #: Broker timestamp (ms) of each event's first verdict: when it was scored.
        self.first_verdict_ms: dict[str, int] = {}
        self.dead_letters: dict[str, list[DeadLetter]] = defaultdict(list)

    def _take(self, messages: list[broker.Message]) -> None:
        for message in messages:
            assert message.value is not None
            if message.topic == self._verdicts_topic:
                verdict = decode(Verdict, message.value)
                self.verdicts[verdict.event_id].append(verdict)
                self.first_verdict_ms.setdefault(verdict.event_id, message.timestamp_ms)
            else:
                letter = decode(DeadLetter, message.value)
                self.dead_letters[event_id_of(letter)].append(letter)

    def settled(self) -> set[str]:
        """Event ids (or dead-letter keys) that have a verdict or a dead letter."""
        return set(self.verdicts) | set(self.dead_letters)

    def read_until(self, done: Callable[[Outcomes], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self) and time.monotonic() < deadline:
            self._take(self._reader.poll())

    def read_for(self, seconds: float) -> None:
        """Keep reading for ``seconds`` (a worker's random lifetime in the chaos tests)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._take(self._reader.poll(min(0.3, max(0.01, deadline - time.monotonic()))))

    def drain(self, quiet_s: float = 1.5) -> None:
        """Read until nothing new arrives for ``quiet_s`` (late duplicates included)."""
        deadline = time.monotonic() + quiet_s
        while time.monotonic() < deadline:
            messages = self._reader.poll(0.3)
            if messages:
                self._take(messages)
                deadline = time.monotonic() + quiet_s

    def close(self) -> None:
        self._reader.close()


def event_id_of(letter: DeadLetter) -> str:
    """The event id inside a dead letter's payload, or its source position when it has none.

    (A letter holding only an excerpt of a large record is not JSON: its position, then.)
    """
    try:
        value = json.loads(letter.excerpt())
        if isinstance(value, dict) and isinstance(value.get("event_id"), str):
            return str(value["event_id"])
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    return f"@{letter.source.topic}/{letter.source.partition}/{letter.source.offset}"


def _get(settings: WardenSettings, path: str) -> tuple[int, bytes]:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:  # /health answers 503 when degraded
        return int(exc.code), bytes(exc.read())


def health(settings: WardenSettings) -> tuple[int, dict[str, object]]:
    status, body = _get(settings, "/health")
    return status, dict(json.loads(body))


def metrics(settings: WardenSettings) -> dict[str, float]:
    """The worker's /metrics samples, by name with labels (``name{label="x"}``)."""
    _, body = _get(settings, "/metrics")
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled every 0.2 s); AssertionError after the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if check():
                return time.monotonic() - started
        except (OSError, ValueError):
            pass  # the worker's web server is not up (yet)
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
