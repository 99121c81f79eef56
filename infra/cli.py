"""The ``warden`` command line: the entry point that builds the settings.

Every mistake (a bad argument, a bad setting, an unreachable service, a
refused model) ends in one line on stderr and a non-zero exit status:
2 for usage and settings, 1 for everything that failed at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from warden.features.exceptions import FeaturesError
from warden.infra import keys_cli, secret_handoff
from warden.infra.exceptions import InfraError, SettingsError, UsageError
from warden.infra.settings import WardenSettings, load_settings
from warden.models.exceptions import ModelsError
from warden.models.registry import Registry
from warden.serving.exceptions import ServingError
from warden.streams.exceptions import StreamsError

if TYPE_CHECKING:
    from warden.streams.simulator import SimulationParams

EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        type=_non_negative_int,
        metavar="FD",
        help="read secret settings (JSON) from this inherited descriptor (infra.secret_handoff)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    demo = commands.add_parser("demo", help="run the whole pipeline once and print a summary")
    demo.add_argument(
        "--rate", type=_positive, metavar="EVENTS_PER_S", help="replay rate (default: as fast as possible)"
    )
    demo.add_argument(
        "--report",
        type=Path,
        default=Path(".warden/demo/summary.json"),
        help="where to write the JSON summary",
    )

    commands.add_parser("worker", help="run a stream-processing worker until stopped")

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
        type=_positive,
        metavar="EVENTS_PER_S",
        help="events per second (default: as fast as possible)",
    )
    replay.add_argument("--limit", type=_positive_int, metavar="N", help="send the first N only")

    train = commands.add_parser("train", help="train, check and register a model on the corpus")
    train.add_argument(
        "--collection",
        choices=("first-half", "all"),
        default="first-half",
        help="corpus mails to train on: the forward split's first half by time of receipt (the "
        "window `warden evaluate` measures; default) or every mail",
    )
    train.add_argument("--no-promote", action="store_true", help="register without promoting")
    train.add_argument(
        "--kind",
        choices=("mail", "calendar", "contacts"),
        default="mail",
        help="which model: mail (from the corpus) or calendar/contacts (from the simulator)",
    )
    _simulation_options(train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate on the corpus (static and online protocols) and write a report"
    )
    evaluate.add_argument(
        "--protocol",
        choices=("static", "online", "both"),
        default="both",
        help="static: train on the first half of the mails by time of receipt, test on the second; "
        "online: every mail in that order with delayed labels and periodic retraining",
    )
    evaluate.add_argument(
        "--peers",
        action="store_true",
        help="static protocol: also train and score bogofilter, SpamAssassin and Rspamd on the same split",
    )
    evaluate.add_argument(
        "--out",
        type=Path,
        default=Path(".warden/evaluation"),
        help="folder for report.html, the figures and evaluation.json",
    )
    evaluate.add_argument(
        "--retrain-every",
        type=_positive_int,
        default=500,
        metavar="N",
        help="online protocol: retrain after every N new labels",
    )
    evaluate.add_argument(
        "--label-delay",
        type=_non_negative_int,
        default=100,
        metavar="N",
        help="online protocol: a label arrives N mails after its verdict",
    )
    evaluate.add_argument(
        "--kind",
        choices=("mail", "calendar", "contacts"),
        default="mail",
        help="mail: the corpus protocols; calendar/contacts: train on one simulated seed, test on another",
    )
    evaluate.add_argument(
        "--test-seed", type=int, default=2, metavar="N", help="calendar/contacts: seed of the test stream"
    )
    evaluate.add_argument(
        "--hold-out-each",
        action="store_true",
        help="calendar/contacts: also train once without each campaign type and report recall on it",
    )
    _simulation_options(evaluate)
    evaluate.add_argument(
        "--bootstrap",
        type=_non_negative_int,
        default=500,
        metavar="N",
        help="bootstrap resamples for confidence intervals (0: none)",
    )

    simulate = commands.add_parser(
        "simulate", help="generate simulated calendar and contacts traffic with labelled abuse campaigns"
    )
    _simulation_options(simulate)
    simulate.add_argument("--out", type=Path, metavar="FILE", help="write events with their labels as JSONL")
    simulate.add_argument(
        "--produce",
        action="store_true",
        help="send the events (not the labels) to calendar.events/contacts.events",
    )

    feedback = commands.add_parser("feedback", help="send labels for event ids to the feedback topic")
    feedback.add_argument("--event-id", help="label one event (with --label, --source, --reporter)")
    feedback.add_argument("--label", choices=("abuse", "legit"))
    feedback.add_argument(
        "--source", choices=("user_report", "ops_review", "appeal", "auto"), default="ops_review"
    )
    feedback.add_argument("--reporter", default="cli", help="who labels (pseudonymised by the worker)")
    feedback.add_argument("--reason", help="an optional note")
    feedback.add_argument("--file", help="labels from a CSV (with a header) or JSONL file, or - for stdin")

    retrain = commands.add_parser(
        "retrain",
        help="train on training-examples, gate against the champion, promote if better "
        "(exit 0 promoted or unchanged, 3 not promoted, 4 too little data, 5 locked, 1 failure)",
    )
    retrain.add_argument("--since", type=float, metavar="EPOCH_S", help="labels given at or after this time")
    retrain.add_argument("--until", type=float, metavar="EPOCH_S", help="labels given before this time")
    retrain.add_argument("--min-examples", type=_positive_int, default=200, metavar="N")

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
        "--batches", type=_positive_int, default=300, metavar="N", help="micro-batches to measure per section"
    )
    bench.add_argument(
        "--workers",
        type=_counts,
        metavar="N,M",
        help="instead: throughput of groups of N, M worker processes side by side, with the ratio",
    )
    bench.add_argument(
        "--latency",
        type=_counts,
        metavar="R1,R2",
        help="instead: one worker's end-to-end p50/p99 latency and CPU per event at each of these "
        "paced rates (events/s)",
    )
    bench.add_argument(
        "--memory",
        action="store_true",
        help="instead: Redis memory and topic bytes per event and per entity over a corpus replay",
    )

    _review_parser(commands)

    models = commands.add_parser("models", help="list, promote or roll back model versions")
    models.add_argument(
        "--kind",
        choices=("mail", "calendar", "contacts"),
        default="mail",
        help="whose models (calendar and contacts have registries of their own; shadows are mail only)",
    )
    models_commands = models.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    models_commands.required = True
    models_commands.add_parser("list", help="registered versions, current marked")
    promote = models_commands.add_parser("promote", help="make a version current")
    promote.add_argument("version")
    models_commands.add_parser("rollback", help="return to the previously promoted version")
    show = models_commands.add_parser("show", help="a version's manifest (default: the current one)")
    show.add_argument("version", nargs="?")
    shadow = models_commands.add_parser(
        "shadow", help="score a version beside the champion, never acting on it"
    )
    shadow.add_argument("version", nargs="?", help="the version to shadow")
    shadow.add_argument("--clear", action="store_true", help="stop shadowing")
    models_commands.add_parser("compare", help="champion vs shadow on the logged traffic (feature-log)")
    keys_cli.add_models_parser(models_commands)
    keys_cli.add_parsers(commands)

    corpus = commands.add_parser("corpus", help="fetch the SpamAssassin corpus into the cache")
    corpus.add_argument("action", choices=("fetch",))

    dev = commands.add_parser("dev", help="start or stop the embedded broker and Redis")
    dev.add_argument("action", choices=("up", "down", "status"))
    from warden.infra import dead_letters_cli, privacy_cli

    privacy_cli.add_parsers(commands, _Parser, _positive, _positive_int)
    dead_letters_cli.add_parsers(commands, _Parser)
    return parser


def _simulation_options(parser: argparse.ArgumentParser) -> None:
    """The simulator's parameters (streams.simulator.SimulationParams), shared by three commands."""
    group = parser.add_argument_group("simulator (calendar and contacts)")
    group.add_argument("--seed", type=int, default=1, help="random seed of the simulated stream (default 1)")
    group.add_argument("--accounts", type=_positive_int, default=400, help="accounts in the population")
    group.add_argument("--days", type=_positive, default=7.0, help="days of traffic")
    group.add_argument(
        "--start", type=float, default=None, metavar="EPOCH_S", help="first day (default 2026-01-01)"
    )
    group.add_argument("--circle", type=_positive_int, default=12, help="average contact-circle size")
    group.add_argument(
        "--invites-per-day", type=_positive, default=1.2, help="invites a day of an ordinary account"
    )
    group.add_argument(
        "--cards-per-day", type=_positive, default=0.25, help="cards a day of an ordinary account"
    )
    group.add_argument(
        "--campaigns-per-day",
        type=_non_negative,
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


def _simulation_params(args: argparse.Namespace) -> SimulationParams:
    from warden.streams.simulator import CAMPAIGN_TYPES, DEFAULT_START, SimulationParams

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


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _review_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    review = commands.add_parser(
        "review", help="the top of the ops review queue; label a group or event; measure the ranking"
    )
    review.add_argument("--top", type=_positive_int, default=20, metavar="N", help="groups to list")
    review.add_argument("--json", action="store_true", help="print JSON for tools instead of a table")
    review.add_argument(
        "--measure",
        action="store_true",
        help="simulate review budgets on the corpus and campaigns; compare rankings (no services needed)",
    )
    review.add_argument(
        "--budget", type=_positive_int, action="append", metavar="N", help="--measure: reviews per day"
    )
    review.add_argument("--days", type=_positive_int, default=6, metavar="N", help="--measure: days")
    review.add_argument(
        "--source",
        default="mail",
        metavar="NAME",
        help="--measure: event source: mail (corpus and campaign waves) or calendar/contacts (simulator)",
    )
    review.add_argument("--seed", type=int, default=7, help="--measure: seed of the random strategy")
    review.add_argument(
        "--fit-ranker",
        type=Path,
        metavar="FILE",
        help="fit the ranking model on the logged feedback (training-examples) and write it to FILE",
    )
    actions = review.add_subparsers(dest="review_action", metavar="ACTION", parser_class=_Parser)
    label = actions.add_parser("label", help="label a group (every member event) or one event")
    label.add_argument("target", help="a group id (from the list) or an event id")
    label.add_argument("label", choices=("spam", "ham", "abuse", "legit"))
    label.add_argument("--reporter", default="ops", help="operator id (pseudonymised by the worker)")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _positive_int(text: str) -> int:
    value = _positive(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _counts(text: str) -> list[int]:
    return [_positive_int(part) for part in text.split(",")]


def _bench_scale_out(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.infra import bench_memory, bench_scaling

    if args.workers:
        bench_scaling.run(settings, sys.stdout, args.workers)
    if args.memory:
        bench_memory.run(settings, sys.stdout)
    return 0


def _with_services(settings: WardenSettings) -> WardenSettings:
    """Fill in the broker and Redis from a running ``warden dev up`` when none are set."""
    from warden.infra import devstack

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


def _run(args: argparse.Namespace, settings: WardenSettings) -> int:
    command = args.command
    if command == "demo":
        from warden.infra import demo

        _warn_development(settings)
        summary = demo.run(settings, dict(os.environ), sys.stdout, rate=args.rate, report=args.report)
        return 0 if summary["missing"] == 0 and summary.get("privacy_audit_passed", True) else EXIT_FAILURE
    if command == "worker":
        from warden.streams import worker

        settings = _with_services(settings)
        _warn_development(settings)
        worker.run(settings)
        return 0
    if command == "replay":
        return _replay(args, _with_services(settings))
    if command == "train" and args.kind != "mail":
        return _train_simulated(args, settings)
    if command == "simulate":
        return _simulate(args, settings)
    if command == "train":
        from warden.models.train import train_from_corpus
        from warden.streams import corpus

        part = corpus.FIRST_HALF if args.collection == "first-half" else corpus.ALL
        _warn_development(settings)
        manifest = train_from_corpus(settings, part, promote=not args.no_promote)
        print(
            json.dumps(
                {
                    "version": manifest.version,
                    "promoted": not args.no_promote,
                    "metrics": manifest.metrics,
                    "thresholds": manifest.thresholds.model_dump(),
                    "parity_max_abs_diff": manifest.parity.max_abs_diff,
                },
                indent=2,
            )
        )
        return 0
    if command == "feedback":
        return _feedback(args, _with_services(settings))
    if command == "retrain":
        return _retrain(args, _with_services(settings))
    if command == "bench" and (args.workers or args.memory):
        return _bench_scale_out(args, settings)
    if command == "bench" and args.latency:
        from warden.infra import bench_pipeline

        bench_pipeline.latency_curve(settings, sys.stdout, args.latency)
        return 0
    if command == "bench":
        from warden.infra import bench

        sections = args.only or bench.SECTIONS
        if args.page is not None and "hostile" not in sections:
            raise UsageError("--page writes the hostile section's page: run it with --only hostile")
        bench.run(settings, sys.stdout, sections, args.batches, hostile_page=args.page)
        return 0
    if command == "evaluate":
        return _evaluate(args, settings)
    if command == "review":
        return _review(args, settings)
    if command == "models":
        return _models(args, settings)
    if command == "corpus":
        from warden.streams import corpus

        print(corpus.fetch(settings.corpus))
        return 0
    if command == "dev":
        return _dev(args, settings)
    if command == "keygen":
        return keys_cli.keygen(sys.stdout)
    if command in ("privacy", "report"):
        from warden.infra import privacy_cli

        return privacy_cli.run(args, settings, _with_services)
    if command == "dead-letters":
        from warden.infra import dead_letters_cli

        return dead_letters_cli.run(args, settings, _with_services, sys.stdout)
    raise UsageError(f"unknown command {command}")


def _replay(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.streams import broker, corpus
    from warden.streams.replay import replay
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
    from warden.streams import feedback_source

    records = feedback_source.read(args)
    sent = feedback_source.send(settings, records)
    print(f"sent {sent:,} labels to {settings.kafka.topic_prefix}feedback")
    return 0


def _warn_development(settings: WardenSettings) -> None:
    """One line on stderr when a long-running command starts on public development keys."""
    warning = keys_cli.development_warning(settings)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)


def _retrain(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.models import retrain

    _warn_development(settings)
    try:
        result = retrain.retrain(settings, args.since, args.until, args.min_examples)
    except retrain.RetrainLocked as exc:
        print(f"warden: error: {exc}", file=sys.stderr)
        return retrain.EXIT_LOCKED
    if result.outcome == "promoted":
        _announce(settings, "promote", result.version)
    if result.reason is not None:
        print(f"warden: retrain: {result.reason}", file=sys.stderr)
    else:
        print(retrain.gate_line(result))
    print(retrain.summary(result))
    return retrain.EXIT_CODES[result.outcome]


def _train_simulated(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.models.simulated import train_simulated

    manifest = train_simulated(settings, args.kind, _simulation_params(args), promote=not args.no_promote)
    print(
        json.dumps(
            {
                "kind": manifest.kind,
                "version": manifest.version,
                "promoted": not args.no_promote,
                "data": manifest.data.source,
                "metrics": manifest.metrics,
                "thresholds": manifest.thresholds.model_dump(),
                "parity_max_abs_diff": manifest.parity.max_abs_diff,
            },
            indent=2,
        )
    )
    return 0


def _simulate(args: argparse.Namespace, settings: WardenSettings) -> int:
    from collections import Counter

    from warden.streams.simulator import simulate

    if args.out is None and not args.produce:
        raise UsageError("say where the events go: --out FILE and/or --produce")
    events = simulate(_simulation_params(args))
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
        from warden.streams.simulator import produce
        from warden.streams.topics import Topics

        settings = _with_services(settings)
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


def _review(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.infra import review_cli

    if args.review_action == "label":
        review_cli.label(_with_services(settings), args.target, args.label, args.reporter, sys.stdout)
        return 0
    if args.fit_ranker is not None:
        review_cli.fit_ranker(_with_services(settings), args.fit_ranker, sys.stdout)
        return 0
    if args.measure:
        from warden.infra import review_measure

        review_measure.run(
            settings, sys.stdout, args.source, tuple(args.budget or (25, 100)), args.days, args.seed
        )
        return 0
    review_cli.show(_with_services(settings), args.top, args.json, sys.stdout)
    return 0


def _evaluate(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.models.evaluate import evaluate

    if args.kind != "mail":
        if args.peers:
            raise UsageError("--peers compares mail filters: it needs --kind mail")
        from warden.models.simulated import evaluate_simulated

        try:
            evaluation = evaluate_simulated(
                settings,
                args.kind,
                _simulation_params(args),
                args.test_seed,
                hold_out_each=args.hold_out_each,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print("\n".join(evaluation.lines()))
        return 0

    protocols = ("static", "online") if args.protocol == "both" else (args.protocol,)
    if args.peers and "static" not in protocols:
        raise UsageError("--peers runs on the static protocol: use --protocol static or both")
    figures = evaluate(
        settings,
        args.out,
        protocols,
        args.retrain_every,
        args.label_delay,
        args.bootstrap,
        with_peers=args.peers,
    )
    for protocol, models in figures.items():
        print(f"== {protocol} ==")
        for model, values in models.items():
            shown = "  ".join(f"{k}={v:.4f}" for k, v in values.items())
            print(f"{model:14s} {shown}")
    if args.peers:
        for peer in json.loads((args.out / "peers.json").read_text()):
            state = peer["version"] if peer["status"] == "ok" else f"{peer['status']}: {peer['reason']}"
            print(f"peer {peer['name']:12s} {state}; {'; '.join(peer['notes'])}")
    print(f"report: {args.out / 'report.html'}")
    return 0


def _models(args: argparse.Namespace, settings: WardenSettings) -> int:
    if args.action == "keygen":
        return keys_cli.models_keygen(args.out, sys.stdout)
    # Promote, rollback and shadow sign the pointer they write: only they load the signing key.
    signing = args.action in ("promote", "rollback", "shadow")
    registry = Registry.from_settings(settings, signing=signing).for_kind(args.kind)
    if args.kind != "mail" and args.action in ("shadow", "compare"):
        raise UsageError(f"shadow models are for mail only, not {args.kind}")
    if args.action == "list":
        current, shadow = _listed_pointer(registry.current), _listed_pointer(registry.shadow)
        versions = registry.versions()
        if not versions:
            print(f"no models registered in {registry.root}")
        for version in versions:
            marker = "*" if version == current else ("s" if version == shadow else " ")
            try:
                manifest = registry.manifest(version)  # the signature is checked first
            except ModelsError as exc:
                print(f"{marker} {version}  REFUSED: {exc}")
                continue
            print(
                f"{marker} {version}  auc={manifest.metrics.get('validation_auc', float('nan')):.4f}"
                f"  parity={manifest.parity.max_abs_diff:.1e}  data={manifest.data.source}"
            )
        return 0
    if args.action == "compare":
        return _compare(settings, registry)
    if args.action == "show":
        chosen = args.version or registry.current()
        if chosen is None:
            raise UsageError(f"no model promoted in {registry.root}")
        print(registry.manifest(chosen).model_dump_json(indent=2))
        return 0
    if args.action == "promote":
        registry.promote(args.version)
        changed: str | None = args.version
    elif args.action == "rollback":
        changed = registry.rollback()
    else:
        if args.clear == (args.version is not None):
            raise UsageError("give a version to shadow, or --clear (not both)")
        changed = None if args.clear else args.version
        registry.set_shadow(changed)
    _announce(settings, args.action, changed)
    print(
        f"{args.action}: {changed or 'none'} (workers switch within {settings.serving.reload_interval_s:g} s)"
    )
    return 0


def _listed_pointer(read: Callable[[], str | None]) -> str | None:
    """A pointer's version for `warden models list`; a refused pointer is said, the versions still listed."""
    try:
        return read()
    except ModelsError as exc:
        print(f"pointer REFUSED: {exc}")
        return None


def _announce(settings: WardenSettings, action: str, version: str | None) -> None:
    from warden.streams.broker import announce

    announce(settings, action, version)


def _compare(settings: WardenSettings, registry: Registry) -> int:
    from warden.serving.compare import compare
    from warden.streams import broker
    from warden.streams.exceptions import MalformedRecord
    from warden.streams.records import FeatureLogEntry, decode
    from warden.streams.topics import Topics

    settings = _with_services(settings)
    topics = Topics.from_settings(settings.kafka)
    reader = broker.TopicReader(settings.kafka, (topics.feature_log,))
    entries = []
    try:
        while batch := reader.poll(2.0):
            for message in batch:
                try:
                    entries.append(decode(FeatureLogEntry, message.value or b""))
                except MalformedRecord:
                    continue
    finally:
        reader.close()
    results = compare(entries, registry)
    if not results:
        print("no shadow scores in the feature-log yet: `warden models shadow VERSION` first")
        return 0
    for result in results:
        print("\n".join(result.lines()))
    return 0


def _dev(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.infra import devstack

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
        return EXIT_FAILURE
    print(f"broker {status.bootstrap_servers}, redis {status.redis_url}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``warden`` script."""
    args = _parser().parse_args(argv)
    try:
        file = args.settings
        if file is None and os.environ.get("WARDEN_SETTINGS_FILE"):
            file = Path(os.environ["WARDEN_SETTINGS_FILE"])
        secrets = {} if args.secrets_fd is None else secret_handoff.read_secrets(args.secrets_fd)
        settings = load_settings(file, **secrets)
        return _run(args, settings)
    except (SettingsError, UsageError) as exc:
        print(f"warden: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (InfraError, StreamsError, FeaturesError, ModelsError, ServingError) as exc:
        print(f"warden: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("warden: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
