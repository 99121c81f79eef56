"""The ``warden`` command line: the entry point that builds the settings and dispatches a command
to the module of its group (:mod:`infra.cli.stack`, :mod:`infra.cli.data`, ...).

Every mistake (a bad argument, a bad setting, an unreachable service, a
refused model) ends in one line on stderr and a non-zero exit status:
2 for usage and settings, 1 for everything that failed at run time.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from warden.infra.cli import (
    bench,
    data,
    dead_letters,
    keys,
    models,
    privacy,
    review,
    secret_handoff,
    simulation,
    stack,
    training,
)
from warden.infra.cli.common import (
    Parser,
    non_negative_int,
    positive,
    positive_int,
    with_services,
)
from warden.streams.exceptions import ExitCode, SettingsError, UsageError, WardenError
from warden.streams.settings import WardenSettings, load_settings

#: The command groups, in the order ``warden --help`` lists their commands.
_GROUPS = (stack, data, training, simulation, bench, review, models)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="warden", description="Real-time abuse detection for mail, calendar and contacts events."
    )
    parser.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help="TOML settings file (environment variables WARDEN_* override it)",
    )
    parser.add_argument(
        "--secrets-fd",
        type=non_negative_int,
        metavar="FD",
        help="read secret settings (JSON) from this inherited descriptor (infra.cli.secret_handoff)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for group in _GROUPS:
        group.add_parsers(commands)
    keys.add_parsers(commands)
    privacy.add_parsers(commands, Parser, positive, positive_int)
    dead_letters.add_parsers(commands, Parser)
    return parser


#: What runs a command, given its parsed arguments and the settings; returns the exit status.
Runner = Callable[[argparse.Namespace, WardenSettings], int]

#: Every command's runner: the command groups' ``run``, and the commands of the older modules.
_RUNNERS: dict[str, Runner] = {
    **dict.fromkeys(stack.COMMANDS, stack.run),
    **dict.fromkeys(data.COMMANDS, data.run),
    **dict.fromkeys(training.COMMANDS, training.run),
    **dict.fromkeys(simulation.COMMANDS, simulation.run),
    **dict.fromkeys(bench.COMMANDS, bench.run),
    **dict.fromkeys(review.COMMANDS, review.run),
    **dict.fromkeys(models.COMMANDS, models.run),
    "keygen": lambda args, settings: keys.keygen(sys.stdout),
    "privacy": lambda args, settings: privacy.run(args, settings, with_services),
    "report": lambda args, settings: privacy.run(args, settings, with_services),
    "dead-letters": lambda args, settings: dead_letters.run(args, settings, with_services, sys.stdout),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``warden`` script."""
    args = _parser().parse_args(argv)
    try:
        file = args.settings
        if file is None and os.environ.get("WARDEN_SETTINGS_FILE"):
            file = Path(os.environ["WARDEN_SETTINGS_FILE"])
        secrets = {} if args.secrets_fd is None else secret_handoff.read_secrets(args.secrets_fd)
        settings = load_settings(file, **secrets)
        return _RUNNERS[args.command](args, settings)
    except WardenError as exc:  # every floor's errors derive from the one root
        print(f"warden: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE if isinstance(exc, SettingsError | UsageError) else ExitCode.FAILURE
    except KeyboardInterrupt:
        print("warden: interrupted", file=sys.stderr)
        return 130
