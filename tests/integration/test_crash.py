"""A worker killed with SIGKILL mid-stream and restarted: nothing lost, effects once."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from pathlib import Path

from features.extraction import to_features
from features.keys import Keys
from features.pseudonym import Pseudonymiser
from features.store import connect
from features.testing import InMemoryStore
from infra.settings import WardenSettings
from infra.worker_process import wait_healthy, worker_process
from streams import broker, corpus
from streams.records import SourcePosition, Verdict, decode
from streams.replay import replay
from streams.topics import Topics
from tests.integration.test_store import assert_matches_reference

N = 800


async def test_sigkill_mid_stream_loses_nothing_and_applies_every_event_once(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.NEWER)[:N]
    producer = broker.producer(settings.kafka)
    replay([m.event for m in mails], producer, topics.mail_events)
    producer.close()

    verdicts: dict[str, list[Verdict]] = defaultdict(list)
    reader = broker.TopicReader(settings.kafka, (topics.verdicts,))

    def read_until(count: int, timeout_s: float) -> None:
        for message in reader.until(lambda: len(verdicts) >= count, timeout_s):
            assert message.value is not None
            verdict = decode(Verdict, message.value)
            verdicts[verdict.event_id].append(verdict)

    with worker_process(settings, base_env, tmp_path / "first.log") as first:
        wait_healthy(settings, first, timeout_s=90)
        read_until(N // 4, timeout_s=120)
        os.kill(first.pid, signal.SIGKILL)  # while it is busy with the rest of the stream
        first.wait()
    killed_after = len(verdicts)
    print(f"killed after {killed_after} verdicts")
    assert 0 < killed_after < N, "the kill must land mid-stream"

    with worker_process(settings, base_env, tmp_path / "second.log") as second:
        wait_healthy(settings, second, timeout_s=90)
        read_until(N, timeout_s=180)
    reader.close()

    print(f"duplicates: {sum(len(v) - 1 for v in verdicts.values())}")
    # Nothing lost: every event has a verdict; any duplicate is the same decision.
    assert set(verdicts) == {m.event.event_id for m in mails}
    for event_id, copies in verdicts.items():
        assert {(v.action, round(v.score, 9), v.model_version) for v in copies} == {
            (copies[0].action, round(copies[0].score, 9), copies[0].model_version)
        }, event_id

    # Effects once: Redis holds exactly what applying every event once gives.
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    reference = InMemoryStore(Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    position = SourcePosition(topic="reference", partition=0, offset=0)
    reference.apply_and_read_now([to_features(m.event, pseudonymiser, position, 0) for m in mails])
    assert settings.redis.url is not None
    client = connect(settings.redis.url.get_secret_value(), cluster=False)
    await assert_matches_reference(client, settings.redis.key_prefix, reference)
    await client.aclose()
