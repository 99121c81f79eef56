"""``warden review``: the top of the review queue for an operator, and their labels.

``warden review [--top N] [--json]`` prints the most valuable campaign groups
(a table, or JSON for tools); ``warden review label TARGET spam|ham`` sends one
``ops_review`` label per member event of the group (or for the one event)
to the ``feedback`` topic, each with its own event id and feedback id, and
takes the group off the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from warden.features.exceptions import StoreNotConfigured
from warden.features.store.redis_client import CLIENT_ERRORS, AsyncClient, async_client, where
from warden.infra.cli.common import Commands, Parser, positive_int, with_services
from warden.serving.exceptions import ReviewError
from warden.serving.review.queue import QueuedGroup, ReviewQueue, load_ranker
from warden.streams.exceptions import UsageError
from warden.streams.records import Feedback, FeedbackLabel
from warden.streams.settings import WardenSettings
from warden.streams.sources import feedback as feedback_source

T = TypeVar("T")

#: What an operator may type, and the feedback label it becomes.
LABELS: dict[str, FeedbackLabel] = {"spam": "abuse", "abuse": "abuse", "ham": "legit", "legit": "legit"}


def _client(settings: WardenSettings) -> AsyncClient:
    """The configured Redis (standalone or cluster, with its AUTH and TLS settings)."""
    try:
        return async_client(settings.redis)
    except StoreNotConfigured:
        raise UsageError("no Redis configured: run `warden dev up` or set WARDEN_REDIS__URL") from None


def _queue(settings: WardenSettings, client: AsyncClient) -> ReviewQueue:
    return ReviewQueue(client, settings.redis.key_prefix, settings.review, load_ranker(settings.review))


async def _top(settings: WardenSettings, count: int) -> list[QueuedGroup]:
    client = _client(settings)
    try:
        return await _queue(settings, client).top(count)
    finally:
        await client.aclose()


def _run(settings: WardenSettings, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one Redis conversation.

    An unreachable Redis, or one that refuses the credentials or the TLS
    handshake, becomes a one-line ReviewError (the CLI exits 1).
    """
    try:
        return asyncio.run(coroutine)
    except CLIENT_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ReviewError(
            f"cannot use Redis at {where(settings.redis)} for the review queue: {reason}"
        ) from None


def show(settings: WardenSettings, count: int, as_json: bool, out: TextIO) -> int:
    """Print the top ``count`` groups; returns how many were shown."""
    groups = _run(settings, _top(settings, count))
    if as_json:
        out.write(json.dumps([g.as_dict() for g in groups], indent=2) + "\n")
        return len(groups)
    if not groups:
        out.write("the review queue is empty\n")
        return 0
    out.write(table(groups) + "\n")
    return len(groups)


def table(groups: Sequence[QueuedGroup]) -> str:
    """The operator's view: one line per group, with its newest example's reasons."""
    header = (
        f"{'#':>3}  {'group':18}  {'value':>7}  {'size':>5}  {'allow/junk/block':>16}  "
        f"{'score':>5}  {'by':10}  top reasons"
    )
    lines = [header, "-" * len(header)]
    for rank, g in enumerate(groups, start=1):
        example = g.examples[0] if g.examples else None
        reasons = ", ".join(r.feature for r in example.reasons[:3]) if example else ""
        if example and not reasons:
            aggregates = example.actor_aggregates
            reasons = (
                f"sender 24h={aggregates['sender_events_24h']:.0f} "
                f"domain age={aggregates['sender_domain_age_h']:.0f}h"
            )
        mix = f"{g.actions['allow']}/{g.actions['junk']}/{g.actions['block']}"
        lines.append(
            f"{rank:>3}  {g.group:18}  {g.value:7.2f}  {g.size:5d}  {mix:>16}  {g.mean_score:5.2f}  "
            f"{g.grouped_by:10}  {reasons}"
        )
    return "\n".join(lines)


def feedback_records(
    event_ids: Sequence[str], label: FeedbackLabel, reporter: str, group: str | None, now: float
) -> list[Feedback]:
    """One ops_review label per event; the feedback id is fixed by (event, label, reporter, group)."""
    reason = f"review of group {group}" if group else "review of one event"
    out = []
    for event_id in event_ids:
        basis = f"{event_id}|{label}|{reporter}|{group or ''}"
        out.append(
            Feedback(
                feedback_id="rv-" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:24],
                event_id=event_id,
                label=label,
                source="ops_review",
                reporter=reporter,
                at=now,
                reason=reason,
            )
        )
    return out


