"""The health states of a worker, as ``GET /health`` and ``warden_health_state`` report them.

=========  ======  ==============================================================
state      HTTP    when
=========  ======  ==============================================================
starting   503     no partition assigned yet, for less than
                   ``health.unassigned_failing_s`` since start
ready      200     partitions assigned, a champion model loaded, nothing below
degraded   200     still processing, but: the feature store is failing (the worker
                   backs off and retries, keeping its place), consumer lag above
                   ``health.lag_degraded``, the shadow model was refused, or a
                   rebalance has taken its partitions (for less than
                   ``health.unassigned_failing_s``)
failing    503     no partition assigned for ``health.unassigned_failing_s``, no
                   champion model, or an agent has crashed
=========  ======  ==============================================================

A load balancer or readiness probe routes only to 200; a liveness probe may
restart a worker that reports ``failing``. The reasons say which condition
holds; they name settings and counts, never addresses or secrets.
"""

from __future__ import annotations

from typing import Literal

from warden.serving.worker.metrics import WorkerStats
from warden.streams.settings import HealthSettings

State = Literal["starting", "ready", "degraded", "failing"]

#: HTTP status of ``GET /health`` per state.
HTTP_STATUS: dict[str, int] = {"starting": 503, "ready": 200, "degraded": 200, "failing": 503}


def evaluate(stats: WorkerStats, settings: HealthSettings) -> tuple[State, list[str]]:
    """The worker's state and the reasons for it (empty when ready)."""
    failing = []
    if not stats.model_version:
        failing.append("no champion model loaded")
    if stats.crashed_agents:
        failing.append(f"agent crashed: {', '.join(sorted(stats.crashed_agents))}")
    if stats.assigned_partitions == 0 and stats.unassigned_s >= settings.unassigned_failing_s:
        failing.append(f"no partition assigned for {stats.unassigned_s:.0f} s")
    if failing:
        return "failing", failing
    degraded = []
    if stats.assigned_partitions == 0:
        if not stats.started:
            return "starting", ["waiting for a partition assignment"]
        # Assigned before: a rebalance is under way (503 here would flap on every rebalance).
        degraded.append(f"no partition assigned for {stats.unassigned_s:.0f} s (rebalancing)")
    if stats.store_degraded:
        degraded.append(f"feature store unavailable, retrying with backoff ({stats.store_failures} errors)")
    if stats.total_lag > settings.lag_degraded:
        degraded.append(f"consumer lag {stats.total_lag} above {settings.lag_degraded}")
    if stats.shadow_failing:
        degraded.append("shadow model refused at load")
    if degraded:
        return "degraded", degraded
    return "ready", []


def update(stats: WorkerStats, settings: HealthSettings) -> State:
    """Evaluate and store the state on ``stats`` (for /health and /metrics); returns it."""
    state, reasons = evaluate(stats, settings)
    stats.health_state = state
    stats.health_reasons = reasons
    return state
