"""The worker's sampler: consumer lag, agent crashes and the health state, once a second.

Runs as a Faust timer beside the agents, so nothing here is on the per-event
path. Lag per assigned partition is the partition's high watermark (the
offset the next produced record will get) minus the next offset this worker
will process: one past the last record handed to an agent, or the fetch
position before any record was read.

Beside it, :func:`probe_loop_lag` wakes every :data:`LOOP_PROBE_INTERVAL_S`
and records how late it woke: the event loop's lag (invariant 8: no record
may hold the loop for more than 100 ms), exported on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from warden.serving.worker import health
from warden.serving.worker.metrics import WorkerStats
from warden.streams.settings import WardenSettings

log = logging.getLogger(__name__)

#: Seconds between two wake-ups of the loop-lag probe.
LOOP_PROBE_INTERVAL_S = 0.05


async def probe_loop_lag(
    stats: WorkerStats, stopping: Callable[[], bool], interval_s: float = LOOP_PROBE_INTERVAL_S
) -> None:
    """Until ``stopping()``, sleep ``interval_s`` and record how late the loop woke this task.

    The lateness is wall time; the stall is the part of it the loop's thread
    spent on CPU meanwhile (``time.thread_time``), so a machine busy with
    other processes shows as lag without stall, and a record that holds the
    loop shows as both.
    """
    loop = asyncio.get_running_loop()
    while not stopping():
        due = loop.time() + interval_s
        cpu = time.thread_time()
        await asyncio.sleep(interval_s)
        late = max(0.0, loop.time() - due)
        stats.loop_lag.observe(late, min(late, time.thread_time() - cpu))


async def consumer_lag(app: Any) -> dict[tuple[str, int], int]:
    """Records behind the high watermark, per assigned ``(topic, partition)``."""
    consumer = app.consumer
    lag: dict[tuple[str, int], int] = {}
    for tp in sorted(consumer.assignment()):
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue  # nothing fetched from this partition yet
        last_read = consumer._read_offset.get(tp)
        following = last_read + 1 if last_read is not None else await consumer.position(tp)
        if following is None:
            continue
        lag[(tp.topic, tp.partition)] = max(0, int(highwater) - int(following))
    return lag


def crashed_agents(app: Any) -> list[str]:
    """Names of the agents that have an actor which crashed and was not restarted."""
    return [name for name, agent in app.agents.items() if any(actor.crashed for actor in agent._actors)]


def register(app: Any, settings: WardenSettings, stats: WorkerStats) -> None:
    """Declare the sampler on ``app``."""
    started = time.monotonic()
    last_assigned = started
    interval = settings.health.sample_interval_s
    # Nothing scored at start: Faust starts timers only once the worker has joined its
    # group, and a first burst scored before the first tick would otherwise never show.
    stats.throughput.sample(stats.scored, started)

    async def sample() -> None:
        nonlocal last_assigned
        now = time.monotonic()
        stats.uptime_s = now - started
        stats.throughput.sample(stats.scored, now)
        try:
            # Bounded: a position lookup that waits on the broker must not stall the
            # sampler, or the throughput and health figures would freeze with it.
            stats.consumer_lag = await asyncio.wait_for(consumer_lag(app), timeout=max(1.0, interval))
            stats.assigned_partitions = len(app.consumer.assignment())
        except Exception as exc:  # the sampler must never stop the worker; the figures just age
            log.debug("cannot sample consumer lag: %s", type(exc).__name__)
        if stats.assigned_partitions:
            last_assigned = now
        stats.unassigned_s = now - last_assigned
        stats.crashed_agents = crashed_agents(app)
        before = stats.health_state
        state = health.update(stats, settings.health)
        if state != before:
            log.warning("health %s -> %s: %s", before, state, "; ".join(stats.health_reasons) or "ok")

    app.timer(interval)(sample)

    async def probe() -> None:
        await probe_loop_lag(stats, lambda: bool(app.should_stop))

    app.task(probe)
