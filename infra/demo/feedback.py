"""The feedback loop of ``warden demo``, with a control arm.

A new campaign starts (wave 1 of :mod:`streams.sources.campaign`); operators label the
scored mails and half of wave 1; the app backend forges labels for the other
half (refused); ``warden retrain`` trains a candidate on the labels, and the
worker swaps to it if the gate promotes it; then wave 2 arrives, the same
fraud rewritten (templates, senders and link domains not in wave 1).

The claim "feedback taught the model the campaign" needs a control: a
candidate retrained the same way on the same examples minus the campaign's
labels. The champion, the control and the candidate retrained with the
labels are each scored on wave 2's rows as the worker served them (read back
from Redis), at each model's own junk threshold: the difference between the
last two is what the labels did.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from warden.features.store.redis_client import async_client
from warden.features.store.served import ServedRows
from warden.models import retrain
from warden.models.dataset import Dataset
from warden.models.registry import Registry
from warden.models.scorer import Scorer
from warden.streams import broker
from warden.streams.exceptions import MalformedRecord
from warden.streams.feedback_auth import ExampleKeys, SourceKeys
from warden.streams.records import (
    DeadLetter,
    Feedback,
    MailEvent,
    ServedRow,
    TrainingExample,
    Verdict,
    decode,
    encode,
)
from warden.streams.settings import WardenSettings, development_feedback_key
from warden.streams.sources import corpus
from warden.streams.sources import feedback as feedback_source
from warden.streams.sources.campaign import campaign
from warden.streams.sources.replay import replay, send_raw
from warden.streams.topics import Topics

#: Mails per campaign wave; half of wave 1 is labelled.
WAVE = 200

Step = Callable[[str], None]


def _await_verdicts(
    settings: WardenSettings, topics: Topics, ids: set[str], timeout_s: float
) -> dict[str, Verdict]:
    found: dict[str, Verdict] = {}
    reader = broker.TopicReader(settings.kafka, (topics.verdicts,))
    try:
        for message in reader.until(lambda: ids <= set(found), timeout_s):
            verdict = decode(Verdict, message.value or b"")
            if verdict.event_id in ids:
                found.setdefault(verdict.event_id, verdict)
    finally:
        reader.close()
    return found


def _await_examples(settings: WardenSettings, topics: Topics, count: int, timeout_s: float) -> set[str]:
    """The event ids of the signed training examples seen, once ``count`` are (or at the deadline)."""
    keys = ExampleKeys.from_settings(settings)
    seen: set[str] = set()
    reader = broker.TopicReader(settings.kafka, (topics.training_examples,))
    try:
        for message in reader.until(lambda: len(seen) >= count, timeout_s):
            try:
                seen.add(keys.authentic(message.value or b"").event_id)
            except MalformedRecord:
                continue  # not learned from by retrain either: not counted here
    finally:
        reader.close()
    return seen


def forge_labels(settings: WardenSettings, topics: Topics, event_ids: list[str]) -> int:
    """The app backend, which holds only the user-report key, sends ``ops_review`` labels clearing
    the campaign; returns how many the worker refused (dead letters naming a bad signature)."""
    backend = settings.feedback.key("user_report") or development_feedback_key("user_report")
    forger = SourceKeys({"ops_review": backend.get_secret_value().encode()})
    now = time.time()
    labels = [
        forger.sign(
            Feedback(
                feedback_id=f"forged-{event_id}",
                event_id=event_id,
                label="legit",
                source="ops_review",
                reporter="app-backend",
                at=now,
            )
        )
        for event_id in event_ids
    ]
    producer = broker.producer(settings.kafka)
    try:
        send_raw(producer, [(topics.feedback, label.event_id.encode(), encode(label)) for label in labels])
    finally:
        producer.close()
    refused: set[str] = set()
    reader = broker.TopicReader(settings.kafka, (topics.dead_letters,))
    try:
        for message in reader.until(lambda: len(refused) >= len(labels), 120):
            letter = decode(DeadLetter, message.value or b"")
            if letter.source.topic == topics.feedback.name and "signature does not match" in letter.reason:
                refused.add(f"{letter.source.partition}/{letter.source.offset}")
    finally:
        reader.close()
    return len(refused)


def _model_version(settings: WardenSettings) -> str:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(json.loads(response.read()).get("model_version", ""))


def _labels(mails: Sequence[corpus.CorpusMail], campaign_ids: Sequence[str]) -> list[Feedback]:
    """Operators' labels: every scored corpus mail by its folder, and ``campaign_ids`` as abuse."""
    now = time.time()
    truth = [(m.event.event_id, m.is_spam) for m in mails] + [(e, True) for e in campaign_ids]
    return [
        Feedback(
            feedback_id=f"demo-{event_id}",
            event_id=event_id,
            label="abuse" if abuse else "legit",
            source="ops_review",
            reporter="ops-team",
            at=now,
        )
        for event_id, abuse in truth
    ]


