"""What every command group of the ``warden`` CLI shares: the parser class that turns a mistake into
one line, the exit statuses, argument types, and the settings helpers of the commands that need
running services."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, TypeAlias

from warden.infra.cli import keys
from warden.streams.exceptions import ExitCode, UsageError
from warden.streams.settings import WardenSettings


class Parser(argparse.ArgumentParser):
    """An argument parser whose every error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: What each command group's ``add_parsers`` receives: the ``warden`` subcommands.
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def positive_int(text: str) -> int:
    value = positive(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def counts(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",")]


def with_services(settings: WardenSettings) -> WardenSettings:
    """Fill in the broker and Redis from a running ``warden dev up`` when none are set."""
    from warden.infra.dev import devstack

    redis_set = settings.redis.url is not None or bool(settings.redis.cluster_nodes)
    if settings.kafka.bootstrap_servers is not None and redis_set:
        return settings
    if settings.kafka.bootstrap_servers is None and not redis_set:
        state = devstack.load_state(settings.dev)
        if state is not None:
            return settings.with_services(state.bootstrap_servers, state.redis_url)
    raise UsageError(
        "no broker and Redis configured: run `warden dev up`, or set "
        "WARDEN_KAFKA__BOOTSTRAP_SERVERS and WARDEN_REDIS__URL (or WARDEN_REDIS__CLUSTER_NODES)"
    )


def warn_development(settings: WardenSettings) -> None:
    """One line on stderr when a long-running command starts on public development keys."""
    warning = keys.development_warning(settings)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