async def _resolve(settings: WardenSettings, target: str) -> tuple[str | None, list[str]]:
    client = _client(settings)
    try:
        return await _queue(settings, client).members(target)
    finally:
        await client.aclose()


async def _mark(settings: WardenSettings, group: str, label: str, members: Sequence[str]) -> None:
    client = _client(settings)
    try:
        await _queue(settings, client).mark_labelled(group, label, members)
    finally:
        await client.aclose()


def label(settings: WardenSettings, target: str, given: str, reporter: str, out: TextIO) -> int:
    """Label a group (every member event) or one event; returns how many labels were sent.

    Raises ReviewError for an unknown target and BrokerError if the broker refuses.
    """
    group, event_ids = _run(settings, _resolve(settings, target))
    records = feedback_records(event_ids, LABELS[given], reporter, group, time.time())
    sent = feedback_source.send(settings, records)
    if group is not None:
        _run(settings, _mark(settings, group, LABELS[given], event_ids))
    what = f"group {group} ({sent:,} events)" if group else f"event {target}"
    out.write(f"sent {sent:,} ops_review labels ({LABELS[given]}) for {what}\n")
    return sent


def fit_ranker(settings: WardenSettings, path: Path, out: TextIO) -> int:
    """Fit the ranking model on the logged feedback and write it to ``path``; returns the examples used.

    Workers use it when ``WARDEN_REVIEW__RANKER_FILE`` names the file.
    """
    from warden.models.registry import Registry
    from warden.models.retrain import read_examples
    from warden.serving.review.feedback import fit_on_examples

    read = read_examples(settings)  # signed examples only: a forged one would steer the ranking
    examples = read.examples
    model, used = fit_on_examples(examples, Registry.from_settings(settings))
    try:
        path.write_text(model.to_json() + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    source = (
        f"fitted on {model.fitted_on:,} labels"
        if model.fitted_on
        else "the prior (too few or one-sided labels)"
    )
    refused = sum(read.refused.values())
    out.write(f"ranking model: {source} of {used:,} usable examples -> {path}\n")
    if refused:
        out.write(f"refused {refused:,} unauthenticated or unreadable training examples\n")
    return used


#: The ``warden`` commands this module runs.
COMMANDS = ("review",)


def add_parsers(commands: Commands) -> None:
    """``warden review``: list the queue, label, measure the ranking, fit the ranker."""
    review = commands.add_parser(
        "review", help="the top of the ops review queue; label a group or event; measure the ranking"
    )
    review.add_argument("--top", type=positive_int, default=20, metavar="N", help="groups to list")
    review.add_argument("--json", action="store_true", help="print JSON for tools instead of a table")
    review.add_argument(
        "--measure",
        action="store_true",
        help="simulate review budgets on the corpus and campaigns; compare rankings (no services needed)",
    )
    review.add_argument(
        "--budget", type=positive_int, action="append", metavar="N", help="--measure: reviews per day"
    )
    review.add_argument("--days", type=positive_int, default=6, metavar="N", help="--measure: days")
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
    actions = review.add_subparsers(dest="review_action", metavar="ACTION", parser_class=Parser)
    label = actions.add_parser("label", help="label a group (every member event) or one event")
    label.add_argument("target", help="a group id (from the list) or an event id")
    label.add_argument("label", choices=("spam", "ham", "abuse", "legit"))
    label.add_argument("--reporter", default="ops", help="operator id (pseudonymised by the worker)")


def run(args: argparse.Namespace, settings: WardenSettings) -> int:
    """Run ``warden review``; returns the exit status."""
    if args.review_action == "label":
        label(with_services(settings), args.target, args.label, args.reporter, sys.stdout)
        return 0
    if args.fit_ranker is not None:
        fit_ranker(with_services(settings), args.fit_ranker, sys.stdout)
        return 0
    if args.measure:
        from warden.serving.review import measure as review_measure

        review_measure.run(
            settings, sys.stdout, args.source, tuple(args.budget or (25, 100)), args.days, args.seed
        )
        return 0
    show(with_services(settings), args.top, args.json, sys.stdout)
    return 0
