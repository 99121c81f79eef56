"""Redis stopped for 10 s mid-stream and started again on the same port: degrade, don't die.

The test starts its own Redis (the session's is shared by other tests) with an
append-only file, so that a restart brings the data back as a restarted
production Redis would. While it is down the worker must stay up, report
``degraded`` on ``/health`` and ``/metrics``, and hold its place; once
it is back, every event gets its verdict (those produced during the outage
only after Redis is back) and the aggregates are exactly those of applying
each event once.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.outcomes import Outcomes, health, metrics, wait_until
from tests.integration.test_crash import Driver, _assert_nothing_lost_and_effects_once
from warden.infra.dev import devstack
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.children import die_with_parent
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.topics import Topics

N = 400
OUTAGE_S = 10.0


class OwnRedis:
    """A Redis server this test starts, stops and starts again on one port and one data directory."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = devstack.free_port("127.0.0.1")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self._runs = 0

    def start(self) -> None:
        self._runs += 1
        with (self.directory / f"redis-{self._runs}.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    devstack.redis_binary(),
                    *("--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)),
                    *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
                    *("--protected-mode", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        wait_until(lambda: devstack.redis_ready(self.url), timeout_s=30, what="redis answering")

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits."""
        if self._proc is not None:
            assert self._proc.poll() is None, "redis died on its own"
            self._proc.terminate()
            self._proc.wait(timeout=30)
            self._proc = None


def _degraded(settings: WardenSettings) -> bool:
    # The HTTP code of a degraded worker is /health's to choose (503 or 200); the body says it.
    return health(settings)[1]["status"] == "degraded"


def _store_failures(samples: dict[str, float]) -> float:
    return samples.get("warden_store_failures_total", samples.get("warden_store_errors_total", 0.0))


@pytest.mark.slow
async def test_redis_down_for_ten_seconds_degrades_the_worker_and_loses_nothing(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    own = OwnRedis(tmp_path / "redis")
    assert settings.kafka.bootstrap_servers is not None
    live = settings.with_services(settings.kafka.bootstrap_servers, own.url)
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    mails = corpus.load(live.corpus, corpus.SECOND_HALF)[:N]
    outcomes = Outcomes(live)
    own.start()
    try:
        with worker_process(live, base_env, tmp_path / "worker.log") as worker:
            wait_healthy(live, worker, timeout_s=90)
            driver = Driver(live, mails, 15.0)
            driver.start()
            outcomes.read_until(lambda o: len(o.verdicts) >= N // 5, timeout_s=60)
            own.stop()  # while events keep coming
            stopped_at, stopped_wall = time.monotonic(), time.time()
            settled_at_stop = len(outcomes.settled())
            degraded_after = wait_until(lambda: _degraded(live), timeout_s=OUTAGE_S, what="degraded")
            samples = []
            while time.monotonic() - stopped_at < OUTAGE_S:
                outcomes.read_for(1.0)
                samples.append((health(live)[1]["status"], metrics(live)["warden_store_degraded"]))
                assert worker.poll() is None, "the worker must stay up while Redis is down"
            during = metrics(live)
            settled_during = len(outcomes.settled())
            restarting_wall = time.time()
            own.start()  # same port, same data
            restarted_at = time.monotonic()
            recovered_after = wait_until(
                lambda: health(live)[1]["status"] == "ok", timeout_s=60, what="/health reporting ok again"
            )
            outcomes.read_until(lambda o: len(o.settled()) >= N, timeout_s=180)
            driver.join(timeout=60)
            outcomes.drain()
            after = metrics(live)
            assert worker.poll() is None
        assert driver.error is None, driver.error
        duplicates = await _assert_nothing_lost_and_effects_once(live, outcomes, mails)
    finally:
        outcomes.close()
        own.stop()

    print(
        f"Redis down {restarted_at - stopped_at:.1f} s; degraded on /health {degraded_after:.1f} s after "
        f"the stop; ok again {recovered_after:.1f} s after the restart; settled at the stop "
        f"{settled_at_stop}, by the restart {settled_during}, in the end {len(outcomes.settled())}/{N}; "
        f"store failures {_store_failures(during):.0f}; duplicates {duplicates}"
    )
    # Degraded the whole time it was down, on both pages.
    assert samples
    assert all(sample == ("degraded", 1.0) for sample in samples), samples
    assert during["warden_store_degraded"] == 1.0
    assert _store_failures(during) >= 2, "the worker retries"
    # Backoff: retries double up to 5 s, so a 10 s outage costs a handful of attempts, not thousands.
    assert _store_failures(during) < 60
    assert after["warden_store_degraded"] == 0.0
    # It held its place: every event produced while Redis was down was scored only once Redis was
    # back (its verdict's broker time is after the restart began), and none was skipped (above).
    produced_during = {e for e, at in driver.sent_at.items() if stopped_wall < at < restarting_wall}
    scored_early = {e for e in produced_during if outcomes.first_verdict_ms[e] < int(restarting_wall * 1000)}
    print(
        f"{len(produced_during)} events produced during the outage; scored before the restart: {scored_early}"
    )
    assert len(produced_during) >= N // 10, "the outage must fall while events are coming"
    assert not scored_early, "events were scored while Redis was down"