def without(examples: Sequence[TrainingExample], event_ids: set[str]) -> list[TrainingExample]:
    """The control arm's examples: the same ones minus those of ``event_ids`` (the campaign's labels)."""
    return [e for e in examples if e.event_id not in event_ids]


def where_labelled(data: Dataset, key: bytes, share: float, event_ids: set[str]) -> dict[str, int]:
    """How many of ``event_ids``' rows retrain fits on, validates on, and holds out for its gate."""
    parts = retrain.cut(data, key, share)
    fitted = {e for e, v in zip(parts.pool.event_ids, parts.validation, strict=True) if not v}
    validated = set(parts.pool.event_ids) - fitted
    return {
        "fit": len(event_ids & fitted),
        "validation": len(event_ids & validated),
        "gate_holdout": len(event_ids & set(parts.holdout.event_ids)),
    }


def shares(scorer: Scorer, rows: Sequence[ServedRow]) -> tuple[float, float]:
    """Shares of ``rows`` (all abuse) that ``scorer`` junks or blocks, and blocks, at its own thresholds.

    Blocked is the finer figure: when both arms flag every mail, it still
    shows which one is surer.
    """
    if not rows:
        return float("nan"), float("nan")
    matrix = np.asarray(
        [scorer.schema.row(r.content, scorer.tokens.evidence(r.tokens), r.aggregates) for r in rows],
        dtype=np.float32,
    ).reshape(len(rows), len(scorer.schema.feature_names))
    actions = [scorer.policy.decide(float(s)) for s in scorer.score(matrix)]
    return sum(a != "allow" for a in actions) / len(rows), sum(a == "block" for a in actions) / len(rows)


async def _served(settings: WardenSettings, event_ids: list[str]) -> list[ServedRow]:
    client = async_client(settings.redis)
    try:
        served = ServedRows(client, settings.redis.key_prefix, settings.feedback.row_ttl_seconds)
        rows = await served.recall(event_ids)
    finally:
        await client.aclose()
    return [row for row in rows if row is not None]


def _control(settings: WardenSettings, examples: list[TrainingExample], key: bytes) -> Scorer:
    """The candidate retrain would train on ``examples`` (the same cut and settings), unregistered."""
    data = retrain.dataset(examples)
    candidate, _ = retrain.fit_candidate(data, settings, key, retrain.version_id(data, settings))
    return Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens)


def close_the_loop(
    settings: WardenSettings, topics: Topics, mails: list[corpus.CorpusMail], step: Step
) -> dict[str, object]:
    """A new campaign starts; operators label; retrain; the worker swaps; wave 2; the three arms."""
    start = max(m.event_time for m in mails) + 86_400
    recipients = sorted({r for m in mails[:300] for r in m.event.recipients})[:60]
    first = campaign(WAVE, start, recipients, wave=1)
    second = campaign(WAVE, max(e.timestamp for e in first) + 3_600, recipients, wave=2)
    registry = Registry.from_settings(settings)
    champion_version = registry.current()
    producer = broker.producer(settings.kafka)
    try:
        step(f"a new campaign starts: {WAVE} invoice-fraud mails (wave 1) the first model has never seen ...")
        replay(first, producer, topics.mail_events)
        before = _await_verdicts(settings, topics, {e.event_id for e in first}, 180)
        labelled_campaign = [e.event_id for e in first[::2]]
        labels = _labels(mails, labelled_campaign)
        step(f"operators label {len(labels):,} scored mails (half of wave 1 among them) ...")
        feedback_source.send(settings, labels)
        forged = [e.event_id for e in first[1::2]]
        step(f"the app backend forges {len(forged)} ops_review labels clearing the other half ...")
        refused = forge_labels(settings, topics, forged)
        joined = _await_examples(settings, topics, len(labels), 180)
        learned = len(joined & set(forged))
        step(
            f"{len(joined):,} training examples joined; {refused} forged labels refused, {learned} learned; "
            "running `warden retrain` ..."
        )
        started = time.monotonic()
        result = retrain.retrain(settings, min_examples=200)
        if result.outcome == "promoted":
            broker.announce(settings, "promote", result.version)
            while _model_version(settings) != result.version and time.monotonic() - started < 120:
                time.sleep(0.05)
        swap_s = time.monotonic() - started
        step(
            f"retrain: {retrain.gate_line(result)}; worker on {_model_version(settings)} after {swap_s:.1f} s"
        )
        step(f"wave 2: {WAVE} mails of the same fraud with templates, senders and link domains not in wave 1")
        replay(second, producer, topics.mail_events)
        after = _await_verdicts(settings, topics, {e.event_id for e in second}, 180)
    finally:
        producer.close()
    arms = _arms(settings, champion_version, result, set(labelled_campaign), second, step)
    recall_before = sum(v.action != "allow" for v in before.values()) / max(1, len(before))
    recall_after = sum(v.action != "allow" for v in after.values()) / max(1, len(after))
    return {
        "campaign_recall_before": round(recall_before, 4),
        "campaign_recall_after": round(recall_after, 4),
        "retrain_outcome": result.outcome,
        "retrained_version": result.version,
        "retrain_gate": {k: round(v, 6) for k, v in result.figures.items() if k != "seconds"},
        "retrain_to_swap_s": round(swap_s, 1),
        "versions_after": sorted({v.model_version for v in after.values()}),
        "forged_labels": {"sent": len(forged), "refused": refused, "learned": learned},
        **arms,
    }


