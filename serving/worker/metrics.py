"""What one worker has done, rendered for ``GET /metrics`` (Prometheus text format).

:class:`WorkerStats` is plain counters, dicts and :class:`Histogram` objects
mutated by the worker's own event loop, once per micro-batch (never a lock
or a label lookup per event). At scrape time :class:`StatsCollector` turns
them into Prometheus metric families, and ``prometheus_client`` writes the
exposition; the metric names are listed in the docs ("Operations").
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

Status = Literal["starting", "ok", "degraded"]

#: The stages of the pipeline timed per micro-batch (docs: "Operations").
STAGES = ("decode", "features", "store", "score", "produce")
#: Seconds: stage durations per batch and end-to-end latency per event.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
#: Seconds: how late the event loop ran the lag probe (invariant 8: no record may hold it 100 ms).
LOOP_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Dead-letter reasons, as a closed set of label values (the full reason is on the record).
DEAD_LETTER_REASONS = (
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "over_limit",
    "bad_timestamp",
    "invalid_field",
    "unauthenticated",
    "unknown_event",
    "internal_error",
    "other",
)


def reason_class(reason: str) -> str:
    """The label value for a dead letter's free-text reason."""
    if reason.startswith("empty record"):
        return "empty"
    if reason.startswith("payload of"):
        return "too_large"
    if reason.startswith("payload is not UTF-8"):
        return "not_utf8"
    if reason.startswith("payload is not JSON"):
        return "not_json"
    if reason.startswith("payload is JSON but not an object"):
        return "not_object"
    if "exceeds the limit" in reason or "longer than" in reason:
        return "over_limit"
    if reason.startswith("timestamp:"):
        return "bad_timestamp"
    # Forgery attempts (a label without a valid signature of its source) get their own class,
    # so that operators can alert on them apart from malformed input.
    if reason.startswith("unauthenticated"):
        return "unauthenticated"
    if reason.startswith("unknown or expired event"):
        return "unknown_event"
    if reason.startswith("internal error"):
        return "internal_error"
    if ": " in reason:
        return "invalid_field"
    return "other"


