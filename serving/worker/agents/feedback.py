"""The feedback agent: labels joined with the rows that were served, weighed and bounded.

For each label on ``feedback`` it recalls what the labelled event's verdict
was computed from (:class:`~features.store.served.ServedRows`), and emits a
:class:`~streams.records.TrainingExample` with a weight, and updates the
decayed reputation of the event's sender, sender domain and URL domains.

Poisoning resistance: every source has a weight (a user report counts for
0.2 of an operator's review by default); a user's reports beyond a daily
cap weigh nothing; user reports about one sender beyond a daily cap weigh
nothing. So a farm of accounts mass-reporting a legitimate sender adds at
most ``target_daily_cap x weight_user_report`` of abuse weight per day to
that sender's reputation, whatever its size. User reports train the next
model only if ``FeedbackSettings.train_on_user_reports`` is set (off by
default), and then within the same bound. Labels for unknown or expired events, malformed labels and
duplicates are counted; the first two go to dead letters with the reason.

Every label is authenticated first (:mod:`streams.feedback_auth`): one
without a valid signature under its source's key is a dead letter before it
is joined, weighed, counted or learned from. Every example it emits is signed
with the training-example key, so ``warden retrain`` learns from this agent's
examples only, never from records produced to ``training-examples`` by anyone else.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.aggregations import SENDER, SENDER_DOMAIN, URL_DOMAIN
from warden.features.store.keys import Keys
from warden.features.store.operations import Call, report
from warden.features.store.redis import FeatureStore
from warden.features.store.served import FeedbackLedger, ServedRows
from warden.serving.worker.metrics import WorkerStats
from warden.serving.worker.output import Deliveries, Output
from warden.streams.exceptions import MalformedRecord
from warden.streams.feedback_auth import SOURCES, ExampleKeys, SourceKeys
from warden.streams.provenance import trusted_event_time
from warden.streams.records import (
    DeadLetter,
    Feedback,
    ServedRow,
    SourcePosition,
    TrainingExample,
    decode,
    encode,
)
from warden.streams.settings import FeedbackSettings, WardenSettings

log = logging.getLogger(__name__)

#: Longest label accepted (a valid one is under 2 KB: its text fields are bounded).
MAX_LABEL_BYTES = 16_384


def authentic(raw: bytes, keys: SourceKeys) -> Feedback:
    """Decode one raw label and check its source's signature.

    Raises :class:`MalformedRecord` (the label becomes a dead letter) when it
    is too large, not a label, or not signed with its source's key.
    """
    if len(raw) > MAX_LABEL_BYTES:
        raise MalformedRecord(
            f"payload of {len(raw)} bytes exceeds the limit of {MAX_LABEL_BYTES} for a label"
        )
    feedback = decode(Feedback, raw)
    problem = keys.problem(feedback)
    if problem is not None:
        raise MalformedRecord(problem)
    return feedback


@dataclass(frozen=True)
class Arrival:
    """One authentic label as it arrived: where it was read, its bytes, and its trusted time.

    ``at`` is the label record's broker timestamp bounded like an event's
    (:func:`~streams.provenance.trusted_event_time`), not the ``at`` the label
    claims: reputation days and the order of labels in training advance on it,
    so a label dated years ahead can neither wipe a reputation nor outrank
    every later label.
    """

    feedback: Feedback
    position: SourcePosition
    raw: bytes
    at: float


@dataclass(frozen=True)
class Labelled:
    """One accepted label, the weight it carries and its trusted time (:attr:`Arrival.at`)."""

    feedback: Feedback
    row: ServedRow
    weight: float
    at: float


def weigh(feedback: Feedback, reporter_count: int, target_count: int, settings: FeedbackSettings) -> float:
    """The weight of one label given how many reports its reporter and target have today.

    The caps bound user reports, the source an attacker controls; operators'
    reviews, appeals and automatic rules are trusted and only weighted.
    """
    if feedback.source == "user_report" and (
        reporter_count > settings.reporter_daily_cap or target_count > settings.target_daily_cap
    ):
        return 0.0
    return settings.weight(feedback.source)


def reputation_calls(labelled: Labelled, store_keys: Keys, ttl_s: int, memo_ttl_s: int) -> list[Call]:
    """Reputation updates for the labelled event's sender, domain and URL domains."""
    if labelled.weight <= 0:
        return []
    feedback, row = labelled.feedback, labelled.row
    targets = [(SENDER, row.sender), (SENDER_DOMAIN, row.sender_domain)]
    targets += [(URL_DOMAIN, domain) for domain in row.url_domains]
    if row.linked is not None:  # a key rotation's grace period: the next generation learns it too
        targets += [(SENDER, row.linked.sender), (SENDER_DOMAIN, row.linked.sender_domain)]
        targets += [(URL_DOMAIN, domain) for domain in row.linked.url_domains]
    return [
        report(
            entity,
            pseudonym,
            feedback.label,
            labelled.weight,
            labelled.at,
            f"{feedback.feedback_id}.{index}",
            store_keys,
            ttl_s,
            memo_ttl_s,
        )
        for index, (entity, pseudonym) in enumerate(targets)
    ]


def training_weight(labelled: Labelled, settings: FeedbackSettings) -> float:
    """The weight a label carries in training: user reports only when the settings say so."""
    if labelled.feedback.source == "user_report" and not settings.train_on_user_reports:
        return 0.0
    return labelled.weight