def _arms(
    settings: WardenSettings,
    champion_version: str | None,
    result: retrain.RetrainResult,
    labelled_campaign: set[str],
    second: Sequence[MailEvent],
    step: Step,
) -> dict[str, object]:
    """Champion, control and treated candidate, each on wave 2's rows as served."""
    step("control arm: the same retrain on the same examples without the campaign's labels ...")
    examples = retrain.read_examples(settings).examples
    key = retrain.holdout_key(settings)
    with_labels = retrain.dataset(examples)
    placed = where_labelled(with_labels, key, settings.models.gate_holdout_share, labelled_campaign)
    control_examples = without(examples, labelled_campaign)
    control = _control(settings, control_examples, key)
    registry = Registry.from_settings(settings)
    rows = asyncio.run(_served(settings, [e.event_id for e in second]))
    treated = None if result.version is None else Scorer.from_registry(registry, result.version)
    champion = None if champion_version is None else Scorer.from_registry(registry, champion_version)
    arms = {"champion": champion, "control": control, "with_labels": treated}
    figures = {name: None if scorer is None else shares(scorer, rows) for name, scorer in arms.items()}
    return {
        "wave2_rows_served": len(rows),
        "wave2_recall": {k: None if v is None else round(v[0], 4) for k, v in figures.items()},
        "wave2_blocked": {k: None if v is None else round(v[1], 4) for k, v in figures.items()},
        "campaign_labels_placed": placed,
        "control": {
            "version": control.version,
            "examples": len(control_examples),
            "examples_with_labels": len(examples),
        },
    }


def feedback_lines(summary: Mapping[str, Any]) -> list[str]:
    """The summary's lines for the feedback loop and its control arm."""
    wave2, placed, control = summary["wave2_recall"], summary["campaign_labels_placed"], summary["control"]
    blocked = summary["wave2_blocked"]

    def effect(figures: Mapping[str, float | None]) -> str:
        treated, untreated = figures["with_labels"], figures["control"]
        return "n/a" if treated is None or untreated is None else f"{treated - untreated:+.4f}"

    return [
        f"feedback loop        wave 1 recall {summary['campaign_recall_before']} (champion, served); "
        f"retrain {summary['retrain_outcome']}, worker on the new model "
        f"{summary['retrain_to_swap_s']} s after the retrain started",
        f"                     labelled wave-1 mails in retrain's rows: {placed['fit']} fitted, "
        f"{placed['validation']} validation (early stopping and thresholds; the refit fits them too), "
        f"{placed['gate_holdout']} gate holdout",
        f"wave 2 recall        champion {wave2['champion']}  control (retrained without the campaign "
        f"labels, {control['examples']:,} examples) {wave2['control']}  retrained with them "
        f"({control['examples_with_labels']:,} examples) {wave2['with_labels']}  -> labels' effect "
        f"{effect(wave2)}",
        f"wave 2 blocked       champion {blocked['champion']}  control {blocked['control']}  "
        f"retrained with them {blocked['with_labels']}  -> labels' effect {effect(blocked)}",
        f"                     ({summary['wave2_rows_served']} rows as served; the worker's own verdicts: "
        f"recall {summary['campaign_recall_after']} with {', '.join(map(str, summary['versions_after']))})",
    ]
