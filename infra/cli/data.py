"""The commands that move data onto the topics: ``corpus fetch``, ``replay`` and ``feedback``."""

from __future__ import annotations

import argparse

from warden.infra.cli.common import (
    Commands,
    positive,
    positive_int,
    with_services,
)
from warden.streams.settings import WardenSettings

#: The ``warden`` commands this module runs.
COMMANDS = ("corpus", "replay", "feedback")


def add_parsers(commands: Commands) -> None:
    """``warden corpus``, ``warden replay`` and ``warden feedback``."""
    replay = commands.add_parser(
        "replay",
        help="send corpus mails to mail.events in the order they were received, each stamped with that "
        "time (workers use it with WARDEN_INGEST__TRUST_PRODUCER_EVENT_TIME=true)",
    )
    replay.add_argument(
        "--collection",
        choices=("first-half", "second-half", "all"),
        default="second-half",
        help="which mails of the forward split (all mails by time of receipt; the first half trains, "
        "the second half tests; default: second-half)",
    )
    replay.add_argument(
        "--rate",
        type=positive,
        metavar="EVENTS_PER_S",
        help="events per second (default: as fast as possible)",
    )
    replay.add_argument("--limit", type=positive_int, metavar="N", help="send the first N only")

    feedback = commands.add_parser("feedback", help="send labels for event ids to the feedback topic")
    feedback.add_argument("--event-id", help="label one event (with --label, --source, --reporter)")
    feedback.add_argument("--label", choices=("abuse", "legit"))
    feedback.add_argument(
        "--source", choices=("user_report", "ops_review", "appeal", "auto"), default="ops_review"
    )
    feedback.add_argument("--reporter", default="cli", help="who labels (pseudonymised by the worker)")
    feedback.add_argument("--reason", help="an optional note")
    feedback.add_argument("--file", help="labels from a CSV (with a header) or JSONL file, or - for stdin")

    corpus = commands.add_parser("corpus", help="fetch the SpamAssassin corpus into the cache")
    corpus.add_argument("action", choices=("fetch",))


def run(args: argparse.Namespace, settings: WardenSettings) -> int:
    """Run one of :data:`COMMANDS`; returns the exit status."""
    if args.command == "corpus":
        from warden.streams.sources import corpus

        print(corpus.fetch(settings.corpus))
        return 0
    if args.command == "replay":
        return _replay(args, with_services(settings))
    return _feedback(args, with_services(settings))


def _replay(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.streams import broker
    from warden.streams.sources import corpus
    from warden.streams.sources.replay import replay
    from warden.streams.topics import Topics

    part: corpus.Part = args.collection  # argparse allowed only the split's part names
    mails = corpus.load(settings.corpus, part)[: args.limit]
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    producer = broker.producer(settings.kafka)
    try:
        sent = replay(
            mails,
            producer,
            topics.mail_events,
            rate=args.rate,
            progress=lambda i, n: print(f"\rsent {i:,}/{n:,}", end="", flush=True),
        )
    finally:
        producer.close()
    print(f"\nreplayed {sent:,} mails to {topics.mail_events.name}")
    return 0


def _feedback(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.streams.sources import feedback as feedback_source

    records = feedback_source.read(args)
    sent = feedback_source.send(settings, records)
    print(f"sent {sent:,} labels to {settings.kafka.topic_prefix}feedback")
    return 0
