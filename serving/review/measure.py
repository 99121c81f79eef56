"""``warden review --measure``: does the review ranking beat the obvious alternatives?

A simulated stretch of days on a pluggable event source; the last day is
held out as the test day.

* ``mail``: the SpamAssassin corpus's second half (forward split, in order of
  receipt), split into equal
  days, plus one wave per day of :mod:`streams.sources.campaign`'s invoice-fraud
  campaign, each wave with new look-alike domains and spread evenly among its
  day's mails. The model serving the review days is the one trained on the
  first half; *campaign* events are the waves.
* ``calendar`` / ``contacts``: that kind's events of a
  :mod:`streams.sources.simulator` stream (seed :data:`SIM_SEED`,
  :data:`SIM_ACCOUNTS` accounts), both kinds through one feature store, and
  one warm-up day before the measured days (so the simulation's own start
  does not make every URL domain and account young). The model serving the
  review days is trained as ``warden train --kind`` does
  (:mod:`models.simulated`) on a stream of another seed *without* the
  :data:`UNSEEN` campaign types; *campaign* events are those types' events.

Each day has four review rounds sharing a fixed budget of reviews per day.
One review labels one campaign group (:mod:`serving.review.campaigns`): every
member seen in the last two days gets the group's majority label (what an
operator judging the group would give; members of the other class get a
wrong label, counted as *label errors*). A group labelled spam is blocked
from then on: its later members are blocked whatever the model says. The
strategies differ only in which groups they review:

* ``random``: groups of queued events drawn uniformly at random;
* ``lowest-confidence``: groups of the events whose scores are nearest the
  junk threshold (in log-odds);
* ``ranked``: groups by expected value of a review (:mod:`serving.review.ranking`:
  the sum of P(wrong) over unlabelled members), the ranking model refitted
  after every round on the feedback logged so far.

At the end the next model is trained (same trainer, same settings) on the
first model's training data plus every label given, validated on the first
model's own validation window (the same rows for every strategy), and
scores the test day. Figures:
*campaign / abuse delivered* (abusive events allowed and not blocked, over
all days: harm not stopped) and the next model's recall, false-positive
rate and ROC AUC at its junk threshold on the test day (all abuse, and the
campaign wave).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO

import numpy as np

from warden.features.ingest.extraction import to_activity_features, to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.models import simulated
from warden.models.dataset import Dataset, build
from warden.models.evaluate import warden_scores
from warden.models.exceptions import TrainingError
from warden.models.metrics import roc_auc
from warden.models.policy import Policy
from warden.models.registry import Candidate
from warden.models.train import split, train
from warden.serving.review.campaigns import assign, group_keys, resolve
from warden.serving.review.ranking import RankingModel, review_features, wrong_verdicts
from warden.streams.exceptions import UsageError
from warden.streams.records import ActivityKind, EventFeatures, SourcePosition
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus, simulator
from warden.streams.sources.campaign import campaign
from warden.streams.sources.corpus import CorpusMail
from warden.streams.sources.simulated_world import SimulationParams

STRATEGIES = ("random", "lowest-confidence", "ranked")
ROUNDS_PER_DAY = 4
#: Members a review covers: those seen this recently (in days), like the queue's TTL.
QUEUE_DAYS = 2
WAVE_SIZE = 100
#: The simulated stream of the ``calendar`` / ``contacts`` sources, and the first model's stream.
SIM_SEED, FIRST_SEED = 11, 12
SIM_ACCOUNTS = 400
#: Campaign types the first calendar/contacts model never saw (the sources' *campaign* events).
UNSEEN = ("compromised_burst", "low_and_slow")


@dataclass(frozen=True)
class SimEvent:
    """One event of a simulated day, with its truth."""

    day: int
    mail: CorpusMail
    campaign: bool


@dataclass(frozen=True)
class Stream:
    """What an event source gives the measurement: the measured days' rows and the first training set."""

    #: Every event of the measured days in time order (labels: the truth).
    data: Dataset
    #: Each event's ingest features (what grouping reads), in ``data``'s order.
    features: list[EventFeatures]
    #: Each event's day (0 .. days-1).
    days: np.ndarray
    #: Each event belongs to the campaign the first model never saw.
    is_campaign: np.ndarray
    #: The first model's training data, and how models are trained on it.
    older: Dataset
    older_source: str
    widen_thresholds: bool = False