def example(labelled: Labelled, settings: FeedbackSettings, keys: ExampleKeys) -> TrainingExample:
    """The training example of an accepted label, signed with the training-example key."""
    return keys.sign(
        TrainingExample(
            event_id=labelled.row.event_id,
            kind=labelled.row.kind,
            label=1 if labelled.feedback.label == "abuse" else 0,
            weight=training_weight(labelled, settings),
            source=labelled.feedback.source,
            labelled_at=labelled.at,
            row=labelled.row,
        )
    )


async def join(
    items: Sequence[Arrival],
    served: ServedRows,
    ledger: FeedbackLedger,
    pseudonymiser: Pseudonymiser,
    settings: FeedbackSettings,
    stats: WorkerStats,
    now: float,
) -> tuple[list[Labelled], list[DeadLetter]]:
    """Accept, weigh or refuse a batch of authentic labels (four pipelined round trips).

    A label is accepted once per ``feedback_id``: the ledger remembers the
    position it was first read from, so the same label read again from that
    position (its batch was not confirmed before a crash) is accepted again
    and its example emitted again, while a copy from anywhere else is a
    duplicate. (Reputation reports are memoised by ``feedback_id``; the daily
    counts behind the caps count a re-read label twice.)
    """
    rows = await served.recall([item.feedback.event_id for item in items])
    letters = []
    known = []
    for item, row in zip(items, rows, strict=True):
        if row is None:
            stats.feedback_unknown += 1
            reason = f"unknown or expired event {item.feedback.event_id}"
            letters.append(DeadLetter.of(item.position, reason, item.raw, int(now * 1000)))
        else:
            known.append((item, row))
    fresh = await ledger.first_time(
        [item.feedback.feedback_id for item, _ in known], [_claim(item.position) for item, _ in known]
    )
    accepted = [pair for pair, first in zip(known, fresh, strict=True) if first]
    stats.feedback_duplicates += len(known) - len(accepted)
    if not accepted:
        return [], letters
    day = math.floor(now / 86400)
    counts = await ledger.count(
        [pseudonymiser.address(item.feedback.reporter) for item, _ in accepted],
        [row.sender if item.feedback.source == "user_report" else None for item, row in accepted],
        day,
    )
    labelled = []
    for (item, row), (reporter_count, target_count) in zip(accepted, counts, strict=True):
        weight = weigh(item.feedback, reporter_count, target_count, settings)
        if weight == 0.0:
            stats.feedback_capped += 1
        labelled.append(Labelled(item.feedback, row, weight, item.at))
    return labelled, letters


def _claim(position: SourcePosition) -> str:
    """What the ledger remembers of the first reading of a label: where it was read."""
    return f"{position.topic}/{position.partition}/{position.offset}"


def register(
    app: Any,
    source: Any,
    examples_out: Any,
    dead_letters: Any,
    settings: WardenSettings,
    store: FeatureStore,
    keys: Keys,
    served: ServedRows,
    ledger: FeedbackLedger,
    pseudonymiser: Pseudonymiser,
    stats: WorkerStats,
    clock: Callable[[], float] = time.time,
) -> None:
    """Declare the feedback agent on ``app`` for the ``source`` (feedback) topic.

    Raises :class:`~streams.exceptions.SettingsError` outside development without a
    training-example key (the worker does not start).
    """
    source_keys = SourceKeys.from_settings(settings)
    example_keys = ExampleKeys.from_settings(settings)
    unkeyed = [source for source in SOURCES if source not in source_keys.sources]
    if unkeyed:
        log.warning("no key for feedback source(s) %s: their labels go to dead letters", ", ".join(unkeyed))
    examples_out = Output(app, examples_out)
    dead_letters = Output(app, dead_letters)

    async def feedback(stream: Any) -> None:
        async for events in stream.take_events(
            settings.worker.batch_size, within=settings.worker.batch_within_s
        ):
            # The batch is held until the broker has its outputs (see Deliveries.release).
            sent = Deliveries(app, events)
            now = clock()
            stats.events_in["feedback"] += len(events)
            items = []
            for event in events:
                message = event.message
                position = SourcePosition(
                    topic=message.topic, partition=message.partition, offset=message.offset
                )
                raw = message.value or b""
                try:
                    label = authentic(raw, source_keys)
                except MalformedRecord as exc:
                    stats.dead_letter(exc.reason)
                    letter = DeadLetter.of(position, exc.reason, raw, int(now * 1000))
                    await dead_letters.send(sent, key=position.topic.encode(), value=encode(letter))
                    continue
                at = trusted_event_time(int(message.timestamp * 1000), None, now, settings)
                items.append(Arrival(label, position, raw, at))
            if not items:
                await sent.release(stream)
                continue
            labelled, letters = await join(
                items, served, ledger, pseudonymiser, settings.feedback, stats, now
            )
            for letter in letters:
                stats.dead_letter(letter.reason)
                await dead_letters.send(sent, key=letter.source.topic.encode(), value=encode(letter))
            calls = [
                call
                for item in labelled
                for call in reputation_calls(
                    item, keys, settings.redis.ttl_seconds, settings.redis.memo_ttl_seconds
                )
            ]
            if calls:
                await store.apply_calls(calls)
            for item in labelled:
                stats.feedback_accepted += 1
                await examples_out.send(
                    sent,
                    key=item.row.event_id.encode(),
                    value=encode(example(item, settings.feedback, example_keys)),
                )
            await sent.release(stream)

    app.agent(source, name=f"{settings.worker.app_id}.feedback")(feedback)
