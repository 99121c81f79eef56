"""The ``warden dead-letters`` commands: find dead-lettered records and send them again.

Kept apart from :mod:`infra.cli.main` (which only registers and dispatches them).
``replay`` sends each record whose dead letter's reason contains ``--reason``
back to the topic it was read from (:mod:`streams.dead_letters`): after a
model is promoted, ``--reason "no mail model"`` scores the mails that came
while there was none. Letters naming a topic a replay may not write
(:func:`streams.dead_letters.replayable`) are refused, each with its reason.
It exits 1 if some records could not be had or were refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from warden.streams.settings import WardenSettings

#: Fills in the broker and Redis of a running dev stack (the CLI's helper).
WithServices = Callable[[WardenSettings], WardenSettings]


def add_parsers(
    commands: argparse._SubParsersAction[Any], parser_class: type[argparse.ArgumentParser]
) -> None:
    """``warden dead-letters {list,replay}``."""
    letters = commands.add_parser("dead-letters", help="list dead-lettered records, or send them again")
    actions = letters.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    for name, help_text in (
        ("list", "count dead letters whose reason contains TEXT, and how many records can be had"),
        ("replay", "send the records of dead letters whose reason contains TEXT to their topics again"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--reason", required=True, metavar="TEXT", help='part of the reason, e.g. "no mail model"'
        )


def run(args: argparse.Namespace, settings: WardenSettings, with_services: WithServices, out: TextIO) -> int:
    """Run ``warden dead-letters ACTION``; returns the exit code (1 if some records cannot be had)."""
    from collections import Counter

    from warden.streams import dead_letters
    from warden.streams.topics import Topics

    settings = with_services(settings)
    topics = Topics.from_settings(settings.kafka)
    letters = dead_letters.read_letters(settings.kafka, topics.dead_letters, args.reason)
    found, missing = dead_letters.originals(settings.kafka, letters)
    found, refused = dead_letters.replayable(settings.kafka, found)
    if args.action == "list":
        for reason, count in Counter(letter.reason for letter in letters).most_common():
            print(f"{count:>8,}  {reason}", file=out)
    else:
        dead_letters.replay(settings.kafka, found)
    from_topic = sum(record.found_in == "topic" for record in found)
    verb = "can be replayed" if args.action == "list" else "replayed"
    print(
        f"{len(letters):,} dead letters; {len(found):,} records {verb} "
        f"({from_topic:,} read at their position, {len(found) - from_topic:,} from the letter); "
        f"{len(missing):,} cannot be had; {len(refused):,} refused",
        file=out,
    )
    for gone in missing[:20] + refused[:20]:
        source = gone.letter.source
        print(f"  {source.topic[:80]}/{source.partition}@{source.offset}: {gone.why}", file=out)
    return 1 if missing or refused else 0