#: An event source: (settings, days) -> the stream of those days.
EventSource = Callable[[WardenSettings, int], Stream]


def mail_source(settings: WardenSettings, days: int) -> list[SimEvent]:
    """The corpus's second half in equal days, plus one invoice-fraud wave per day."""
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)
    bounds = np.linspace(0, len(mails), days + 1).astype(int)
    out: list[SimEvent] = []
    recipients = sorted({r for m in mails[:200] for r in m.event.recipients})[:20] or ["accounts@example.org"]
    for day in range(days):
        chunk = mails[bounds[day] : bounds[day + 1]]
        out.extend(SimEvent(day, m, False) for m in chunk)
        wave = campaign(WAVE_SIZE, chunk[0].event_time, recipients, seed=100 + day)
        # Spread by position, not clock: the corpus's days are uneven in time, and a wave
        # should meet every review round of its day.
        slots = np.linspace(0, len(chunk) - 1, len(wave)).astype(int)
        for event, slot in zip(wave, slots, strict=True):
            stamped = event.model_copy(update={"timestamp": chunk[int(slot)].event_time + 1.0})
            mail = CorpusMail("campaign", stamped, True)
            out.append(SimEvent(day, mail, True))
    return out


def mail_stream(settings: WardenSettings, days: int) -> Stream:
    """:func:`mail_source`'s days, with the corpus's first half as the first training set."""
    events = sorted(mail_source(settings, days), key=lambda e: (e.mail.event_time, e.mail.event.event_id))
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    data = build([e.mail for e in events], pseudonymiser)
    if data.event_ids != tuple(e.mail.event.event_id for e in events):
        raise UsageError("the event source gave duplicate event ids")
    features: list[EventFeatures] = [
        to_features(
            e.mail.event,
            pseudonymiser,
            SourcePosition(topic="sim", partition=0, offset=i),
            0,
            event_time=e.mail.event_time,
        )
        for i, e in enumerate(events)
    ]
    return Stream(
        data=data,
        features=features,
        days=np.asarray([e.day for e in events]),
        is_campaign=np.asarray([e.campaign for e in events]),
        older=build(corpus.load(settings.corpus, corpus.FIRST_HALF), pseudonymiser),
        older_source=f"spam-assassin:{corpus.FIRST_HALF}",
    )


