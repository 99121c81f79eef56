"""``warden review --measure``: does the review ranking beat the obvious alternatives?

A simulated stretch of days on a pluggable event source (``mail``: the newer
SpamAssassin collection in Date order, split into equal days, plus one wave
per day of :mod:`streams.campaign`'s invoice-fraud campaign, each wave with
new look-alike domains and spread evenly among its day's mails). The model serving the
review days is the one trained on the older collection; the last day is
held out as the test day.

Each day has four review rounds sharing a fixed budget of reviews per day.
One review labels one campaign group (:mod:`serving.campaigns`): every
member seen in the last two days gets the group's majority label (what an
operator judging the group would give; members of the other class get a
wrong label, counted as *label errors*). A group labelled spam is blocked
from then on: its later members are blocked whatever the model says. The
strategies differ only in which groups they review:

* ``random``: groups of queued events drawn uniformly at random;
* ``lowest-confidence``: groups of the events whose scores are nearest the
  junk threshold (in log-odds);
* ``ranked``: groups by expected value of a review (:mod:`models.ranking`:
  the sum of P(wrong) over unlabelled members), the ranking model refitted
  after every round on the feedback logged so far.

At the end the next model is trained (same trainer, same settings) on the
older collection plus every label given, and scores the test day. Figures:
*campaign / abuse delivered* (abusive events allowed and not blocked, over
all days: harm not stopped) and the next model's recall, false-positive
rate and ROC AUC at its junk threshold on the test day (all abuse, and the
campaign wave).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO

import numpy as np

from features.extraction import to_features
from features.pseudonym import Pseudonymiser
from infra.exceptions import UsageError
from infra.settings import WardenSettings
from models.dataset import Dataset, build
from models.evaluate import warden_scores
from models.exceptions import TrainingError
from models.metrics import roc_auc
from models.ranking import RankingModel, review_features, wrong_verdicts
from models.registry import Candidate
from models.train import train
from serving.campaigns import assign, group_keys, resolve
from serving.policy import Policy
from streams import corpus
from streams.campaign import campaign
from streams.corpus import CorpusMail
from streams.records import SourcePosition

STRATEGIES = ("random", "lowest-confidence", "ranked")
ROUNDS_PER_DAY = 4
#: Members a review covers: those seen this recently (in days), like the queue's TTL.
QUEUE_DAYS = 2
WAVE_SIZE = 100


@dataclass(frozen=True)
class SimEvent:
    """One event of a simulated day, with its truth."""

    day: int
    mail: CorpusMail
    campaign: bool


#: An event source: (settings, days) -> events of every day, any order.
EventSource = Callable[[WardenSettings, int], list[SimEvent]]


def mail_source(settings: WardenSettings, days: int) -> list[SimEvent]:
    """The newer corpus collection in equal days, plus one invoice-fraud wave per day."""
    mails = sorted(
        corpus.load(settings.corpus, corpus.NEWER), key=lambda m: (m.event.timestamp, m.event.event_id)
    )
    bounds = np.linspace(0, len(mails), days + 1).astype(int)
    out: list[SimEvent] = []
    recipients = sorted({r for m in mails[:200] for r in m.event.recipients})[:20] or ["accounts@example.org"]
    for day in range(days):
        chunk = mails[bounds[day] : bounds[day + 1]]
        out.extend(SimEvent(day, m, False) for m in chunk)
        wave = campaign(WAVE_SIZE, chunk[0].event.timestamp, recipients, seed=100 + day)
        # Spread by position, not clock: the corpus's days are uneven in time, and a wave
        # should meet every review round of its day.
        slots = np.linspace(0, len(chunk) - 1, len(wave)).astype(int)
        for event, slot in zip(wave, slots, strict=True):
            stamped = event.model_copy(update={"timestamp": chunk[int(slot)].event.timestamp + 1.0})
            mail = CorpusMail("campaign", stamped, True)
            out.append(SimEvent(day, mail, True))
    return out


SOURCES: dict[str, EventSource] = {"mail": mail_source}


@dataclass
class Outcome:
    """One strategy's run at one budget."""

    strategy: str
    budget: int
    reviews: int = 0
    labelled: int = 0
    label_errors: int = 0
    abuse_delivered: int = 0
    campaign_delivered: int = 0
    recall: float = float("nan")
    campaign_recall: float = float("nan")
    fpr: float = float("nan")
    auc: float = float("nan")
    labels: dict[int, int] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class World:
    """Everything the strategies share: the stream, its groups over time, the first model's verdicts."""

    events: list[SimEvent]
    data: Dataset
    older: Dataset
    days: np.ndarray
    truth: np.ndarray
    is_campaign: np.ndarray
    first: Candidate
    actions: Sequence[str]
    review_x: np.ndarray
    #: Event indices of each review round, in stream order (ROUNDS_PER_DAY per day).
    rounds: list[np.ndarray]
    #: For each round, every event -> its group at the round's end (merges followed; "" if unseen).
    groups_at: list[list[str]]


