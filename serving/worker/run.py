"""Runs one stream-processing worker: tunes the process, builds its services and hands them to Faust."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import faust

from warden.serving.worker.app import create_app
from warden.serving.worker.services import build_services
from warden.streams.broker import ensure_topics
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics


def without_spinner(worker: faust.Worker) -> None:
    """Drop Faust's terminal spinner, which would set the root logger to DEBUG.

    With a spinner (every ``faust.Worker`` has one, ``quiet`` or not), Faust
    hands the root logger a handler at DEBUG so the spinner turns on every
    record: each ``log.debug`` in aiokafka (one per message produced, one per
    response frame) then builds a ``LogRecord`` that no handler prints; ~4% of
    a worker's event loop in a profile. Without it the root logger stays at
    ``log_level``.
    """
    worker.spinner = None


#: Allocations from this size up are mapped on their own and given back to the system when freed.
LARGE_ALLOCATION_BYTES = 4 * 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_large_allocations() -> bool:
    """Have glibc map every allocation of :data:`LARGE_ALLOCATION_BYTES` or more on its own.

    By default glibc raises that threshold each time such a block is freed,
    up to 32 MiB: after a few records of megabytes (hostile payloads, 100k
    recipients) later ones come from the heap and stay in the worker's RSS,
    fragmented. A fixed threshold keeps the RSS of a worker that has seen
    10 MB records near its baseline (``tests/integration/test_hostile_input.py``).
    Returns False where the C library is not glibc (nothing is changed).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES))


def freeze_startup_objects() -> None:
    """Leave everything built so far out of the garbage collector's full collections.

    A started worker holds ~200,000 long-lived container objects (the
    libraries, the models, the suffix list); a full collection walked them
    all, ~100-110 ms with the event loop stopped, and every event in flight
    waited for it. After a freeze a full collection walks only what was made
    since: 6-10 ms, timed with ``gc.callbacks`` in a worker under load.
    Frozen objects are still freed when their last reference goes (a model
    replaced by a hot swap); only reference cycles among them stay.
    """
    gc.collect()
    gc.freeze()


def run(settings: WardenSettings) -> None:
    """Run a worker until SIGTERM or Ctrl-C (blocks). Creates missing topics first."""
    return_large_allocations()
    services = build_services(settings)
    ensure_topics(settings.kafka, Topics.from_settings(settings.kafka).all())
    app = create_app(settings, services)
    worker = faust.Worker(app, loglevel=settings.worker.log_level, quiet=True)
    without_spinner(worker)
    freeze_startup_objects()
    worker.execute_from_commandline()
