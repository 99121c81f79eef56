"""``warden retrain``: a batch job any scheduler can run (cron, a CronJob, Airflow).

Reads ``training-examples`` (kafka-python, no consumer group) for a time
window, trains a candidate on the rows as they were served, checks parity,
compares it with the champion on the same holdout (the newest 20% of the
examples), registers it, and promotes and announces it only if it beats or
ties the champion on every gate. Running workers follow the registry pointer
and switch at a batch boundary.

Idempotent: the version id is a hash of the examples and the training
settings, so the same input gives the same version, and a second run finds it
registered and changes nothing. A lock file in the registry keeps two runs
from overlapping. Exit codes (:data:`EXIT_CODES`) tell the scheduler what
happened.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from features.definitions import AGGREGATES, CONTENT, SCHEMA_HASH
from infra.settings import WardenSettings
from models.dataset import Dataset
from models.exceptions import ModelsError
from models.metrics import recall_at_fpr, roc_auc
from models.registry import Registry
from models.train import split, train
from serving.exceptions import NoModel
from serving.scorer import Scorer
from streams import broker
from streams.exceptions import MalformedRecord
from streams.records import TrainingExample, decode
from streams.topics import Topics

Outcome = Literal["promoted", "not_promoted", "too_little_data", "unchanged"]

EXIT_PROMOTED = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_PROMOTED = 3
EXIT_TOO_LITTLE_DATA = 4
EXIT_LOCKED = 5
EXIT_CODES: dict[str, int] = {
    "promoted": EXIT_PROMOTED,
    "unchanged": EXIT_PROMOTED,
    "not_promoted": EXIT_NOT_PROMOTED,
    "too_little_data": EXIT_TOO_LITTLE_DATA,
}
#: Which label wins when one event was labelled more than once.
_AUTHORITY = {"appeal": 3, "ops_review": 2, "auto": 1, "user_report": 0}


class RetrainLocked(ModelsError):
    """Another ``warden retrain`` holds the registry's lock."""


