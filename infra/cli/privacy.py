"""The privacy commands of the ``warden`` CLI: ``privacy audit``, ``privacy simulate``, ``report``.

Kept apart from :mod:`infra.cli.main` (which only registers and dispatches them).
Failures raise typed errors that the CLI prints as one line with exit 1:
:class:`~features.exceptions.PrivacyAuditFailed` after the audit report is
printed (a finding, or a configured store not read in full; a sample asked
for with ``--sample`` exits 0 with a verdict that names what was sampled),
:class:`~features.exceptions.PrivacyBudgetExhausted` before any data is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warden.streams.settings import WardenSettings

#: Fills in the broker and Redis of a running dev stack (the CLI's helper).
WithServices = Callable[[WardenSettings], WardenSettings]


def add_parsers(
    commands: argparse._SubParsersAction[Any],
    parser_class: type[argparse.ArgumentParser],
    _positive: Callable[[str], float],
    _positive_int: Callable[[str], int],
) -> None:
    """``warden privacy {audit,simulate}`` and ``warden report``."""
    privacy = commands.add_parser("privacy", help="audit stored data for raw identifiers; simulate local DP")
    actions = privacy.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    audit = actions.add_parser(
        "audit",
        help="read Redis, derived topics, the registry, logs and metrics in full "
        "(exit 1 on any finding or anything not read)",
    )
    audit.add_argument(
        "--log", type=Path, action="append", default=None, help="a log file to scan (default: dev logs)"
    )
    audit.add_argument("--metrics-url", metavar="URL", help="a worker's /metrics to scan")
    audit.add_argument(
        "--sample",
        type=_positive_int,
        default=None,
        metavar="N",
        help="read only the first N records of each derived topic (default: every record); "
        "the verdict then says what was sampled instead of PASSED",
    )
    simulate = actions.add_parser(
        "simulate", help="local-DP junk reports: recall and error of the top domains (simulated reporters)"
    )
    simulate.add_argument("--reporters", type=_positive_int, default=100_000, metavar="N")
    simulate.add_argument("--epsilon", type=_positive, nargs="+", default=[2.0, 4.0, 8.0], metavar="EPS")
    simulate.add_argument("--domains", type=_positive_int, default=10_000, metavar="N")
    simulate.add_argument("--zipf", type=_positive, default=1.1, metavar="S", help="Zipf exponent")
    simulate.add_argument("--top", type=_positive_int, default=20, metavar="N")
    simulate.add_argument("--trials", type=_positive_int, default=5, metavar="N")

    report = commands.add_parser(
        "report", help="publish verdict and junk-report statistics with differential privacy (OpenDP)"
    )
    report.add_argument("--epsilon", type=_positive, default=1.0, help="this release's epsilon (default 1)")
    report.add_argument("--delta", type=_positive, default=1e-6, help="this release's delta (default 1e-6)")
    report.add_argument("--days", type=_positive_int, default=7, metavar="N", help="days of verdicts")
    report.add_argument("--top", type=_positive_int, default=10, metavar="N", help="most-reported domains")
    report.add_argument(
        "--out", type=Path, default=Path(".warden/reports"), help="folder for the release JSON"
    )


def run(args: argparse.Namespace, settings: WardenSettings, with_services: WithServices) -> int:
    """Run ``warden privacy ...`` or ``warden report``; errors are raised typed for the CLI to print."""
    if args.command == "report":
        return _report(args, settings, with_services)
    return _privacy(args, settings, with_services)


def _privacy(args: argparse.Namespace, settings: WardenSettings, with_services: WithServices) -> int:
    if args.action == "simulate":
        from warden.features.privacy import ldp_simulation

        ldp_simulation.run(
            sys.stdout, args.reporters, args.epsilon, args.domains, args.zipf, args.top, args.trials
        )
        return 0
    from warden.features.exceptions import PrivacyAuditFailed
    from warden.features.privacy.audit import audit, corpus_names, corpus_subjects

    settings = with_services(settings)
    logs = args.log if args.log is not None else sorted(settings.dev.state_dir.glob("*.log"))
    report = audit(
        settings,
        corpus_subjects(settings),
        names=corpus_names(settings),
        logs=logs,
        metrics_url=args.metrics_url,
        sample=args.sample,
    )
    report.write(sys.stdout)
    if not report.clean:
        raise PrivacyAuditFailed(f"privacy audit {report.verdict()}")
    return 0


def _report(args: argparse.Namespace, settings: WardenSettings, with_services: WithServices) -> int:
    import time

    from warden.features.privacy.ledger import BudgetLedger
    from warden.features.privacy.report import release
    from warden.models.retrain import read_examples
    from warden.streams import reader
    from warden.streams.records import Verdict, decode
    from warden.streams.topics import Topics

    ledger = BudgetLedger(settings.privacy.report_ledger, settings.privacy.report_budget_epsilon)
    ledger.check(args.epsilon)  # refuse before reading anything
    settings = with_services(settings)
    topics = Topics.from_settings(settings.kafka)
    # Examples only when signed by the workers (as retrain reads them): a forged one must not
    # shape a published figure any more than a model.
    examples = read_examples(settings).examples
    read = reader.read_topics(settings.kafka, (topics.verdicts,), lambda raw: decode(Verdict, raw))
    verdicts = read.records
    if read.malformed:  # not verdicts: nothing to count, but said
        print(
            f"skipped {len(read.malformed):,} records of {topics.verdicts.name}: {read.describe_malformed()}",
            file=sys.stderr,
        )
    published = release(
        ledger, verdicts, examples, args.epsilon, time.time(), args.days, args.top, args.delta
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{published['release']}.json"
    path.write_text(json.dumps(published, indent=2))
    print(json.dumps(published, indent=2))
    print(f"release {published['release']} written to {path}; budget left {published['budget_left']:g}")
    return 0
