"""The commands that make and measure models: ``train``, ``retrain`` and ``evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from warden.infra.cli.common import (
    Commands,
    non_negative_int,
    positive_int,
    warn_development,
    with_services,
)
from warden.infra.cli.models import announce
from warden.infra.cli.simulation import simulation_options, simulation_params
from warden.streams.exceptions import ExitCode, UsageError
from warden.streams.settings import WardenSettings

#: The ``warden`` commands this module runs.
COMMANDS = ("train", "retrain", "evaluate")


def add_parsers(commands: Commands) -> None:
    """``warden train``, ``warden retrain`` and ``warden evaluate``."""
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
    simulation_options(train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate on the corpus (static and online protocols) and write a report"
    )
    evaluate.add_argument(
        "--protocol",
        choices=("static", "online", "both", "folds", "ceiling"),
        default="both",
        help="static: train on the first half of the mails by time of receipt, test on the second; "
        "online: every mail in that order with delayed labels and periodic retraining; "
        "folds: forward folds inside the first half only (where choices about the model are made); "
        "ceiling: a diagnostic, the second half scored by models trained on its own other folds",
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
        type=positive_int,
        default=500,
        metavar="N",
        help="online protocol: retrain after every N new labels",
    )
    evaluate.add_argument(
        "--label-delay",
        type=non_negative_int,
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
    simulation_options(evaluate)
    evaluate.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=500,
        metavar="N",
        help="bootstrap resamples for confidence intervals (0: none)",
    )

    retrain = commands.add_parser(
        "retrain",
        help="train on training-examples, gate against the champion, promote if better "
        "(exit 0 promoted or unchanged, 3 not promoted, 4 too little data, 5 locked, 1 failure)",
    )
    retrain.add_argument("--since", type=float, metavar="EPOCH_S", help="labels given at or after this time")
    retrain.add_argument("--until", type=float, metavar="EPOCH_S", help="labels given before this time")
    retrain.add_argument("--min-examples", type=positive_int, default=200, metavar="N")


def run(args: argparse.Namespace, settings: WardenSettings) -> int:
    """Run one of :data:`COMMANDS`; returns the exit status."""
    if args.command == "train" and args.kind != "mail":
        return _train_simulated(args, settings)
    if args.command == "train":
        from warden.models.train import train_from_corpus
        from warden.streams.sources import corpus

        part = corpus.FIRST_HALF if args.collection == "first-half" else corpus.ALL
        warn_development(settings)
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
    if args.command == "retrain":
        return _retrain(args, with_services(settings))
    return _evaluate(args, settings)


def _retrain(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.models import retrain

    warn_development(settings)
    try:
        result = retrain.retrain(settings, args.since, args.until, args.min_examples)
    except retrain.RetrainLocked as exc:
        print(f"warden: error: {exc}", file=sys.stderr)
        return ExitCode.LOCKED
    if result.outcome == "promoted":
        announce(settings, "promote", result.version)
    if result.reason is not None:
        print(f"warden: retrain: {result.reason}", file=sys.stderr)
    else:
        print(retrain.gate_line(result))
    print(retrain.summary(result))
    return retrain.EXIT_CODES[result.outcome]


def _train_simulated(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.models.simulated import train_simulated

    manifest = train_simulated(settings, args.kind, simulation_params(args), promote=not args.no_promote)
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


def _development(args: argparse.Namespace, settings: WardenSettings) -> int:
    from warden.models import development

    if args.peers:
        raise UsageError("--peers runs on the static protocol: use --protocol static or both")
    if args.protocol == "folds":
        figures = development.folds(settings, development.training_half(settings))
    else:
        figures = development.ceiling(settings, development.test_half(settings))
    args.out.mkdir(parents=True, exist_ok=True)
    written = args.out / f"{args.protocol}.json"
    written.write_text(json.dumps(figures, indent=2))
    for fold, values in figures.items():
        shown = (f"{k}={v:.4f}" if v % 1 else f"{k}={v:.0f}" for k, v in values.items())
        print(f"{fold:8s} " + "  ".join(shown))
    print(f"figures: {written}")
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
                simulation_params(args),
                args.test_seed,
                hold_out_each=args.hold_out_each,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print("\n".join(evaluation.lines()))
        return 0

    if args.protocol in ("folds", "ceiling"):
        return _development(args, settings)
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
