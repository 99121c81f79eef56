"""The commands that run Warden's processes: ``demo``, ``worker`` and ``dev {up,down,status}``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from warden.infra.cli.common import (
    Commands,
    positive,
    warn_development,
    with_services,
)
from warden.streams.exceptions import ExitCode
from warden.streams.settings import WardenSettings

#: The ``warden`` commands this module runs.
COMMANDS = ("demo", "worker", "dev")


def add_parsers(commands: Commands) -> None:
    """``warden demo``, ``warden worker`` and ``warden dev``."""
    demo = commands.add_parser("demo", help="run the whole pipeline once and print a summary")
    demo.add_argument(
        "--rate", type=positive, metavar="EVENTS_PER_S", help="replay rate (default: as fast as possible)"
    )
    demo.add_argument(
        "--report",
        type=Path,
        default=Path(".warden/demo/summary.json"),
        help="where to write the JSON summary",
    )

    commands.add_parser("worker", help="run a stream-processing worker until stopped")

    dev = commands.add_parser("dev", help="start or stop the embedded broker and Redis")
    dev.add_argument("action", choices=("up", "down", "status"))


def run(args: argparse.Namespace, settings: WardenSettings) -> int:
    """Run one of :data:`COMMANDS`; returns the exit status."""
    if args.command == "demo":
        from warden.infra.demo import run as demo

        warn_development(settings)
        summary = demo.run(settings, dict(os.environ), sys.stdout, rate=args.rate, report=args.report)
        return (
            0 if summary["missing"] == 0 and summary.get("privacy_audit_passed", True) else ExitCode.FAILURE
        )
    if args.command == "worker":
        from warden.serving.worker.run import run as run_worker

        settings = with_services(settings)
        warn_development(settings)
        run_worker(settings)
        return 0
    return _dev(args, settings)


def _dev(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.infra.dev import devstack

    if args.action == "up":
        running = devstack.load_state(settings.dev)
        if running is not None:
            print(f"already running: broker {running.bootstrap_servers}, redis {running.redis_url}")
            return 0
        stack = devstack.DevStack(settings.dev, attached=False)
        state = stack.start()
        stack.save()
        print(f"export WARDEN_KAFKA__BOOTSTRAP_SERVERS={state.bootstrap_servers}")
        print(f"export WARDEN_REDIS__URL={state.redis_url}")
        return 0
    if args.action == "down":
        stopped = devstack.stop_saved(settings.dev)
        print("stopped the dev stack" if stopped else "no dev stack was running")
        return 0
    status = devstack.load_state(settings.dev)
    if status is None:
        print("no dev stack is running")
        return ExitCode.FAILURE
    print(f"broker {status.bootstrap_servers}, redis {status.redis_url}")
    return 0
