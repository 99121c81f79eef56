"""The worker's one retry loop for feature-store calls: backoff, store metrics, ``degraded`` health.

A worker never skips input because Redis is down: the call that needs the
store (connecting at start, a batch's aggregates) waits and tries again, and
meanwhile ``WorkerStats.store_degraded`` makes ``GET /health`` report
``degraded`` (:mod:`serving.worker.health`). Each failure counts in
``warden_store_errors_total``, each attempt after a backoff in
``warden_store_retries_total``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, overload

from warden.features.exceptions import StoreUnavailable
from warden.serving.worker.metrics import WorkerStats

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How the loop waits between attempts: ``asyncio.sleep``, not Faust's ``app.sleep``, which in a
#: running worker returned at once (seen: ~500 retries a second); tests pass a recorder.
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """The wait before the first retry, doubled after each failure up to ``max_s``."""

    first_s: float
    max_s: float

    def next(self, delay_s: float) -> float:
        """The wait after one that lasted ``delay_s``."""
        return min(delay_s * 2, self.max_s)


#: Connecting at start: once a second (nothing is waiting on it but the worker's first batch).
CONNECT = Backoff(first_s=1.0, max_s=1.0)
#: A batch's aggregates: a short outage costs a fraction of a second, a long one a try every 5 s.
SERVE = Backoff(first_s=0.1, max_s=5.0)


@overload
async def until_answered(
    operation: Callable[[], Awaitable[T]], stats: WorkerStats, backoff: Backoff, *, sleep: Sleep = ...
) -> T: ...


@overload
async def until_answered(
    operation: Callable[[], Awaitable[T]],
    stats: WorkerStats,
    backoff: Backoff,
    *,
    running: Callable[[], bool],
    sleep: Sleep = ...,
) -> T | None: ...


async def until_answered(
    operation: Callable[[], Awaitable[T]],
    stats: WorkerStats,
    backoff: Backoff,
    *,
    running: Callable[[], bool] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T | None:
    """The answer of ``operation``, called again after each :class:`StoreUnavailable` until it answers.

    Called by the worker's start task (``running`` is the app's ``not
    should_stop``: it returns None, without trying, once the app stops) and
    by the scoring stage for each batch (no ``running``: the batch waits for
    the store, however long). The first failure of an outage and the
    recovery are logged; any error other than :class:`StoreUnavailable`
    passes through.
    """
    delay = backoff.first_s
    while running is None or running():
        try:
            answer = await operation()
        except StoreUnavailable as exc:
            stats.store_failures += 1
            if not stats.store_degraded:
                log.warning("feature store unavailable, retrying: %s", exc)
            stats.store_degraded = True
            await sleep(delay)
            delay = backoff.next(delay)
            stats.store_retries += 1
            continue
        if stats.store_degraded:
            log.warning("feature store available again")
        stats.store_degraded = False
        return answer
    return None
