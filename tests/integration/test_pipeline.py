"""Mail events in, verdicts out, on the real broker and Redis with a real worker process."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.records import DEAD_LETTER_WHOLE_BYTES, DeadLetter, Verdict, decode, encode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay, send_raw
from warden.streams.topics import Topics

MALFORMED = [
    b"{not json",
    b"\xc3\x28 invalid utf-8",
    b'"a string"',
    b'{"event_id": "x-1", "timestamp": 1030000000.0, "recipients": ["a@b.c"]}',
    b'{"event_id": "x-2", "timestamp": [], "sender": "a@b.c", "recipients": ["a@b.c"]}',
    b'{"event_id": "x-3", "sender": "a@b.c", "recipients": ["a@b.c"], "timestamp": 1e9, "text": "'
    + b"y" * 1_200_000
    + b'"}',
    b'{"event_id": "x-4", "sender": "a@b.c", "recipients": ["a@b.c"], "timestamp": 99e99}',
]
N = 300


def _scan_everything(client: redis.Redis, prefix: str) -> dict[bytes, tuple[int, bytes]]:
    """Every key under ``prefix`` with its TTL and a readable dump of its value."""
    found: dict[bytes, tuple[int, bytes]] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key)
        if kind == b"zset":
            value = b" ".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == b"string":
            value = client.get(key) or b""
        elif kind == b"hash":
            value = b" ".join(k + b"=" + v for k, v in client.hgetall(key).items())
        elif kind == b"set":
            value = b" ".join(client.smembers(key))
        elif kind == b"list":
            value = b" ".join(client.lrange(key, 0, -1))
        else:
            raise AssertionError(f"unexpected key type {kind!r} for {key!r}")
        found[key] = (client.ttl(key), value)
    return found


@pytest.mark.parametrize("split_stages", [False, True], ids=["one-hop", "split-stages"])
def test_replayed_mails_get_one_verdict_each_and_bad_records_dead_letters(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path, split_stages: bool
) -> None:
    # One hop (the default): ingest scores its own batch. Split: ingest -> mail.features -> score.
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"split_stages": split_stages})}
    )
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:N]
    producer = broker.producer(settings.kafka)
    with worker_process(settings, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(settings, proc, timeout_s=90)
        replay([m.event for m in mails[: N // 2]], producer, topics.mail_events)
        futures = [producer.send(topics.mail_events.name, value=raw) for raw in MALFORMED]
        send_raw(producer, [])
        bad_positions = {(f.get(10).partition, f.get(10).offset) for f in futures}
        replay([m.event for m in mails[N // 2 :]], producer, topics.mail_events)
        producer.close()

        verdicts: list[Verdict] = []
        letters: list[DeadLetter] = []
        reader = broker.TopicReader(settings.kafka, (topics.verdicts, topics.dead_letters))

        def complete() -> bool:
            return len(verdicts) >= N and len(letters) >= len(MALFORMED)

        for message in reader.until(complete, timeout_s=120):
            assert message.value is not None
            if message.topic == topics.verdicts.name:
                verdicts.append(decode(Verdict, message.value))
            else:
                letters.append(decode(DeadLetter, message.value))
        # Anything still in flight would show up now as an extra record.
        time.sleep(1.0)
        for message in reader.poll(1.0):
            assert message.value is not None
            if message.topic == topics.verdicts.name:
                verdicts.append(decode(Verdict, message.value))
            else:
                letters.append(decode(DeadLetter, message.value))
        reader.close()

    counts = Counter(v.event_id for v in verdicts)
    assert set(counts) == {m.event.event_id for m in mails}
    assert all(n == 1 for n in counts.values()), "a clean run must give exactly one verdict per event"
    assert {v.action for v in verdicts} <= {"allow", "junk", "block"}
    assert {(d.source.partition, d.source.offset) for d in letters} == bad_positions
    assert len(letters) == len(MALFORMED)
    for letter in letters:
        assert letter.source.topic == topics.mail_events.name
        assert letter.reason
        # The record whole, or (the 1.2 MB one) an excerpt: either way its length and digest.
        assert letter.payload_sha256 in {hashlib.sha256(raw).hexdigest() for raw in MALFORMED}
        assert letter.payload_complete == (letter.payload_bytes <= DEAD_LETTER_WHOLE_BYTES)
        if letter.payload_complete:
            assert letter.payload() in MALFORMED
        else:
            assert len(encode(letter)) < 10_000
    reasons = " | ".join(sorted(d.reason for d in letters))
    for expected in ("not JSON", "not UTF-8", "not an object", "sender", "timestamp", "exceeds"):
        assert expected in reasons

    # Privacy and retention: every key has a TTL; no raw address or subject anywhere in Redis.
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())  # type: ignore[union-attr]
    keys = _scan_everything(client, settings.redis.key_prefix)
    assert len(keys) >= N // 10
    raw_values: set[bytes] = set()
    for mail in mails:
        raw_values.add(mail.event.sender.lower().encode())
        raw_values.update(r.lower().encode() for r in mail.event.recipients)
        if len(mail.event.subject.strip()) >= 8:
            raw_values.add(mail.event.subject.strip().lower().encode())
    for key, (ttl, value) in keys.items():
        longest = max(
            settings.redis.ttl_seconds, settings.redis.memo_ttl_seconds, settings.feedback.row_ttl_seconds
        )
        assert 0 < ttl <= longest, f"{key!r} has no TTL from the settings"
        haystack = key.lower() + b" " + value.lower()
        leaked = [raw for raw in raw_values if raw in haystack]
        assert not leaked, f"{key!r} holds raw identifiers or text: {leaked[:3]}"

    # Derived topics hold pseudonyms and numbers only.
    reader = broker.TopicReader(settings.kafka, (topics.mail_features, topics.verdicts, topics.feature_log))
    derived_records = [m.value or b"" for m in reader.until(lambda: False, timeout_s=3)]
    reader.close()
    # A verdict and a feature-log entry per mail, and its features record when the stages are split.
    assert len(derived_records) == (3 if split_stages else 2) * N
    derived = b" ".join(derived_records).lower()
    for raw in raw_values:
        assert raw not in derived
