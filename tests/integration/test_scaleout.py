"""Several workers in one consumer group: they split the partitions, and a member leaving or joining
mid-stream loses nothing and applies nothing twice."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_store import assert_redis_applied_each_once
from warden.infra.dev import devstack
from warden.infra.dev.rediscluster import ClusterState
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.records import MailEvent, Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import send_recorded
from warden.streams.topics import Topics

N = 900
RATE = 15.0  # events/s until the last membership change, then the rest at once
PARTITIONS = 4


class _Stream(threading.Thread):
    """Sends mail events in Date order at ``RATE`` until :meth:`finish`, then the rest at once."""

    def __init__(self, settings: WardenSettings, events: list[MailEvent]) -> None:
        super().__init__(daemon=True)
        self._producer = broker.producer(settings.kafka)
        self._topic = Topics.from_settings(settings.kafka).mail_events
        self._events = sorted(events, key=lambda e: (e.timestamp, e.event_id))
        self._hurry = threading.Event()
        self.sent = 0

    def run(self) -> None:
        futures = []
        for event in self._events:
            self._hurry.wait(1 / RATE)
            futures.append(send_recorded(self._producer, self._topic, event, event.timestamp))
            self.sent += 1
        for future in futures:
            future.get(timeout=60)

    def finish(self) -> None:
        self._hurry.set()
        self.join(timeout=120)
        self._producer.close()


def _member(settings: WardenSettings) -> WardenSettings:
    """The same deployment (topics, group, store) on a web port of its own."""
    port = devstack.free_port(settings.worker.web_host)
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"web_port": port})})


def _health(settings: WardenSettings) -> dict[str, int]:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/health"
    with urllib.request.urlopen(url, timeout=2) as response:
        body: dict[str, int] = json.loads(response.read())
    return body


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("store", ["redis", "cluster"])
async def test_workers_split_partitions_and_survive_leave_and_join(
    settings: WardenSettings,
    base_env: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    store: str,
) -> None:
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"partitions": PARTITIONS})}
    )
    if store == "cluster":  # the workers' feature store is a 3-master Redis Cluster
        cluster: ClusterState = request.getfixturevalue("redis_cluster")
        nodes = ",".join(cluster.urls)
        settings = settings.model_copy(
            update={"redis": settings.redis.model_copy(update={"cluster_nodes": nodes})}
        )
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:N]

    sending = _Stream(settings, [m.event for m in mails])
    first, second, third = _member(settings), _member(settings), _member(settings)
    scored: dict[str, int] = {}
    started = time.monotonic()
    sending.start()
    try:
        with worker_process(second, base_env, tmp_path / "second.log") as p2:
            with worker_process(first, base_env, tmp_path / "first.log") as p1:
                wait_healthy(first, p1, timeout_s=60)
                wait_healthy(second, p2, timeout_s=60)
                # Both members hold partitions and both score: the group split the work.
                _wait(
                    lambda: _health(first)["scored"] > 0 and _health(second)["scored"] > 0,
                    60,
                    "both workers to score",
                )
                shares = (_health(first)["assigned_partitions"], _health(second)["assigned_partitions"])
                print(f"two workers: partitions {shares} at {time.monotonic() - started:.0f} s")
                assert all(share > 0 for share in shares)
                group_partitions = sum(shares)
                scored["first"] = _health(first)["scored"]
            # The first worker has left (SIGTERM: it stops within the grace period, exit 0, having
            # committed its offsets); a third joins while events keep coming.
            print(f"first worker stopped at {time.monotonic() - started:.0f} s")
            assert p1.returncode == 0
            with worker_process(third, base_env, tmp_path / "third.log") as p3:
                wait_healthy(third, p3, timeout_s=60)
                _wait(lambda: _health(third)["scored"] > 0, 60, "the third worker to score")
                print(f"third worker scoring at {time.monotonic() - started:.0f} s, {sending.sent} sent")
                assert sending.sent < N, "the stream must run through every membership change"
                sending.finish()
                shares = (_health(second)["assigned_partitions"], _health(third)["assigned_partitions"])
                print(f"after leave and join: partitions {shares}")
                assert sum(shares) == group_partitions  # the leaver's partitions were handed over
                assert all(share > 0 for share in shares)

                verdicts: dict[str, list[Verdict]] = defaultdict(list)
                reader = broker.TopicReader(settings.kafka, (topics.verdicts,))
                for message in reader.until(lambda: len(verdicts) >= N, timeout_s=90):
                    assert message.value is not None
                    verdict = decode(Verdict, message.value)
                    verdicts[verdict.event_id].append(verdict)
                reader.close()
                print(f"{len(verdicts)} events with verdicts at {time.monotonic() - started:.0f} s")
                scored["second"] = _health(second)["scored"]
                scored["third"] = _health(third)["scored"]
                p2.terminate()  # stop both remaining members together
                p3.terminate()
    finally:
        sending.finish()
    print(f"scored per worker: {scored}; {time.monotonic() - started:.0f} s")
    print(f"duplicates: {sum(len(v) - 1 for v in verdicts.values())}")

    # Every event has a verdict; copies (a partition handed over mid-batch) are the same decision.
    assert set(verdicts) == {m.event.event_id for m in mails}
    for event_id, copies in verdicts.items():
        assert {(v.action, round(v.score, 9), v.model_version) for v in copies} == {
            (copies[0].action, round(copies[0].score, 9), copies[0].model_version)
        }, event_id

    # Effects once across the group: Redis equals applying every event once.
    await assert_redis_applied_each_once(settings, [m.event for m in mails])