@dataclass
class RetrainResult:
    """What a run did, with the figures that decided it."""

    outcome: Outcome
    version: str | None
    examples: int
    figures: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def registry_lock(registry: Registry) -> Iterator[None]:
    """Hold the registry's retrain lock, or raise RetrainLocked at once."""
    registry.root.mkdir(parents=True, exist_ok=True)
    with (registry.root / ".retrain.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainLocked(f"another retrain holds {registry.root / '.retrain.lock'}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_examples(
    settings: WardenSettings, since: float | None, until: float | None
) -> list[TrainingExample]:
    """Every training example labelled within [since, until) (epoch seconds; None: open)."""
    topics = Topics.from_settings(settings.kafka)
    reader = broker.TopicReader(settings.kafka, (topics.training_examples,))
    examples = []
    try:
        quiet = 0
        while quiet < 2:
            batch = reader.poll(1.0)
            quiet = quiet + 1 if not batch else 0
            for message in batch:
                try:
                    item = decode(TrainingExample, message.value or b"")
                except MalformedRecord:
                    continue
                if (since is None or item.labelled_at >= since) and (
                    until is None or item.labelled_at < until
                ):
                    examples.append(item)
    finally:
        reader.close()
    return examples


def dataset(examples: Sequence[TrainingExample]) -> Dataset:
    """One row per event (the most authoritative, then latest, label wins), in event-time order."""
    chosen: dict[str, TrainingExample] = {}
    # Retraining from feedback is for the mail model; calendar and contacts train from the simulator.
    for item in (e for e in examples if e.kind == "mail"):
        best = chosen.get(item.event_id)
        rank = (_AUTHORITY[item.source], item.labelled_at)
        if best is None or rank >= (_AUTHORITY[best.source], best.labelled_at):
            chosen[item.event_id] = item
    ordered = sorted(chosen.values(), key=lambda e: (e.row.timestamp, e.event_id))
    n = len(ordered)
    return Dataset(
        content=np.asarray([e.row.content for e in ordered], dtype=np.float64).reshape(n, len(CONTENT)),
        aggregates=np.asarray([e.row.aggregates for e in ordered], dtype=np.float64).reshape(
            n, len(AGGREGATES)
        ),
        tokens=tuple(tuple(e.row.tokens) for e in ordered),
        labels=np.asarray([e.label for e in ordered], dtype=np.int8),
        timestamps=np.asarray([e.row.timestamp for e in ordered], dtype=np.float64),
        event_ids=tuple(e.event_id for e in ordered),
        folders=tuple(e.source for e in ordered),
        weights=np.asarray([e.weight for e in ordered], dtype=np.float64),
    )


def version_id(data: Dataset, settings: WardenSettings) -> str:
    """The same examples (labels, weights and rows) and settings give the same version."""
    digest = hashlib.sha256()
    digest.update(SCHEMA_HASH.encode())
    digest.update(settings.models.model_dump_json(exclude={"registry_dir"}).encode())
    weights = data.weights if data.weights is not None else np.ones(len(data))
    for event_id, label, weight in zip(data.event_ids, data.labels, weights, strict=True):
        digest.update(f"{event_id}:{int(label)}:{float(weight):.6f};".encode())
    # The rows as served, too: the same labels on different features are different data.
    digest.update(np.ascontiguousarray(data.content).tobytes())
    digest.update(np.ascontiguousarray(data.aggregates).tobytes())
    for tokens in data.tokens:
        digest.update(np.asarray(tokens, dtype=np.int64).tobytes() + b";")
    return f"r-{digest.hexdigest()[:24]}"


def _gates(scorer: Scorer, holdout: Dataset, fpr: float) -> tuple[float, float]:
    rows = holdout.rows(holdout.evidence(scorer.tokens))
    scores = scorer.score(rows)
    return roc_auc(holdout.labels, scores), recall_at_fpr(holdout.labels, scores, fpr)


def retrain(
    settings: WardenSettings,
    since: float | None = None,
    until: float | None = None,
    min_examples: int = 200,
) -> RetrainResult:
    """One run: read, train, check, compare, register, and maybe promote and announce."""
    registry = Registry.from_settings(settings, signing=True)
    started = time.monotonic()
    with registry_lock(registry):
        examples = read_examples(settings, since, until)
        data = dataset(examples)
        figures: dict[str, float] = {"examples_read": float(len(examples)), "rows": float(len(data))}
        if len(data) < min_examples or len(set(data.labels.tolist())) < 2:
            return RetrainResult("too_little_data", None, len(data), figures)
        version = version_id(data, settings)
        if version in registry.versions():
            return RetrainResult("unchanged", version, len(data), figures)
        candidate = train(data, settings.models, source="training-examples", version=version)
        _, holdout = split(data)  # the very rows the candidate was validated on
        fpr = settings.models.junk_fpr
        challenger = Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens)
        figures["candidate_auc"], figures["candidate_recall"] = _gates(challenger, holdout, fpr)
        try:
            champion = Scorer.from_registry(registry)
        except NoModel:
            champion = None
        if champion is not None:
            figures["champion_auc"], figures["champion_recall"] = _gates(champion, holdout, fpr)
        passes = champion is None or (
            figures["candidate_auc"] >= figures["champion_auc"]
            and figures["candidate_recall"] >= figures["champion_recall"]
        )
        manifest = candidate.manifest.model_copy(
            update={"metrics": {**candidate.manifest.metrics, **{f"gate_{k}": v for k, v in figures.items()}}}
        )
        registry.register(replace(candidate, manifest=manifest))
        if passes:
            registry.promote(version)
        figures["seconds"] = time.monotonic() - started
        return RetrainResult("promoted" if passes else "not_promoted", version, len(data), figures)


def summary(result: RetrainResult) -> str:
    """The one-line JSON a scheduler's log keeps."""
    return json.dumps(
        {
            "outcome": result.outcome,
            "version": result.version,
            "examples": result.examples,
            "exit_code": EXIT_CODES[result.outcome],
            **{k: round(v, 6) for k, v in result.figures.items()},
        }
    )
