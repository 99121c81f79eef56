"""``warden retrain``: a batch job any scheduler can run (cron, a CronJob, Airflow).

Reads ``training-examples`` (kafka-python, no consumer group) for a time
window and first sets the gate's holdout aside: a share of the labelled rows
drawn by a keyed hash of the event id (:func:`cut`). The candidate is trained
on the rest only (its early stopping, thresholds and token table never see a
held-out row), its parity is checked, and champion and candidate are scored
on the holdout. The candidate is registered, and promoted and announced only
if it is strictly better (:data:`GATE_RULE`): a tie keeps the champion. Both
figures and the holdout's size are printed and logged. Running workers follow
the registry pointer and switch at a batch boundary.

Only examples signed by a worker's feedback agent are learned from
(:class:`~streams.feedback_auth.ExampleKeys`): an example produced to the topic
by anyone else, unsigned, or edited after signing is refused, counted by
reason, logged, and reported in the summary line (``examples_refused``).

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
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from warden.features.definitions import AGGREGATES, CONTENT, SCHEMA_HASH
from warden.models import runs
from warden.models.dataset import Dataset
from warden.models.exceptions import ModelsError, NoModel, TrainingError
from warden.models.metrics import recall_at_fpr, roc_auc
from warden.models.registry import Candidate, Registry
from warden.models.scorer import Scorer
from warden.models.train import VALIDATION_SHARE, train
from warden.streams import reader
from warden.streams.exceptions import ExitCode
from warden.streams.feedback_auth import ExampleKeys
from warden.streams.records import TrainingExample
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics

log = logging.getLogger(__name__)

Outcome = Literal["promoted", "not_promoted", "too_little_data", "holdout_too_small", "unchanged"]

#: The exit status of each outcome (from the one table, :class:`~warden.streams.exceptions.ExitCode`).
EXIT_CODES: dict[str, ExitCode] = {
    "promoted": ExitCode.OK,
    "unchanged": ExitCode.OK,
    "not_promoted": ExitCode.NOT_PROMOTED,
    "too_little_data": ExitCode.TOO_LITTLE_DATA,
    # Too few labelled rows of a class for the gate to judge: too little data, as far as a scheduler cares.
    "holdout_too_small": ExitCode.TOO_LITTLE_DATA,
}
#: When a candidate replaces the champion (both scored on the gate's holdout).
GATE_RULE = "holdout ROC AUC strictly above the champion's, and recall at the junk FPR not below it"
#: What the key drawing the gate's holdout is derived for (:meth:`ExampleKeys.derived`).
HOLDOUT_KEY_PURPOSE = b"warden retrain gate holdout"
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
    #: Records of training-examples refused, by reason (unsigned, forged, not an example).
    refused: dict[str, int] = field(default_factory=dict)
    #: Why nothing was trained (too little data, a holdout too small to judge), in one line.
    reason: str | None = None


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


@dataclass
class Examples:
    """What was read from ``training-examples``: the authentic examples, and the refused by reason."""

    examples: list[TrainingExample]
    refused: Counter[str]


def read_examples(
    settings: WardenSettings, since: float | None = None, until: float | None = None
) -> Examples:
    """Every authentic training example labelled within [since, until) (epoch seconds; None: open).

    Called by retrain and by every other reader that learns from examples.
    A record that is not an example, or not signed with the training-example
    key, is refused and counted, never returned. Raises
    :class:`~streams.exceptions.SettingsError` outside development without the key.
    """
    keys = ExampleKeys.from_settings(settings)
    topics = Topics.from_settings(settings.kafka)
    read = reader.read_topics(settings.kafka, (topics.training_examples,), keys.authentic)
    examples = [
        item
        for item in read.records
        if (since is None or item.labelled_at >= since) and (until is None or item.labelled_at < until)
    ]
    refused = read.reasons()
    if refused:
        log.warning(
            "refused %d records of %s: %s",
            len(read.malformed),
            topics.training_examples.name,
            read.describe_malformed(),
        )
    return Examples(examples, refused)


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


@dataclass(frozen=True)
class Parts:
    """A labelled dataset cut three ways, each part in time order."""

    #: The candidate's rows: it fits on them and validates on ``pool.take(validation)``.
    pool: Dataset
    #: Boolean mask over ``pool``: the rows that stop boosting and set the thresholds.
    validation: np.ndarray
    #: The gate's rows: never fitted, validated or learned tokens from.
    holdout: Dataset


def draws(event_ids: Sequence[str], key: bytes) -> np.ndarray:
    """One number in [0, 1) per event id, from HMAC-SHA256 under ``key``.

    Keyed, so whoever chooses event ids cannot steer their rows into or out
    of the holdout; deterministic, so the same examples are cut the same way
    every run, and a row keeps its part when other rows come and go: a
    champion that retrain trained (same key and share) never fitted on a row
    its successor's gate judges it on.
    """
    return np.asarray(
        [
            int.from_bytes(hmac.new(key, event_id.encode("utf-8"), hashlib.sha256).digest()[:8], "big")
            / 2**64
            for event_id in event_ids
        ],
        dtype=np.float64,
    ).reshape(len(event_ids))


def cut(data: Dataset, key: bytes, holdout_share: float, validation_share: float = VALIDATION_SHARE) -> Parts:
    """Set the gate's holdout aside, then mark the candidate's validation rows among the rest.

    Drawn across the whole window, not as its newest slice: the newest labels
    are why a retrain runs (a new campaign), so the candidate must fit on them.
    """
    drawn = draws(data.event_ids, key)
    held = drawn < holdout_share
    validation = drawn[~held] < holdout_share + (1 - holdout_share) * validation_share
    return Parts(pool=data.take(~held), validation=validation, holdout=data.take(held))


def holdout_key(settings: WardenSettings) -> bytes:
    """The key :func:`cut` draws with. Raises SettingsError as ExampleKeys.from_settings does."""
    return ExampleKeys.from_settings(settings).derived(HOLDOUT_KEY_PURPOSE)


def holdout_problem(holdout: Dataset, minimum: int) -> str | None:
    """Why ``holdout`` is too small to judge a candidate (one line), or None."""
    abuse = int(holdout.labels.sum())
    legit = len(holdout) - abuse
    if min(abuse, legit) >= minimum:
        return None
    return (
        f"the gate's holdout holds {abuse} abuse and {legit} legitimate rows of {len(holdout)}; "
        f"judging a candidate needs at least {minimum} of each (label more events, widen "
        "--since/--until, or change WARDEN_MODELS__GATE_MIN_PER_CLASS)"
    )


def fit_candidate(
    data: Dataset, settings: WardenSettings, key: bytes, version: str
) -> tuple[Candidate, Parts]:
    """The candidate trained on ``data`` without the gate's holdout (and the cut it was trained on).

    Called by :func:`retrain`, and by the demo for its control arm. Raises TrainingError.
    """
    parts = cut(data, key, settings.models.gate_holdout_share)
    candidate = train(
        parts.pool, settings.models, source="training-examples", version=version, validation=parts.validation
    )
    return candidate, parts


def gate_figures(scorer: Scorer, holdout: Dataset, fpr: float) -> tuple[float, float]:
    """ROC AUC and recall at ``fpr`` of ``scorer`` on ``holdout``."""
    rows = holdout.rows(holdout.evidence(scorer.tokens))
    scores = scorer.score(rows)
    return roc_auc(holdout.labels, scores), recall_at_fpr(holdout.labels, scores, fpr)


def judge(
    candidate: Scorer, champion: Scorer | None, holdout: Dataset, fpr: float
) -> tuple[bool, dict[str, float]]:
    """Whether ``candidate`` replaces ``champion`` by :data:`GATE_RULE`, with the figures that decided.

    Without a champion the candidate is promoted. Equal figures keep the champion.
    """
    abuse = int(holdout.labels.sum())
    figures = {"holdout_rows": float(len(holdout)), "holdout_abuse": float(abuse)}
    figures["holdout_legit"] = float(len(holdout) - abuse)
    figures["candidate_auc"], figures["candidate_recall"] = gate_figures(candidate, holdout, fpr)
    if champion is None:
        return True, figures
    figures["champion_auc"], figures["champion_recall"] = gate_figures(champion, holdout, fpr)
    better = (
        figures["candidate_auc"] > figures["champion_auc"]
        and figures["candidate_recall"] >= figures["champion_recall"]
    )
    return better, figures


def decide(
    data: Dataset, settings: WardenSettings, registry: Registry, key: bytes, min_examples: int
) -> RetrainResult:
    """Cut, train, judge, register and maybe promote, on a dataset of labelled rows.

    Called by :func:`retrain` with the registry's lock held. Trains nothing when
    there are too few rows, one class, or a holdout too small to judge.
    """
    figures: dict[str, float] = {"rows": float(len(data))}
    if len(data) < min_examples or len(set(data.labels.tolist())) < 2:
        abuse = int(data.labels.sum())
        reason = (
            f"{len(data)} labelled rows ({abuse} abuse, {len(data) - abuse} legitimate); "
            f"retraining needs at least {min_examples} rows and both classes"
        )
        return RetrainResult("too_little_data", None, len(data), figures, reason=reason)
    version = version_id(data, settings)
    if version in registry.versions():
        return RetrainResult("unchanged", version, len(data), figures)
    parts = cut(data, key, settings.models.gate_holdout_share)
    problem = holdout_problem(parts.holdout, settings.models.gate_min_per_class)
    if problem is not None:
        figures["holdout_rows"] = float(len(parts.holdout))
        log.warning("retrain: %s", problem)
        return RetrainResult("holdout_too_small", None, len(data), figures, reason=problem)
    try:
        candidate, _ = fit_candidate(data, settings, key, version)
    except TrainingError as exc:
        return RetrainResult("too_little_data", None, len(data), figures, reason=str(exc))
    challenger = Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens)
    try:
        champion: Scorer | None = Scorer.from_registry(registry)
    except NoModel:
        champion = None
    passes, judged = judge(challenger, champion, parts.holdout, settings.models.junk_fpr)
    figures.update(judged)
    figures["candidate_training_rows"] = float(len(parts.pool) - int(parts.validation.sum()))
    figures["candidate_validation_rows"] = float(parts.validation.sum())
    manifest = candidate.manifest.model_copy(
        update={"metrics": {**candidate.manifest.metrics, **{f"gate_{k}": v for k, v in figures.items()}}}
    )
    registry.register(replace(candidate, manifest=manifest))
    if passes:
        registry.promote(version)
    result = RetrainResult("promoted" if passes else "not_promoted", version, len(data), figures)
    log.info("retrain: %s", gate_line(result))
    return result


def retrain(
    settings: WardenSettings,
    since: float | None = None,
    until: float | None = None,
    min_examples: int = 200,
) -> RetrainResult:
    """One run: read, cut, train, check, judge, register, and maybe promote (the caller announces).

    The outcome (``failed`` when an error stops the run) is recorded in the registry for the
    workers' metrics (:mod:`models.runs`); a run refused by the lock records nothing.
    """
    registry = Registry.from_settings(settings, signing=True)
    key = holdout_key(settings)
    started = time.monotonic()
    with registry_lock(registry):
        try:
            read = read_examples(settings, since, until)
            result = decide(dataset(read.examples), settings, registry, key, min_examples)
        except Exception:
            # Recorded for the workers to export (the alert on a failing retrain), then raised as before.
            runs.write_last_run(registry.root, "failed", time.time())
            raise
        runs.write_last_run(registry.root, result.outcome, time.time())
    result.refused = dict(read.refused)
    result.figures = {
        "examples_read": float(len(read.examples)),
        "examples_refused": float(sum(read.refused.values())),
        **result.figures,
        "seconds": time.monotonic() - started,
    }
    return result


def gate_line(result: RetrainResult) -> str:
    """The gate's decision in words, with both figures and the holdout's size (printed and logged)."""
    f = result.figures
    if result.reason is not None:
        return f"{result.outcome}: {result.reason}"
    if "candidate_auc" not in f:
        return f"{result.outcome}: {result.version}"
    size = (
        f"on a holdout of {f['holdout_rows']:.0f} rows ({f['holdout_abuse']:.0f} abuse, "
        f"{f['holdout_legit']:.0f} legitimate) the candidate never saw"
    )
    candidate = f"candidate AUC {f['candidate_auc']:.6f} recall {f['candidate_recall']:.4f}"
    if "champion_auc" not in f:
        return f"{result.outcome} {result.version}: {candidate} {size}; no champion"
    return (
        f"{result.outcome} {result.version}: {candidate} vs champion AUC {f['champion_auc']:.6f} "
        f"recall {f['champion_recall']:.4f} {size} (rule: {GATE_RULE})"
    )


def summary(result: RetrainResult) -> str:
    """The one-line JSON a scheduler's log keeps."""
    return json.dumps(
        {
            "outcome": result.outcome,
            "version": result.version,
            "examples": result.examples,
            "exit_code": int(EXIT_CODES[result.outcome]),
            **{k: round(v, 6) for k, v in result.figures.items()},
            "refused": result.refused,
            **({"reason": result.reason} if result.reason is not None else {}),
        }
    )