def _prepare(settings: WardenSettings, source: EventSource, days: int) -> World:
    events = sorted(source(settings, days), key=lambda e: (e.mail.event.timestamp, e.mail.event.event_id))
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    older = build(corpus.load(settings.corpus, corpus.OLDER), pseudonymiser)
    data = build([e.mail for e in events], pseudonymiser)
    if data.event_ids != tuple(e.mail.event.event_id for e in events):
        raise UsageError("the event source gave duplicate event ids")
    first = train(older, settings.models, source="spam-assassin:older")
    scores = warden_scores(first, data)
    policy = Policy(first.manifest.thresholds.junk, first.manifest.thresholds.block)
    actions = [policy.decide(float(s)) for s in scores]
    rows = data.rows(data.evidence(first.tokens))
    keyed = []
    for offset, e in enumerate(events):
        features = to_features(
            e.mail.event, pseudonymiser, SourcePosition(topic="sim", partition=0, offset=offset), 0
        )
        keyed.append((e.mail.event.event_id, group_keys(features, rows[offset])))
    day_of = np.asarray([e.day for e in events])
    rounds = [
        chunk
        for day in range(days)
        for chunk in np.array_split(np.flatnonzero(day_of == day), ROUNDS_PER_DAY)
    ]
    # Grouping as the queue would see it: round by round, merges applied as they happen.
    claimed: dict[str, str] = {}
    aliases: dict[str, str] = {}
    joined = [""] * len(events)  # "" until the event has been seen
    groups_at: list[list[str]] = []
    for chunk in rounds:
        grouping = assign([keyed[int(i)] for i in chunk], claimed, aliases)
        claimed.update(grouping.claims)
        aliases.update(grouping.merges)
        for i, assignment in zip(chunk, grouping.assignments, strict=True):
            joined[int(i)] = assignment.group
        groups_at.append([resolve(g, aliases) if g else "" for g in joined])
    return World(
        events=events,
        data=data,
        older=older,
        days=day_of,
        truth=np.asarray(data.labels, dtype=np.int8),
        is_campaign=np.asarray([e.campaign for e in events]),
        first=first,
        actions=actions,
        review_x=review_features(scores, rows, first.manifest.thresholds.junk),
        rounds=rounds,
        groups_at=groups_at,
    )


def _concat(a: Dataset, b: Dataset) -> Dataset:
    return Dataset(
        content=np.concatenate([a.content, b.content]),
        aggregates=np.concatenate([a.aggregates, b.aggregates]),
        tokens=a.tokens + b.tokens,
        labels=np.concatenate([a.labels, b.labels]),
        timestamps=np.concatenate([a.timestamps, b.timestamps]),
        event_ids=a.event_ids + b.event_ids,
        folders=a.folders + b.folders,
    )


def simulate(
    world: World, strategy: str, budget: int, days: int, settings: WardenSettings, seed: int
) -> Outcome:
    """Run one strategy at one budget over the review days, then train and test the next model."""
    rng = random.Random(seed)
    outcome = Outcome(strategy, budget)
    ranker = RankingModel()
    per_round = [
        budget // ROUNDS_PER_DAY + (1 if r < budget % ROUNDS_PER_DAY else 0) for r in range(ROUNDS_PER_DAY)
    ]
    delivered = np.zeros(len(world.events), dtype=bool)
    for number, chunk in enumerate(world.rounds):
        groups = world.groups_at[number]
        day = number // ROUNDS_PER_DAY
        # A group holding an event labelled spam is blocked (merges carry the block along).
        blocked = {groups[i] for i, label in outcome.labels.items() if label == 1}
        for i in chunk:
            delivered[i] = world.actions[i] == "allow" and groups[i] not in blocked
        if day == days - 1:
            continue  # the test day: no reviews; its verdicts come from the next model below
        window = [
            i
            for i in range(len(groups))
            if groups[i] and world.days[i] >= day - QUEUE_DAYS + 1 and i not in outcome.labels
        ]
        for group in _choose(
            world, groups, strategy, window, per_round[number % ROUNDS_PER_DAY], ranker, rng
        ):
            members = [i for i in window if groups[i] == group]
            label = int(float(np.mean(world.truth[members])) >= 0.5)
            for i in members:
                outcome.labels[i] = label
            outcome.reviews += 1
        if strategy == "ranked" and outcome.labels:
            known = sorted(outcome.labels)
            ranker = RankingModel.fit(
                world.review_x[known],
                wrong_verdicts([world.actions[i] for i in known], [outcome.labels[i] for i in known]),
                ranker,
            )
    outcome.labelled = len(outcome.labels)
    outcome.label_errors = sum(int(world.truth[i] != label) for i, label in outcome.labels.items())
    _test_next_model(world, outcome, delivered, days, settings)
    return outcome


