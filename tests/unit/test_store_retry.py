"""The worker's one store retry loop (serving.worker.retry), with a store double that fails on cue."""

from __future__ import annotations

import logging

import pytest

from warden.features.exceptions import StoreUnavailable
from warden.serving.worker import health, retry
from warden.serving.worker.metrics import WorkerStats
from warden.streams.settings import HealthSettings


class FlakyStore:
    """Answers ``answer`` after refusing the first ``failures`` calls; records the health seen on each."""

    def __init__(self, failures: int, stats: WorkerStats, answer: str = "served") -> None:
        self.failures = failures
        self.calls = 0
        self.answer = answer
        self.stats = stats
        self.states_seen: list[str] = []

    async def serve(self) -> str:
        self.calls += 1
        stats = self.stats
        stats.model_version, stats.assigned_partitions, stats.started = "v1", 1, True
        self.states_seen.append(health.evaluate(stats, HealthSettings())[0])
        if self.calls <= self.failures:
            raise StoreUnavailable("redis unreachable: connection refused")
        return self.answer


class Sleeps:
    """Records each wait instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


async def test_serve_backs_off_doubling_up_to_the_cap_and_counts_every_failure() -> None:
    stats = WorkerStats()
    store, sleeps = FlakyStore(8, stats), Sleeps()
    answer = await retry.until_answered(store.serve, stats, retry.SERVE, sleep=sleeps)
    assert answer == "served"
    assert sleeps.delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert (stats.store_failures, stats.store_retries, stats.store_degraded) == (8, 8, False)


async def test_health_is_degraded_during_the_outage_and_ready_after() -> None:
    stats = WorkerStats()
    store = FlakyStore(2, stats)
    await retry.until_answered(store.serve, stats, retry.SERVE, sleep=Sleeps())
    # The first call sees a healthy worker; the retries see it degraded.
    assert store.states_seen == ["ready", "degraded", "degraded"]
    assert health.evaluate(stats, HealthSettings()) == ("ready", [])


async def test_connect_retries_once_a_second_until_the_app_stops() -> None:
    stats = WorkerStats()
    store, sleeps = FlakyStore(100, stats), Sleeps()
    attempts_left = [3]

    def running() -> bool:
        attempts_left[0] -= 1
        return attempts_left[0] >= 0

    answer = await retry.until_answered(store.serve, stats, retry.CONNECT, running=running, sleep=sleeps)
    assert answer is None
    assert store.calls == 3
    assert sleeps.delays == [1.0, 1.0, 1.0]
    # Stopped while the store was down: health still says so.
    assert stats.store_degraded
    assert stats.store_failures == 3


async def test_a_stopped_app_does_not_call_the_store() -> None:
    stats = WorkerStats()
    store = FlakyStore(0, stats)
    answer = await retry.until_answered(store.serve, stats, retry.CONNECT, running=lambda: False)
    assert answer is None
    assert store.calls == 0


async def test_only_the_outage_and_the_recovery_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    stats = WorkerStats()
    caplog.set_level(logging.WARNING, logger=retry.__name__)
    await retry.until_answered(FlakyStore(5, stats).serve, stats, retry.SERVE, sleep=Sleeps())
    assert [r.getMessage() for r in caplog.records] == [
        "feature store unavailable, retrying: redis unreachable: connection refused",
        "feature store available again",
    ]


async def test_other_errors_pass_through_without_counting() -> None:
    stats = WorkerStats()

    async def broken() -> str:
        raise ValueError("a script bug, not an outage")

    with pytest.raises(ValueError, match="script bug"):
        await retry.until_answered(broken, stats, retry.SERVE, sleep=Sleeps())
    assert (stats.store_failures, stats.store_retries, stats.store_degraded) == (0, 0, False)
