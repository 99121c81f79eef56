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

from tests.integration.outcomes import Outcomes, health, wait_until
from tests.integration.test_rejected_output import committed
from tests.integration.test_store import assert_redis_applied_each_once
from warden.infra.dev import devstack
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.records import Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.corpus import CorpusMail
from warden.streams.sources.replay import replay, send_recorded
from warden.streams.topics import Topics

N = 800


async def test_sigkill_mid_stream_loses_nothing_and_applies_every_event_once(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:N]
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
        read_until(N // 8, timeout_s=120)
        os.kill(first.pid, signal.SIGKILL)  # while it is busy with the rest of the stream
        first.wait()
    # What the dead worker got done: every verdict it produced is on the topic by now (read to the
    # end, until nothing more comes), and its group's committed input offsets.
    quiet_until = time.monotonic() + 2.0
    while time.monotonic() < quiet_until:
        before = len(verdicts)
        read_until(N, timeout_s=0.5)
        if len(verdicts) > before:
            quiet_until = time.monotonic() + 2.0
    scored_by_first = len(verdicts)
    committed_by_first = sum(committed(settings, topics.mail_events.name).values())
    print(f"killed with {scored_by_first}/{N} events scored and {committed_by_first} input offsets committed")
    assert 0 < scored_by_first < N, "the kill must land while events are still unscored"
    assert committed_by_first < N, "the kill must land before the worker committed the whole backlog"

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
    await assert_redis_applied_each_once(settings, [m.event for m in mails])


CHAOS_N = 1000
#: The driver would spread the stream over this long; it hurries once the kills are done.
CHAOS_PRODUCE_S = 120.0


def _chaos_rng() -> random.Random:
    seed = int(os.environ.get("WARDEN_CHAOS_SEED", str(time.time_ns() % 1_000_000)))
    print(f"WARDEN_CHAOS_SEED={seed}")
    return random.Random(seed)


class Driver(threading.Thread):
    """Produces the events in Date order at a steady rate in the background, as a mail system would.

    :meth:`hurry` sends the rest at once (after the last kill), so that a run
    need not wait out the whole rate while every kill still lands mid-stream.
    """

    def __init__(self, settings: WardenSettings, mails: list[CorpusMail], seconds: float) -> None:
        super().__init__(daemon=True)
        self._settings = settings
        self._events = sorted((m.event for m in mails), key=lambda e: (e.timestamp, e.event_id))
        self._interval = seconds / len(mails)
        self._hurry = threading.Event()
        self.sent = 0
        #: Wall-clock time (epoch s) each event was handed to the producer, by event id.
        self.sent_at: dict[str, float] = {}
        self.error: BaseException | None = None

    def hurry(self) -> None:
        self._hurry.set()

    def run(self) -> None:
        producer = broker.producer(self._settings.kafka)
        topic = Topics.from_settings(self._settings.kafka).mail_events
        try:
            futures = []
            for event in self._events:
                self._hurry.wait(self._interval)
                self.sent_at[event.event_id] = time.time()
                futures.append(send_recorded(producer, topic, event, event.timestamp))
                self.sent += 1
            producer.flush(timeout=60)
            for future in futures:
                future.get(timeout=60)
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
    await assert_redis_applied_each_once(settings, [m.event for m in mails])
    return sum(len(copies) - 1 for copies in outcomes.verdicts.values())


@pytest.mark.slow
async def test_chaos_three_random_sigkills_lose_nothing_and_apply_every_event_once(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    rng = _chaos_rng()
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:CHAOS_N]
    outcomes = Outcomes(settings)
    driver = Driver(settings, mails, CHAOS_PRODUCE_S)
    driver.start()
    kills = []
    for life in range(3):
        with worker_process(settings, base_env, tmp_path / f"worker-{life}.log") as proc:
            wait_healthy(settings, proc, timeout_s=90)
            at_join = len(outcomes.settled())
            # A random moment while it scores: after a random number of new outcomes, plus up to 1 s.
            more = rng.randint(10, 120)
            outcomes.read_until(lambda o, n=at_join + more: len(o.settled()) >= n, timeout_s=90)
            outcomes.read_for(rng.uniform(0.0, 1.0))
            assert proc.poll() is None, f"worker {life} died on its own"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((at_join, len(outcomes.settled()), driver.sent))
    driver.hurry()
    print(f"kills (settled at join, settled at kill, events produced so far): {kills}")
    for at_join, at_kill, produced in kills:
        assert at_join < at_kill < len(mails), "every kill must land while the worker is scoring"
        assert produced < len(mails), "every kill must land while events are still coming"
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
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:CHAOS_N]
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
        driver = Driver(settings, mails, CHAOS_PRODUCE_S)
        driver.start()
        more = rng.randint(20, 200)  # a random moment while both score
        outcomes.read_until(lambda o: len(o.settled()) >= more, timeout_s=90)
        outcomes.read_for(rng.uniform(0.0, 1.0))
        settled_at_kill, produced_at_kill = len(outcomes.settled()), driver.sent
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        print(f"killed the second worker with {settled_at_kill} events settled, {produced_at_kill} produced")
        assert 0 < settled_at_kill < len(mails), "the kill must land while the workers score"
        assert produced_at_kill < len(mails), "the kill must land while events are still coming"
        took_over = wait_until(
            lambda: _assigned(settings) == sum(shares),
            timeout_s=90,
            what="the survivor taking every partition over",
        )
        driver.hurry()
        print(f"partitions held {shares}; the survivor held all {took_over:.1f} s after the kill")
        outcomes.read_until(lambda o: len(o.settled()) >= len(mails), timeout_s=240)
        driver.join(timeout=60)
        outcomes.drain()
        assert survivor.poll() is None
    outcomes.close()
    assert driver.error is None, driver.error
    duplicates = await _assert_nothing_lost_and_effects_once(settings, outcomes, mails)
    print(f"{len(mails)} events, 1 of 2 workers killed, {duplicates} duplicate verdicts (identical)")
