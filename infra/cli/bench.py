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
from warden.streams.exceptions import UsageError
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
        "--page",
        type=Path,
        metavar="FILE",
        help="with --only hostile: also write its figures as a Markdown page (docs/hostile-input.md)",
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
    if args.workers or args.memory:
        return _bench_scale_out(args, settings)
    if args.latency:
        from warden.infra.bench import pipeline as bench_pipeline

        bench_pipeline.latency_curve(settings, sys.stdout, args.latency)
        return 0
    from warden.infra.bench import run as bench

    sections = args.only or bench.SECTIONS
    if args.page is not None and "hostile" not in sections:
        raise UsageError("--page writes the hostile section's page: run it with --only hostile")
    bench.run(settings, sys.stdout, sections, args.batches, hostile_page=args.page)
    return 0


def _bench_scale_out(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.infra.bench import memory as bench_memory
    from warden.infra.bench import scaling as bench_scaling

    if args.workers:
        bench_scaling.run(settings, sys.stdout, args.workers)
    if args.memory:
        bench_memory.run(settings, sys.stdout)
    return 0
