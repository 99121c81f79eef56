"""Workers killed with SIGKILL mid-stream: nothing lost, duplicates identical, effects once.

The first test kills one worker once at a known point. The chaos tests
(``slow``) kill workers at random moments while a driver is still producing:
one worker killed and restarted three times, and one of two workers in a
group killed so that the other takes its partitions over (a rebalance).
Set ``WARDEN_CHAOS_SEED`` to replay a run's kill moments.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from features.extraction import to_features
from features.keys import Keys
from features.pseudonym import Pseudonymiser
from features.store import connect
from features.testing import InMemoryStore
from infra import devstack
from infra.settings import WardenSettings
from infra.worker_process import wait_healthy, worker_process
from streams import broker, corpus
from streams.corpus import CorpusMail
from streams.records import SourcePosition, Verdict, decode
from streams.replay import replay
from streams.topics import Topics
from tests.integration.outcomes import Outcomes, health, wait_until
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


CHAOS_N = 1500
#: The driver spreads the stream over this long, so that every kill lands mid-stream.
CHAOS_PRODUCE_S = 45.0


def _chaos_rng() -> random.Random:
    seed = int(os.environ.get("WARDEN_CHAOS_SEED", str(time.time_ns() % 1_000_000)))
    print(f"WARDEN_CHAOS_SEED={seed}")
    return random.Random(seed)


class Driver(threading.Thread):
    """Produces the events at a steady rate in the background, as an upstream mail system would."""

    def __init__(self, settings: WardenSettings, mails: list[CorpusMail], seconds: float) -> None:
        super().__init__(daemon=True)
        self._settings = settings
        self._events = [m.event for m in mails]
        self._rate = len(mails) / seconds
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = broker.producer(self._settings.kafka)
        try:
            replay(
                self._events,
                producer,
                Topics.from_settings(self._settings.kafka).mail_events,
                rate=self._rate,
            )
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            producer.close()


async def _assert_nothing_lost_and_effects_once(
    settings: WardenSettings, outcomes: Outcomes, mails: list[CorpusMail]
) -> int:
    """Every event settled, duplicates identical, Redis equal to the offline reference; returns duplicates."""
    ids = {m.event.event_id for m in mails}
    assert outcomes.settled() == ids, f"lost: {sorted(ids - outcomes.settled())[:10]}"
    assert not outcomes.dead_letters, f"good events dead-lettered: {dict(outcomes.dead_letters)}"
    for event_id, copies in outcomes.verdicts.items():
        decisions = {
            (v.action, round(v.score, 9), v.model_version, tuple(r.feature for r in v.reasons))
            for v in copies
        }
        assert len(decisions) == 1, f"{event_id} got different verdicts: {decisions}"
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    reference = InMemoryStore(Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    position = SourcePosition(topic="reference", partition=0, offset=0)
    reference.apply_and_read_now([to_features(m.event, pseudonymiser, position, 0) for m in mails])
    assert settings.redis.url is not None
    client = connect(settings.redis.url.get_secret_value(), cluster=False)
    try:
        await assert_matches_reference(client, settings.redis.key_prefix, reference)
    finally:
        await client.aclose()
    return sum(len(copies) - 1 for copies in outcomes.verdicts.values())


@pytest.mark.slow
async def test_chaos_three_random_sigkills_lose_nothing_and_apply_every_event_once(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    rng = _chaos_rng()
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.NEWER)[:CHAOS_N]
    outcomes = Outcomes(settings)
    driver = Driver(settings, mails, CHAOS_PRODUCE_S)
    driver.start()
    kills = []
    for life in range(3):
        with worker_process(settings, base_env, tmp_path / f"worker-{life}.log") as proc:
            lifetime = rng.uniform(3.0, 12.0)  # from spawn: during start-up, the group join or scoring
            outcomes.read_for(lifetime)
            assert proc.poll() is None, f"worker {life} died on its own"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((round(lifetime, 1), len(outcomes.settled()), driver.is_alive()))
    print(f"kills (seconds alive, events settled, driver still producing): {kills}")
    assert all(producing for _, _, producing in kills), "every kill must land while events are still coming"
    with worker_process(settings, base_env, tmp_path / "worker-final.log") as proc:
        outcomes.read_until(lambda o: len(o.settled()) >= len(mails), timeout_s=240)
        driver.join(timeout=60)
        outcomes.drain()
    outcomes.close()
    assert driver.error is None, driver.error
    duplicates = await _assert_nothing_lost_and_effects_once(settings, outcomes, mails)
    print(f"{len(mails)} events, 3 kills, {duplicates} duplicate verdicts (identical)")


def _assigned(settings: WardenSettings) -> int:
    """Partitions (of every topic the worker reads) assigned to the worker on ``settings``' port."""
    return int(str(health(settings)[1].get("assigned_partitions", 0)))


@pytest.mark.slow
async def test_chaos_one_of_two_workers_killed_the_other_takes_over_its_partitions(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    rng = _chaos_rng()
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.NEWER)[:CHAOS_N]
    second = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"web_port": devstack.free_port("127.0.0.1")})}
    )
    second_env = {**base_env, "WARDEN_DEV__STATE_DIR": str(tmp_path / "second-state")}
    outcomes = Outcomes(settings)
    with (
        worker_process(settings, base_env, tmp_path / "survivor.log") as survivor,
        worker_process(second, second_env, tmp_path / "victim.log") as victim,
    ):
        wait_until(
            lambda: all(_assigned(s) > 0 for s in (settings, second)),
            timeout_s=90,
            what="both workers joining the group with a share of the partitions",
        )
        shares = (_assigned(settings), _assigned(second))
        driver = Driver(settings, mails, CHAOS_PRODUCE_S / 3)
        driver.start()
        lifetime = rng.uniform(2.0, 8.0)
        outcomes.read_for(lifetime)
        settled_at_kill = len(outcomes.settled())
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        print(f"killed the second worker after {lifetime:.1f} s with {settled_at_kill} events settled")
        assert settled_at_kill < len(mails), "the kill must land mid-stream"
        took_over = wait_until(
            lambda: _assigned(settings) == sum(shares),
            timeout_s=90,
            what="the survivor taking every partition over",
        )
        print(f"partitions held {shares}; the survivor held all {took_over:.1f} s after the kill")
        outcomes.read_until(lambda o: len(o.settled()) >= len(mails), timeout_s=240)
        driver.join(timeout=60)
        outcomes.drain()
        assert survivor.poll() is None
    outcomes.close()
    assert driver.error is None, driver.error
    duplicates = await _assert_nothing_lost_and_effects_once(settings, outcomes, mails)
    print(f"{len(mails)} events, 1 of 2 workers killed, {duplicates} duplicate verdicts (identical)")
