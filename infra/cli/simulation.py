"""``warden simulate``, and the simulator's options that ``train`` and ``evaluate`` share."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from warden.infra.cli.common import (
    Commands,
    non_negative,
    positive,
    positive_int,
    with_services,
)
from warden.streams.exceptions import UsageError
from warden.streams.settings import WardenSettings

if TYPE_CHECKING:
    from warden.streams.sources.simulated_world import SimulationParams

#: The ``warden`` commands this module runs.
COMMANDS = ("simulate",)


def add_parsers(commands: Commands) -> None:
    """``warden simulate``."""
    simulate = commands.add_parser(
        "simulate", help="generate simulated calendar and contacts traffic with labelled abuse campaigns"
    )
    simulation_options(simulate)
    simulate.add_argument("--out", type=Path, metavar="FILE", help="write events with their labels as JSONL")
    simulate.add_argument(
        "--produce",
        action="store_true",
        help="send the events (not the labels) to calendar.events/contacts.events",
    )


def run(args: argparse.Namespace, settings: WardenSettings) -> int:
    """Run one of :data:`COMMANDS`; returns the exit status."""
    return _simulate(args, settings)


def simulation_options(parser: argparse.ArgumentParser) -> None:
    """The simulator's parameters (streams.sources.simulated_world.SimulationParams), for three commands."""
    group = parser.add_argument_group("simulator (calendar and contacts)")
    group.add_argument("--seed", type=int, default=1, help="random seed of the simulated stream (default 1)")
    group.add_argument("--accounts", type=positive_int, default=400, help="accounts in the population")
    group.add_argument("--days", type=positive, default=7.0, help="days of traffic")
    group.add_argument(
        "--start", type=float, default=None, metavar="EPOCH_S", help="first day (default 2026-01-01)"
    )
    group.add_argument("--circle", type=positive_int, default=12, help="average contact-circle size")
    group.add_argument(
        "--invites-per-day", type=positive, default=1.2, help="invites a day of an ordinary account"
    )
    group.add_argument(
        "--cards-per-day", type=positive, default=0.25, help="cards a day of an ordinary account"
    )
    group.add_argument(
        "--campaigns-per-day",
        type=non_negative,
        default=4.0,
        help="abuse campaigns started a day (all types)",
    )
    group.add_argument(
        "--mix",
        default="",
        metavar="TYPE=W,...",
        help="relative weights of the campaign types fresh_invite_spam, compromised_burst, "
        "low_and_slow, card_spam (default 1 each)",
    )


def simulation_params(args: argparse.Namespace) -> SimulationParams:
    from warden.streams.sources.simulated_world import CAMPAIGN_TYPES, DEFAULT_START, SimulationParams

    mix: dict[str, float] = dict.fromkeys(CAMPAIGN_TYPES, 1.0)
    for part in filter(None, (p.strip() for p in args.mix.split(","))):
        name, equals, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise UsageError(f"--mix: {part!r} is not TYPE=WEIGHT") from None
        if not equals:
            raise UsageError(f"--mix: {part!r} is not TYPE=WEIGHT")
    try:
        return SimulationParams(
            seed=args.seed,
            accounts=args.accounts,
            days=args.days,
            start=DEFAULT_START if args.start is None else args.start,
            circle=args.circle,
            invites_per_day=args.invites_per_day,
            cards_per_day=args.cards_per_day,
            campaigns_per_day=args.campaigns_per_day,
            mix=mix,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _simulate(args: argparse.Namespace, settings: WardenSettings) -> int:
    from collections import Counter

    from warden.streams.sources.simulator import simulate

    if args.out is None and not args.produce:
        raise UsageError("say where the events go: --out FILE and/or --produce")
    events = simulate(simulation_params(args))
    if args.out is not None:
        try:
            with args.out.open("w", encoding="utf-8") as out:
                for item in events:
                    record = {"label": item.label, "campaign": item.campaign, "campaign_id": item.campaign_id}
                    out.write(json.dumps({**record, "event": item.event.model_dump()}) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
    if args.produce:
        from warden.streams import broker
        from warden.streams.sources.simulator import produce
        from warden.streams.topics import Topics

        settings = with_services(settings)
        topics = Topics.from_settings(settings.kafka)
        broker.ensure_topics(settings.kafka, topics.all())
        producer = broker.producer(settings.kafka)
        try:
            produce(events, producer, topics)
        finally:
            producer.close()
    counts = Counter((item.event.kind, item.campaign) for item in events)
    for (kind, campaign), n in sorted(counts.items()):
        print(f"{kind:9s} {campaign:18s} {n:7,d}")
    where = [str(args.out)] if args.out is not None else []
    where += [f"{settings.kafka.topic_prefix}calendar.events/contacts.events"] if args.produce else []
    print(f"{len(events):,} events -> {' and '.join(where)}")
    return 0
