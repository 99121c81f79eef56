"""Worker metrics, health states and dashboard figures, without a broker."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from warden.serving.worker import dashboard, health
from warden.serving.worker.metrics import (
    STAGES,
    Histogram,
    WorkerStats,
    bucket_quantile,
    exposition,
    reason_class,
)
from warden.streams.settings import HealthSettings


def _samples(stats: WorkerStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(stats).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _busy_stats() -> WorkerStats:
    stats = WorkerStats(model_version="v1", assigned_partitions=2, started=True)
    stats.events_in["mail"] += 5
    stats.dead_letter("payload is not JSON: expected value at line 1")
    stats.dead_letter("recipients: 5000 exceeds the limit of 1000")
    stats.verdicts([("mail", "allow"), ("mail", "allow"), ("mail", "block")])
    stats.end_to_end_seconds.observe_many([0.004, 0.03, 0.2])
    stats.batch_sizes.observe(3)
    for stage in STAGES:
        stats.stage_seconds[stage].observe(0.002)
    stats.consumer_lag[("t.mail.events", 1)] = 7
    return stats


def test_the_exposition_parses_and_carries_every_family() -> None:
    samples = _samples(_busy_stats())
    assert samples[("warden_events_in_total", (("kind", "mail"),))] == 5
    assert samples[("warden_events_out_total", (("kind", "mail"),))] == 3
    assert samples[("warden_verdicts_total", (("action", "allow"),))] == 2
    assert samples[("warden_verdicts_total", (("action", "block"),))] == 1
    assert samples[("warden_dead_letters_total", (("reason", "not_json"),))] == 1
    assert samples[("warden_dead_letters_total", (("reason", "over_limit"),))] == 1
    assert samples[("warden_end_to_end_seconds_count", ())] == 3
    assert samples[("warden_end_to_end_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("warden_end_to_end_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("warden_batch_size_sum", ())] == 3
    for stage in STAGES:
        assert samples[("warden_stage_seconds_count", (("stage", stage),))] == 1
    assert samples[("warden_consumer_lag", (("partition", "1"), ("topic", "t.mail.events")))] == 7
    assert samples[("warden_model_info", (("role", "champion"), ("version", "v1")))] == 1
    assert samples[("warden_store_errors_total", ())] == 0
    assert samples[("warden_shadow_disagreement_rate", ())] == 0


def test_dead_letters_counted_without_a_reason_show_as_other() -> None:
    stats = WorkerStats()
    stats.dead_lettered += 2  # a call site that does not name the reason
    stats.dead_letter("timestamp: 1e30 is outside the accepted range")
    samples = _samples(stats)
    assert samples[("warden_dead_letters_total", (("reason", "other"),))] == 2
    assert samples[("warden_dead_letters_total", (("reason", "bad_timestamp"),))] == 1


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("empty record (no value)", "empty"),
        ("payload of 20000000 bytes exceeds the limit of 1000000", "too_large"),
        ("payload is not UTF-8 (byte 3)", "not_utf8"),
        ("payload is JSON but not an object", "not_object"),
        ("subject: longer than 500000 characters", "over_limit"),
        ("sender: Input should be a valid string", "invalid_field"),
        ("unauthenticated label: signature does not match source ops_review", "unauthenticated"),
        ("unauthenticated label: no signature (source user_report)", "unauthenticated"),
        ("unknown or expired event e-1", "unknown_event"),
        ("internal error while ingesting: RecursionError", "internal_error"),
        ("something else", "other"),
    ],
)
def test_reasons_fall_into_a_closed_set_of_labels(reason: str, label: str) -> None:
    assert reason_class(reason) == label


def test_quantiles_interpolate_within_buckets_like_promql() -> None:
    hist = Histogram((1.0, 2.0, 4.0))
    hist.observe_many([0.5, 1.5, 1.5, 3.0])
    assert hist.quantile(0.5) == pytest.approx(1.5)  # rank 2 of 4, halfway through (1, 2]
    assert hist.quantile(1.0) == pytest.approx(4.0)
    assert math.isnan(Histogram((1.0,)).quantile(0.5))
    assert bucket_quantile([(1.0, 0), (math.inf, 3)], 0.5) == 1.0  # all above the last bound


def test_health_states_and_their_http_status() -> None:
    limits = HealthSettings(lag_degraded=100, unassigned_failing_s=30)
    stats = WorkerStats(model_version="v1")
    assert health.evaluate(stats, limits)[0] == "starting"
    stats.unassigned_s = 31
    state, reasons = health.evaluate(stats, limits)
    assert (state, health.HTTP_STATUS[state]) == ("failing", 503)
    assert "no partition assigned" in reasons[0]
    stats.assigned_partitions, stats.unassigned_s, stats.started = 2, 0, True
    assert health.evaluate(stats, limits) == ("ready", [])
    stats.assigned_partitions, stats.unassigned_s = 0, 3  # a rebalance after the first assignment
    state, reasons = health.evaluate(stats, limits)
    assert (state, health.HTTP_STATUS[state]) == ("degraded", 200)
    assert "rebalancing" in reasons[0]
    stats.assigned_partitions = 2
    stats.store_degraded = True
    stats.consumer_lag[("t", 0)] = 101
    stats.shadow_failing = True
    state, reasons = health.evaluate(stats, limits)
    assert (state, health.HTTP_STATUS[state]) == ("degraded", 200)
    assert len(reasons) == 3
    stats.crashed_agents = ["warden.score"]
    assert health.evaluate(stats, limits)[0] == "failing"
    stats.crashed_agents, stats.model_version = [], ""
    assert health.evaluate(stats, limits) == ("failing", ["no champion model loaded"])


def test_health_state_is_a_gauge_with_one_state_set() -> None:
    stats = _busy_stats()
    health.update(stats, HealthSettings())
    samples = _samples(stats)
    states = {
        dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "warden_health_state"
    }
    assert states == {"starting": 0, "ready": 1, "degraded": 0, "failing": 0}
    assert stats.health()["state"] == "ready"
    assert stats.health()["status"] == "ok"


def test_dashboard_figures_follow_the_counters() -> None:
    stats = _busy_stats()
    stats.throughput.sample(0, now=100.0)
    stats.throughput.sample(50, now=105.0)
    figures = dashboard.snapshot(stats)
    assert figures["verdicts"] == {"allow": 2, "junk": 0, "block": 1}
    assert figures["dead_letter_rate"] == pytest.approx(2 / 5)
    assert figures["throughput_per_s"] == pytest.approx(10.0)
    latency = figures["latency_ms"]
    assert isinstance(latency, dict)
    assert latency["p50"] == pytest.approx(stats.end_to_end_seconds.quantile(0.5) * 1000, abs=1e-3)
    assert "<script>" in dashboard.page()
    assert "http" not in dashboard.page().split("<script>")[0]  # no stylesheet or font from elsewhere


class _FakeConsumer:
    """The parts of a Faust consumer the sampler reads."""

    def __init__(self) -> None:
        from faust.types import TP

        self.tps = [TP("t.mail.events", 0), TP("t.mail.events", 1), TP("t.mail.features", 0)]
        self._read_offset: dict[object, int | None] = {self.tps[0]: 41}
        self.highwaters: dict[object, int | None] = {self.tps[0]: 50, self.tps[1]: 10, self.tps[2]: None}

    def assignment(self) -> set[object]:
        return set(self.tps)

    def highwater(self, tp: object) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: object) -> int:
        return 4


class _FakeActor:
    def __init__(self, crashed: bool) -> None:
        self.crashed = crashed


class _FakeAgent:
    def __init__(self, *crashed: bool) -> None:
        self._actors = [_FakeActor(c) for c in crashed]


class _FakeApp:
    def __init__(self) -> None:
        self.consumer = _FakeConsumer()
        self.agents = {"w.ingest": _FakeAgent(False), "w.score": _FakeAgent(False, True)}


async def test_lag_is_high_watermark_minus_the_next_offset_to_process() -> None:
    from warden.serving.worker.monitor import consumer_lag, crashed_agents

    app = _FakeApp()
    # Partition 0: read up to 41, so 42..49 wait (8); partition 1: nothing read yet, fetch position 4;
    # the features partition has no high watermark yet and is left out.
    assert await consumer_lag(app) == {("t.mail.events", 0): 8, ("t.mail.events", 1): 6}
    assert crashed_agents(app) == ["w.score"]
