"""``warden bench``: the benchmarks of :mod:`infra.bench`, printed, never asserted."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from warden.infra.cli.common import (
    Commands,
    counts,
    positive_int,
)
from warden.streams.settings import WardenSettings

#: The ``warden`` commands this module runs.
COMMANDS = ("bench",)


def add_parsers(commands: Commands) -> None:
    """``warden bench``."""
    bench = commands.add_parser("bench", help="measure and print performance figures (one run)")
    bench.add_argument(
        "--only",
        choices=("scorer", "store", "pipeline", "hostile"),
        action="append",
        help="run only this section (repeatable; default: all)",
    )
    bench.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write each section's figures, date and machine to FILE as JSON (the docs' benchmark "
        "pages are rendered from such files in docs/bench-results/)",
    )
    bench.add_argument(
        "--batches", type=positive_int, default=300, metavar="N", help="micro-batches to measure per section"
    )
    bench.add_argument(
        "--workers",
        type=counts,
        metavar="N,M",
        help="instead: throughput of groups of N, M worker processes side by side, with the ratio",
    )
    bench.add_argument(
        "--latency",
        type=counts,
        metavar="R1,R2",
        help="instead: one worker's end-to-end p50/p99 latency and CPU per event at each of these "
        "paced rates (events/s)",
    )
    bench.add_argument(
        "--memory",
        action="store_true",
        help="instead: Redis memory and topic bytes per event and per entity over a corpus replay",
    )


def run(args: argparse.Namespace, settings: WardenSettings) -> int:
    """Run one of :data:`COMMANDS`; returns the exit status."""
    import time

    from warden.infra.bench import memory as bench_memory
    from warden.infra.bench import pipeline as bench_pipeline
    from warden.infra.bench import run as bench
    from warden.infra.bench import scaling as bench_scaling
    from warden.infra.bench.results import Recorder

    recorder = None if args.json is None else Recorder(args.json)
    started = time.time()
    if args.workers:
        figures = bench_scaling.run(settings, sys.stdout, args.workers)
        if recorder is not None:
            recorder.add("workers", figures, started, {"workers": args.workers})
    if args.memory:
        started = time.time()
        figures = bench_memory.run(settings, sys.stdout)
        if recorder is not None:
            recorder.add("memory", figures, started)
    if args.latency:
        started = time.time()
        figures = bench_pipeline.latency_curve(settings, sys.stdout, args.latency)
        if recorder is not None:
            recorder.add("latency", figures, started, {"rates": args.latency})
    if not (args.workers or args.memory or args.latency):
        bench.run(settings, sys.stdout, args.only or bench.SECTIONS, args.batches, recorder)
    return 0