def _choose(
    world: World,
    groups: Sequence[str],
    strategy: str,
    window: Sequence[int],
    count: int,
    ranker: RankingModel,
    rng: random.Random,
) -> list[str]:
    if count <= 0 or not window:
        return []
    if strategy == "random":
        events = list(window)
        rng.shuffle(events)
    elif strategy == "lowest-confidence":
        events = sorted(window, key=lambda i: -float(world.review_x[i, 0]))
    else:
        values: dict[str, float] = {}
        p = ranker.p_wrong(world.review_x[list(window)])
        for i, value in zip(window, p, strict=True):
            values[groups[i]] = values.get(groups[i], 0.0) + float(value)
        return sorted(values, key=lambda g: -values[g])[:count]
    chosen: list[str] = []
    for i in events:
        if groups[i] not in chosen:
            chosen.append(groups[i])
            if len(chosen) == count:
                break
    return chosen


def _test_next_model(
    world: World, outcome: Outcome, delivered: np.ndarray, days: int, settings: WardenSettings
) -> None:
    """Train the next model on the older collection plus the labels; score the test day with it."""
    model = world.first
    if outcome.labels:
        known = np.asarray(sorted(outcome.labels))
        extra = world.data.take(known)
        extra = replace(extra, labels=np.asarray([outcome.labels[int(i)] for i in known], dtype=np.int8))
        try:
            model = train(_concat(world.older, extra), settings.models, source="review-sim")
        except TrainingError as exc:
            outcome.note = f"next model not trained ({exc}): the first model was tested"
    test = np.flatnonzero(world.days == days - 1)
    scores = warden_scores(model, world.data.take(test))
    policy = Policy(model.manifest.thresholds.junk, model.manifest.thresholds.block)
    flagged = np.asarray([policy.decide(float(s)) != "allow" for s in scores])
    groups = world.groups_at[-1]
    blocked = {groups[i] for i, label in outcome.labels.items() if label == 1}
    for position, i in enumerate(test):
        delivered[i] = not flagged[position] and groups[i] not in blocked
    truth = world.truth[test] == 1
    campaign = world.is_campaign[test]
    abuse = world.truth == 1
    outcome.abuse_delivered = int(np.sum(delivered & abuse))
    outcome.campaign_delivered = int(np.sum(delivered & abuse & world.is_campaign))
    outcome.recall = float(np.mean(flagged[truth])) if truth.any() else float("nan")
    outcome.campaign_recall = float(np.mean(flagged[campaign])) if campaign.any() else float("nan")
    outcome.fpr = float(np.mean(flagged[~truth])) if (~truth).any() else float("nan")
    if truth.any() and (~truth).any():
        outcome.auc = roc_auc(truth.astype(np.int8), scores)


def run(
    settings: WardenSettings, out: TextIO, source: str, budgets: Sequence[int], days: int, seed: int
) -> list[Outcome]:
    """Measure every strategy at every budget and print the table."""
    if source not in SOURCES:
        raise UsageError(f"unknown event source {source!r} (known: {', '.join(SOURCES)})")
    if days < 2:
        raise UsageError("--days must be at least 2 (review days and a test day)")
    out.write(f"preparing: source {source}, {days} days (the last one is the test day)\n")
    out.flush()
    world = _prepare(settings, SOURCES[source], days)
    abuse = int(np.sum(world.truth))
    groups = world.groups_at[-1]
    out.write(
        f"{len(world.events):,} events ({int(world.is_campaign.sum()):,} campaign, {abuse:,} abusive), "
        f"{len(set(groups)):,} groups at the end; campaign events in "
        f"{len({g for g, c in zip(groups, world.is_campaign, strict=True) if c}):,} groups\n"
    )
    out.flush()
    baseline = Outcome("no reviews", 0)
    _test_next_model(world, baseline, np.asarray([a == "allow" for a in world.actions]), days, settings)
    outcomes = [baseline]
    for budget in budgets:
        for strategy in STRATEGIES:
            outcome = simulate(world, strategy, budget, days, settings, seed)
            outcomes.append(outcome)
            out.write(f"  done: {strategy} at {budget}/day\n")
            out.flush()
    out.write(render(outcomes) + "\n")
    for o in outcomes:
        if o.note:
            out.write(f"{o.strategy} at {o.budget}/day: {o.note}\n")
    return outcomes


def render(outcomes: Sequence[Outcome]) -> str:
    """The measurement as a Markdown table."""
    lines = [
        "| reviews/day | strategy | reviews | events labelled (label errors) | abuse delivered | "
        "campaign delivered | next model recall | campaign recall | FPR | ROC AUC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.budget or '-'} | {o.strategy} | {o.reviews:,} | {o.labelled:,} ({o.label_errors:,}) | "
            f"{o.abuse_delivered:,} | {o.campaign_delivered:,} | {o.recall:.3f} | {o.campaign_recall:.3f} | "
            f"{o.fpr:.4f} | {o.auc:.4f} |"
        )
    return "\n".join(lines)