@dataclass
class Histogram:
    """Cumulative-bucket histogram, observed per batch."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self.bounds, self.counts
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[float, int]]:
        """``(upper bound, cumulative count)`` pairs, ending with ``(inf, count)``."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float:
        return bucket_quantile(self.buckets(), q)


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile of cumulative buckets, interpolated as PromQL's ``histogram_quantile``.

    NaN when the histogram is empty; the highest finite bound when the rank
    falls in the ``+Inf`` bucket.
    """
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            if cumulative == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cumulative - lower_count)
        lower_bound, lower_count = bound, cumulative
    return lower_bound


#: Seconds of verdict counts the throughput figure averages over.
THROUGHPUT_WINDOW_S = 10.0


@dataclass
class Throughput:
    """Verdict counts sampled over time (by the worker's sampler, once a second)."""

    window_s: float = THROUGHPUT_WINDOW_S
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))

    def sample(self, scored: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, scored))
        while self.samples and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    def per_second(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _latency() -> Histogram:
    return Histogram(LATENCY_BUCKETS_S)


@dataclass
class LoopLag:
    """How late the event loop ran a timer, sampled by :func:`serving.worker.monitor.probe_loop_lag`.

    ``lag`` is wall time (what ``/health``, heartbeats and the other agents
    waited); ``stall`` is the part of it the loop's own thread spent on CPU,
    so a stall of this worker's code and not of a busy machine. Each keeps a
    histogram and its largest value over the last :data:`THROUGHPUT_WINDOW_S`.
    """

    lag: Histogram = field(default_factory=lambda: Histogram(LOOP_LAG_BUCKETS_S))
    stall: Histogram = field(default_factory=lambda: Histogram(LOOP_LAG_BUCKETS_S))
    recent: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=1024))

    def observe(self, lag_s: float, stall_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.lag.observe(lag_s)
        self.stall.observe(stall_s)
        self.recent.append((now, lag_s, stall_s))
        while self.recent and now - self.recent[0][0] > THROUGHPUT_WINDOW_S:
            self.recent.popleft()

    def recent_max(self) -> tuple[float, float]:
        """The largest lag and stall of the last window (0 when nothing was sampled)."""
        return (
            max((lag for _, lag, _ in self.recent), default=0.0),
            max((stall for _, _, stall in self.recent), default=0.0),
        )


@dataclass
class WorkerStats:
    """What one worker process has done; mutated only by its own event loop."""

    ingested: int = 0
    dead_lettered: int = 0
    scored: int = 0
    batches: int = 0
    store_failures: int = 0
    store_retries: int = 0
    store_degraded: bool = False
    model_version: str = ""
    shadow_version: str = ""
    #: A shadow version the registry asks for was refused at load.
    shadow_failing: bool = False
    swaps: int = 0
    model_refusals: int = 0
    last_swap_load_ms: float = 0.0
    shadow_scored: int = 0
    feedback_accepted: int = 0
    feedback_unknown: int = 0
    feedback_duplicates: int = 0
    feedback_capped: int = 0
    served_rows_lost: int = 0
    #: Events whose id was first seen with other content (scored under a derived id).
    event_ids_reused: int = 0
    #: Input records whose broker time ingest held to a bound, by direction ("ahead": past the
    #: receive clock plus the allowed skew; "behind": older than the input topics' retention).
    event_times_clamped: Counter[str] = field(default_factory=Counter)
    #: ``POST /score`` requests answered with an error status, by status code.
    score_refused: Counter[int] = field(default_factory=Counter)
    shadow_disagreements: int = 0
    #: The last ``warden retrain`` run the registry records ("" and 0: none), read at each registry refresh.
    retrain_outcome: str = ""
    retrain_finished_at: float = 0.0
    assigned_partitions: int = 0
    started: bool = False
    actions: dict[str, int] = field(default_factory=lambda: {"allow": 0, "junk": 0, "block": 0})
    #: Input records read, per event kind (mail, calendar, contacts).
    events_in: Counter[str] = field(default_factory=Counter)
    #: Verdicts sent, per event kind.
    events_out: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    stage_seconds: dict[str, Histogram] = field(default_factory=lambda: {s: _latency() for s in STAGES})
    end_to_end_seconds: Histogram = field(default_factory=_latency)
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    #: Records not yet processed, per ``(topic, partition)`` assigned to this worker.
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Seconds since the worker started (set by the sampler).
    uptime_s: float = 0.0
    #: Seconds since the worker last had no partition assigned.
    unassigned_s: float = 0.0
    #: Names of agents with a crashed actor (set by the sampler).
    crashed_agents: list[str] = field(default_factory=list)
    #: The health state and its reasons (set by :func:`serving.worker.health.evaluate`).
    health_state: str = "starting"
    health_reasons: list[str] = field(default_factory=list)
    #: Verdict counts over time, for the dashboard's throughput.
    throughput: Throughput = field(default_factory=lambda: Throughput())
    #: How late the event loop runs (wall) and how much of that it spent on CPU (see LoopLag).
    loop_lag: LoopLag = field(default_factory=LoopLag)

    @property
    def status(self) -> Status:
        if self.store_degraded:
            return "degraded"
        return "ok" if self.started else "starting"

    def dead_letter(self, reason: str, n: int = 1) -> None:
        """Count ``n`` dead letters for ``reason`` (the free text; labelled by its class)."""
        self.dead_lettered += n
        self.dead_letter_reasons[reason_class(reason)] += n

    def verdicts(self, kinds_and_actions: Iterable[tuple[str, str]]) -> None:
        """Count one batch's verdicts by kind and by action."""
        pairs = Counter(kinds_and_actions)
        for (kind, action), n in pairs.items():
            self.events_out[kind] += n
            self.actions[action] = self.actions.get(action, 0) + n

    @property
    def total_lag(self) -> int:
        return sum(self.consumer_lag.values())

    @property
    def shadow_disagreement_rate(self) -> float:
        return self.shadow_disagreements / self.shadow_scored if self.shadow_scored else 0.0

    def health(self) -> dict[str, object]:
        """The ``GET /health`` body (see :mod:`serving.worker.health` for the states)."""
        return {
            "state": self.health_state,
            # Kept for existing callers: "ok" when ready, otherwise the state.
            "status": "ok" if self.health_state == "ready" else self.health_state,
            "reasons": list(self.health_reasons),
            "model_version": self.model_version,
            "shadow_version": self.shadow_version,
            "assigned_partitions": self.assigned_partitions,
            "consumer_lag": self.total_lag,
            "ingested": self.ingested,
            "scored": self.scored,
            "dead_lettered": self.dead_lettered,
        }

    def registry(self) -> CollectorRegistry:
        """A Prometheus registry holding only this worker's metrics."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StatsCollector(self))
        return registry


#: Every value ``warden_health_state`` can report.
HEALTH_STATES = ("starting", "ready", "degraded", "failing")


def _histogram(name: str, doc: str, hist: Histogram, labels: dict[str, str] | None = None) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(
        list((labels or {}).values()),
        buckets=[("+Inf" if math.isinf(b) else repr(b), c) for b, c in hist.buckets()],
        sum_value=hist.total,
    )
    return family


class StatsCollector(Collector):
    """Renders a :class:`WorkerStats` as Prometheus metric families at scrape time."""

    def __init__(self, stats: WorkerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield from self._events(s)
        yield from self._latencies(s)
        yield from self._store_and_consumer(s)
        yield from self._models(s)
        yield from self._feedback(s)
        health = GaugeMetricFamily(
            "warden_health_state", "1 for the worker's current health state", labels=["state"]
        )
        for state in HEALTH_STATES:
            health.add_metric([state], float(s.health_state == state))
        yield health

    @staticmethod
    def _events(s: WorkerStats) -> Iterator[Metric]:
        events_in = CounterMetricFamily("warden_events_in", "Input records read, by kind", labels=["kind"])
        for kind, n in sorted(s.events_in.items()):
            events_in.add_metric([kind], n)
        yield events_in
        events_out = CounterMetricFamily("warden_events_out", "Verdicts sent, by kind", labels=["kind"])
        for kind, n in sorted(s.events_out.items()):
            events_out.add_metric([kind], n)
        yield events_out
        yield CounterMetricFamily("warden_events_ingested", "Input records turned into features", s.ingested)
        yield CounterMetricFamily("warden_events_scored", "Events scored", s.scored)
        yield CounterMetricFamily("warden_score_batches", "Micro-batches scored", s.batches)
        verdicts = CounterMetricFamily("warden_verdicts", "Verdicts sent, by action", labels=["action"])
        for action, n in s.actions.items():
            verdicts.add_metric([action], n)
        yield verdicts
        letters = CounterMetricFamily(
            "warden_dead_letters", "Dead letters sent, by reason", labels=["reason"]
        )
        by_reason = Counter(s.dead_letter_reasons)
        # Dead letters counted without a reason (older call sites) are "other".
        by_reason["other"] += max(0, s.dead_lettered - sum(s.dead_letter_reasons.values()))
        for reason in DEAD_LETTER_REASONS:
            letters.add_metric([reason], by_reason.get(reason, 0))
        yield letters

    @staticmethod
    def _latencies(s: WorkerStats) -> Iterator[Metric]:
        stages = HistogramMetricFamily(
            "warden_stage_seconds", "Seconds one micro-batch spent in a stage", labels=["stage"]
        )
        for stage, hist in s.stage_seconds.items():
            stages.add_metric(
                [stage],
                buckets=[("+Inf" if math.isinf(b) else repr(b), c) for b, c in hist.buckets()],
                sum_value=hist.total,
            )
        yield stages
        yield _histogram(
            "warden_end_to_end_seconds",
            "Seconds from an input record's timestamp to its verdict being sent",
            s.end_to_end_seconds,
        )
        yield _histogram("warden_batch_size", "Events per scored micro-batch", s.batch_sizes)
        yield _histogram(
            "warden_event_loop_lag_seconds",
            "Seconds the event loop ran a timer late (wall time: what /health and heartbeats waited)",
            s.loop_lag.lag,
        )
        yield _histogram(
            "warden_event_loop_stall_seconds",
            "Of that lateness, seconds the event loop's own thread spent on CPU (a stall of this worker)",
            s.loop_lag.stall,
        )
        lag_max, stall_max = s.loop_lag.recent_max()
        yield GaugeMetricFamily(
            "warden_event_loop_lag_max_seconds", "Largest event-loop lag of the last 10 s", lag_max
        )
        yield GaugeMetricFamily(
            "warden_event_loop_stall_max_seconds", "Largest event-loop stall of the last 10 s", stall_max
        )

    @staticmethod
    def _store_and_consumer(s: WorkerStats) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "warden_store_errors", "Feature-store calls that failed (Redis unreachable)", s.store_failures
        )
        yield CounterMetricFamily(
            "warden_store_retries", "Feature-store calls retried after backoff", s.store_retries
        )
        yield GaugeMetricFamily(
            "warden_store_degraded", "1 while the feature store fails", float(s.store_degraded)
        )
        yield CounterMetricFamily(
            "warden_served_rows_lost", "Served rows not kept for labels (Redis error)", s.served_rows_lost
        )
        yield CounterMetricFamily(
            "warden_event_ids_reused",
            "Events whose id was first seen with other content, scored under a derived id",
            s.event_ids_reused,
        )
        clamped = CounterMetricFamily(
            "warden_event_times_clamped",
            "Input records whose broker time was held to a bound (ahead of the clock, older than retention)",
            labels=["direction"],
        )
        for direction in ("ahead", "behind"):
            clamped.add_metric([direction], s.event_times_clamped.get(direction, 0))
        yield clamped
        refused = CounterMetricFamily(
            "warden_score_refused",
            "POST /score requests answered with an error, by status",
            labels=["status"],
        )
        for status, n in sorted(s.score_refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
        lag = GaugeMetricFamily(
            "warden_consumer_lag",
            "Records behind the partition's high watermark",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(s.consumer_lag.items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        yield GaugeMetricFamily(
            "warden_assigned_partitions", "Partitions assigned to this worker", s.assigned_partitions
        )

    @staticmethod
    def _models(s: WorkerStats) -> Iterator[Metric]:
        info = GaugeMetricFamily("warden_model_info", "The versions served", labels=["role", "version"])
        info.add_metric(["champion", s.model_version], 1)
        if s.shadow_version:
            info.add_metric(["shadow", s.shadow_version], 1)
        yield info
        yield CounterMetricFamily("warden_model_swaps", "Hot swaps made", s.swaps)
        yield CounterMetricFamily("warden_model_refusals", "Model versions refused at load", s.model_refusals)
        yield GaugeMetricFamily(
            "warden_model_swap_load_ms", "Milliseconds the last swap took to load", s.last_swap_load_ms
        )
        yield CounterMetricFamily("warden_shadow_scored", "Events scored by the shadow", s.shadow_scored)
        yield CounterMetricFamily(
            "warden_shadow_disagreements", "Events whose shadow action differs", s.shadow_disagreements
        )
        yield GaugeMetricFamily(
            "warden_shadow_disagreement_rate",
            "Shadow disagreements per shadow-scored event",
            s.shadow_disagreement_rate,
        )
        retrain = GaugeMetricFamily(
            "warden_retrain_last_run_timestamp_seconds",
            "When the last warden retrain run recorded in the registry ended, labelled with its outcome",
            labels=["outcome"],
        )
        if s.retrain_outcome:
            retrain.add_metric([s.retrain_outcome], s.retrain_finished_at)
        yield retrain

    @staticmethod
    def _feedback(s: WorkerStats) -> Iterator[Metric]:
        feedback = CounterMetricFamily("warden_feedback", "Labels received, by outcome", labels=["outcome"])
        feedback.add_metric(["accepted"], s.feedback_accepted)
        feedback.add_metric(["unknown_event"], s.feedback_unknown)
        feedback.add_metric(["duplicate"], s.feedback_duplicates)
        feedback.add_metric(["capped"], s.feedback_capped)
        yield feedback


def exposition(stats: WorkerStats) -> bytes:
    """The Prometheus text exposition of ``stats``."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(stats.registry())