def activity_stream(
    kind: ActivityKind, settings: WardenSettings, days: int, accounts: int = SIM_ACCOUNTS
) -> Stream:
    """``kind``'s events of ``days`` simulated days (after a warm-up day); first model without UNSEEN."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    params = SimulationParams(seed=SIM_SEED, accounts=accounts, days=float(days + 1))
    events = simulator.simulate(params)
    data = simulated.build(events, kind, pseudonymiser)
    # The same events, in the same order, as simulated.build keeps.
    chosen = [
        s
        for s in sorted(events, key=lambda s: (s.event.timestamp, s.event.event_id))
        if s.event.kind == kind and not s.history
    ]
    if data.event_ids != tuple(s.event.event_id for s in chosen):
        raise UsageError("the simulated rows do not match the simulated events")
    day = np.floor((data.timestamps - params.start) / 86400.0).astype(int) - 1
    keep = np.flatnonzero(day >= 0)
    features: list[EventFeatures] = [
        to_activity_features(
            chosen[int(i)].event,
            pseudonymiser,
            SourcePosition(topic="sim", partition=0, offset=int(i)),
            0,
            event_time=chosen[int(i)].event.timestamp,
        )
        for i in keep
    ]
    first = replace(params, seed=FIRST_SEED, mix={**params.mix, **dict.fromkeys(UNSEEN, 0.0)})
    return Stream(
        data=data.take(keep),
        features=features,
        days=day[keep],
        is_campaign=np.asarray([chosen[int(i)].campaign in UNSEEN for i in keep]),
        older=simulated.build(simulator.simulate(first), kind, pseudonymiser),
        older_source=f"simulator:seed={FIRST_SEED},accounts={accounts},without={'+'.join(UNSEEN)}",
        widen_thresholds=True,
    )


SOURCES: dict[str, EventSource] = {
    "mail": mail_stream,
    "calendar": functools.partial(activity_stream, "calendar"),
    "contacts": functools.partial(activity_stream, "contacts"),
}


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

    data: Dataset
    older: Dataset
    widen_thresholds: bool
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


def prepare(settings: WardenSettings, source: EventSource, days: int) -> World:
    """The stream of ``source``, its first model's verdicts, and its groups round by round."""
    stream = source(settings, days)
    data = stream.data
    first = train(
        stream.older, settings.models, source=stream.older_source, widen_thresholds=stream.widen_thresholds
    )
    scores = warden_scores(first, data)
    policy = Policy(first.manifest.thresholds.junk, first.manifest.thresholds.block)
    actions = [policy.decide(float(s)) for s in scores]
    rows = data.rows(data.evidence(first.tokens))
    keyed = [(f.event_id, group_keys(f, rows[i])) for i, f in enumerate(stream.features)]
    day_of = stream.days
    rounds = [
        chunk
        for day in range(days)
        for chunk in np.array_split(np.flatnonzero(day_of == day), ROUNDS_PER_DAY)
    ]
    # Grouping as the queue would see it: round by round, merges applied as they happen.
    claimed: dict[str, str] = {}
    aliases: dict[str, str] = {}
    joined = [""] * len(data)  # "" until the event has been seen
    groups_at: list[list[str]] = []
    for chunk in rounds:
        grouping = assign([keyed[int(i)] for i in chunk], claimed, aliases)
        claimed.update(grouping.claims)
        aliases.update(grouping.merges)
        for i, assignment in zip(chunk, grouping.assignments, strict=True):
            joined[int(i)] = assignment.group
        groups_at.append([resolve(g, aliases) if g else "" for g in joined])
    return World(
        data=data,
        older=stream.older,
        widen_thresholds=stream.widen_thresholds,
        days=day_of,
        truth=np.asarray(data.labels, dtype=np.int8),
        is_campaign=stream.is_campaign,
        first=first,
        actions=actions,
        review_x=review_features(scores, rows, first.manifest.thresholds.junk, data.kind),
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
        kind=a.kind,
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
    delivered = np.zeros(len(world.data), dtype=bool)
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
    """Train the next model on the first model's training set plus the labels; score the test day with it."""
    model = world.first
    if outcome.labels:
        known = np.asarray(sorted(outcome.labels))
        extra = world.data.take(known)
        extra = replace(extra, labels=np.asarray([outcome.labels[int(i)] for i in known], dtype=np.int8))
        # The labels join the fitting rows; validation (early stopping, thresholds) stays the first
        # model's window, so every strategy's next model is judged on the same rows. Validating on
        # the newest rows would validate on the review labels themselves, a different window per
        # strategy, and made the recall figures swing with which errors fell into it.
        fit, valid = split(world.older)
        data = _concat(_concat(fit, extra), valid)
        try:
            model = train(
                data,
                settings.models,
                source="review-sim",
                validation_share=(len(valid) - 0.5) / len(data),
                widen_thresholds=world.widen_thresholds,
            )
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
    world = prepare(settings, SOURCES[source], days)
    abuse = int(np.sum(world.truth))
    groups = world.groups_at[-1]
    out.write(
        f"{len(world.data):,} {world.data.kind} events "
        f"({int(world.is_campaign.sum()):,} campaign, {abuse:,} abusive), "
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
