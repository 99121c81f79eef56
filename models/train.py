"""Training a mail classifier: token table and LightGBM on a time-ordered split, then a refit.

The newest ``validation_share`` of the training window (by event time) is
held out first: a model fitted on the older part (token table learned on that
part, its rows' evidence cross-fitted so that no row's evidence saw its own
label) stops boosting early on it and sets the policy thresholds at the
target false-positive rates from its scores there, rows it never saw. The
shipped model is then refitted on the whole window, validation rows included:
the token table on every row, and as many trees per row as early stopping
chose (``ceil(trees * rows / fitted rows)``). Under drift the newest rows are
the most like the mail to come (``warden evaluate --protocol folds`` measures
the refit against the early-stopped model on forward folds inside the
training window, ``WARDEN_MODELS__REFIT``). Nothing after the training window
is ever seen.

On the corpus the training window is the forward split's first half
(:func:`streams.sources.corpus.split`); ``warden evaluate``'s static protocol trains
through exactly :func:`corpus_candidate`, so the model it measures is the one
``warden train`` registers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np

from warden.features.definitions import SCHEMAS
from warden.features.ingest.pseudonym import KeyRing, Pseudonymiser
from warden.features.tokens import TokenTable, cross_fitted_evidence
from warden.models.dataset import Dataset, build
from warden.models.exceptions import TrainingError
from warden.models.export import onnx_scores, parity, parity_rows, session, to_onnx
from warden.models.metrics import confusion, roc_auc, threshold_at_fpr, widened_threshold
from warden.models.registry import (
    Candidate,
    DataRange,
    Manifest,
    Parity,
    Registry,
    Thresholds,
    new_version,
)
from warden.streams.settings import ModelSettings, WardenSettings
from warden.streams.sources import corpus


def _params(settings: ModelSettings) -> dict[str, object]:
    return {
        "objective": "binary",
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.3,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": settings.seed,
        "deterministic": True,
        "num_threads": 1,
        "verbosity": -1,
    }


#: Share of the (time-ordered) training rows held out for validation and the gates.
VALIDATION_SHARE = 0.2


def split(data: Dataset, validation_share: float = VALIDATION_SHARE) -> tuple[Dataset, Dataset]:
    """The older rows to fit on and the newest ones to validate on (rows are in time order).

    Called by :func:`train` on every training window; the validation rows are
    the newest ``validation_share`` by time, never a random draw.
    """
    cut = int(len(data) * (1 - validation_share))
    return data.take(slice(0, cut)), data.take(slice(cut, None))


def train(
    data: Dataset,
    settings: ModelSettings,
    source: str,
    validation_share: float = VALIDATION_SHARE,
    version: str | None = None,
    *,
    widen_thresholds: bool = False,
    validation: np.ndarray | None = None,
) -> Candidate:
    """Train, export and parity-check a candidate on ``data`` (rows in time order).

    ``validation`` (a boolean mask over ``data``) names the rows that stop
    boosting and set the thresholds, instead of the newest ``validation_share``
    (``warden retrain`` draws them across its window, so that the newest labels
    are fitted on). Raises TrainingError when the data cannot support a model.
    """
    if len(data) < 50:
        raise TrainingError(f"{len(data)} rows are too few to train on")
    if validation is None:
        fit, valid = split(data, validation_share)
    else:
        fit, valid = data.take(~validation), data.take(validation)
    for part, name in ((fit, "training"), (valid, "validation")):
        if len(set(part.labels.tolist())) < 2:
            raise TrainingError(f"the {name} window holds one class only")
    schema = SCHEMAS[data.kind]
    params = _params(settings)
    early = _boost(fit, params, schema.feature_names, settings, stop_on=valid)
    valid_rows = valid.rows(valid.evidence(early.tokens))
    # Thresholds from the scores the served graph gives, not the booster's float64 ones.
    scores = onnx_scores(session(to_onnx(early.booster)), valid_rows)
    junk = threshold_at_fpr(valid.labels, scores, settings.junk_fpr)
    block = max(junk, threshold_at_fpr(valid.labels, scores, settings.block_fpr))
    if widen_thresholds:
        # Simulated kinds: a separable validation window would put the thresholds at the very
        # edge of the legitimate scores; the same validation rows are flagged from mid-gap.
        junk = widened_threshold(valid.labels, scores, junk)
        block = max(junk, widened_threshold(valid.labels, scores, block))
    flagged = confusion(valid.labels, scores >= junk)
    early_trees = early.booster.best_iteration or early.booster.num_trees()
    final, trees = early, early_trees
    if settings.refit:
        trees = math.ceil(early_trees * len(data) / len(fit))
        final = _boost(data, params, schema.feature_names, settings, trees=trees)
    booster, tokens = final.booster, final.tokens
    model_bytes = to_onnx(booster)
    metrics = {
        "validation_auc": roc_auc(valid.labels, scores),
        "validation_precision_at_junk": flagged["precision"],
        "validation_recall_at_junk": flagged["recall"],
        "validation_fpr_at_junk": flagged["fpr"],
        "early_stopped_trees": float(early_trees),
        "trees": float(trees),
        "training_rows": float(len(fit)),
        "validation_rows": float(len(valid)),
        "token_table_size": float(len(tokens.weights)),
    }
    rows = parity_rows(booster, valid.rows(valid.evidence(tokens)), seed=settings.seed)
    check = parity(model_bytes, booster, rows, (0.5, junk, block))
    manifest = Manifest(
        version=version or new_version(model_bytes),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        kind=data.kind,
        schema_hash=schema.schema_hash,
        feature_names=list(schema.feature_names),
        thresholds=Thresholds(junk=junk, block=block),
        metrics={k: float(v) for k, v in metrics.items()},
        parity=Parity(
            max_abs_diff=check.max_abs_diff,
            label_flips=check.label_flips,
            ties=check.ties,
            rows=check.rows,
            tolerance=settings.parity_tolerance,
        ),
        data=DataRange(
            first_event_time=float(data.timestamps.min()),
            last_event_time=float(data.timestamps.max()),
            rows=len(data),
            positives=int(data.labels.sum()),
            source=source,
        ),
        onnx_sha256=hashlib.sha256(model_bytes).hexdigest(),
        token_table_sha256=tokens.sha256(),
        trainer={"lightgbm": lgb.__version__, "params": repr(sorted(params.items()))},
    )
    return Candidate(model_bytes, booster, tokens, rows, manifest)


@dataclass(frozen=True)
class _Boosted:
    booster: lgb.Booster
    tokens: TokenTable


def _boost(
    data: Dataset,
    params: dict[str, object],
    feature_names: Sequence[str],
    settings: ModelSettings,
    *,
    stop_on: Dataset | None = None,
    trees: int | None = None,
) -> _Boosted:
    """A token table learned on ``data`` and a booster fitted on its rows (evidence cross-fitted).

    With ``stop_on`` boosting stops early on those rows (at most
    ``settings.num_trees``); otherwise exactly ``trees`` trees are grown.
    """
    tokens = TokenTable.learn(data.tokens, data.labels, data.weights)
    evidence = cross_fitted_evidence(data.tokens, data.labels, seed=settings.seed, sample_weight=data.weights)
    train_set = lgb.Dataset(
        data.rows(evidence),
        label=data.labels,
        weight=data.weights,
        feature_name=list(feature_names),
        free_raw_data=False,
    )
    if stop_on is None:
        booster = lgb.train(params, train_set, num_boost_round=trees or settings.num_trees)
    else:
        stop_rows = stop_on.rows(stop_on.evidence(tokens))
        stop_set = lgb.Dataset(stop_rows, label=stop_on.labels, weight=stop_on.weights, reference=train_set)
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=settings.num_trees,
            valid_sets=[stop_set],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
    booster.free_dataset()
    return _Boosted(booster, tokens)


def corpus_pseudonymiser(settings: WardenSettings) -> Pseudonymiser:
    """The pseudonymiser corpus training uses: the key ring's current generation."""
    return KeyRing.from_settings(settings.privacy).current()


def corpus_candidate(settings: WardenSettings, data: Dataset, part: corpus.Part) -> Candidate:
    """Train on the rows of corpus ``part``; used by ``warden train`` and by ``warden evaluate``.

    Raises TrainingError when the rows cannot support a model.
    """
    return train(data, settings.models, source=f"spam-assassin:{part}")


def train_from_corpus(
    settings: WardenSettings, part: corpus.Part = corpus.FIRST_HALF, *, promote: bool = True
) -> Manifest:
    """Train on a part of the corpus's forward split, register the candidate and (by default) promote it.

    Raises TrainingError (no model), CorpusError (no corpus) or a registry error (not registered).
    """
    data = build(corpus.load(settings.corpus, part), corpus_pseudonymiser(settings))
    candidate = corpus_candidate(settings, data, part)
    registry = Registry.from_settings(settings, signing=True)
    version = registry.register(candidate)
    if promote:
        registry.promote(version)
    return candidate.manifest
