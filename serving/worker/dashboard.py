"""The live dashboard a worker serves: ``GET /dashboard`` (HTML) and ``GET /dashboard.json``.

The page (``dashboard.html`` beside this module) is self-contained: no
script, font or style from anywhere else. It polls ``/dashboard.json`` once
a second. Every figure in that JSON is derived from the same
:class:`~serving.worker.metrics.WorkerStats` that ``GET /metrics`` exposes, so a
figure on the page can be recomputed from a scrape:

===================  ===================================================================
figure               from ``/metrics``
===================  ===================================================================
events in            sum of ``warden_events_in_total``
verdicts by action   ``warden_verdicts_total{action}``
dead letters         sum of ``warden_dead_letters_total``; rate = dead letters / events in
latency p50/p95/p99  ``histogram_quantile`` over ``warden_end_to_end_seconds`` buckets
model version        ``warden_model_info{role="champion"}``
throughput           verdicts per second over the last ``THROUGHPUT_WINDOW_S`` (sampled)
===================  ===================================================================
"""

from __future__ import annotations

import math
from importlib import resources

from warden.serving.worker.metrics import THROUGHPUT_WINDOW_S, WorkerStats

__all__ = ["THROUGHPUT_WINDOW_S", "page", "snapshot"]


def page() -> str:
    """The dashboard's HTML (read from the package)."""
    return resources.files("warden.serving.worker").joinpath("dashboard.html").read_text(encoding="utf-8")


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


def snapshot(stats: WorkerStats) -> dict[str, object]:
    """The figures the dashboard shows, as JSON-ready values."""
    events_in = sum(stats.events_in.values())
    e2e = stats.end_to_end_seconds
    return {
        "state": stats.health_state,
        "reasons": list(stats.health_reasons),
        "model_version": stats.model_version,
        "shadow_version": stats.shadow_version,
        "shadow_disagreement_rate": stats.shadow_disagreement_rate,
        "events_in": events_in,
        "verdicts": dict(stats.actions),
        "verdicts_total": sum(stats.actions.values()),
        "dead_letters": stats.dead_lettered,
        "dead_letter_rate": stats.dead_lettered / events_in if events_in else 0.0,
        "latency_ms": {f"p{q}": _ms(e2e.quantile(q / 100)) for q in (50, 95, 99)},
        "throughput_per_s": round(stats.throughput.per_second(), 3),
        "consumer_lag": stats.total_lag,
        "store_errors": stats.store_failures,
        "uptime_s": round(stats.uptime_s, 1),
    }
