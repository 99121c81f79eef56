"""Shared by the observability and security tests: a worker's pages, parsed, and a little traffic."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from warden.streams import broker
from warden.streams.records import DeadLetter, Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay
from warden.streams.topics import Topics

BAD = [b"{not json", b"\xc3\x28 invalid utf-8", b'"a string"']
N = 160

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(settings: WardenSettings, path: str) -> tuple[int, bytes]:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(settings: WardenSettings) -> Samples:
    status, body = get(settings, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def poll(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def send_traffic(settings: WardenSettings, topics: Topics) -> list[str]:
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:N]
    producer = broker.producer(settings.kafka)
    replay([m.event for m in mails[: N // 2]], producer, topics.mail_events)
    for raw in BAD:
        producer.send(topics.mail_events.name, value=raw)
    replay([m.event for m in mails[N // 2 :]], producer, topics.mail_events)
    producer.close()
    return [m.event.event_id for m in mails]


def read_outcomes(settings: WardenSettings, topics: Topics) -> tuple[list[Verdict], list[DeadLetter]]:
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
