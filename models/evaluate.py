"""``warden evaluate``: two honest evaluation protocols on the SpamAssassin corpus.

1. *Static, forward split*: every mail in order of receipt (topmost
   ``Received:`` header, :func:`streams.sources.corpus.split`); train on the first
   half, evaluate on the second. The candidate is trained exactly as ``warden
   train`` trains it (:func:`models.train.corpus_candidate`) on rows built from
   the first half alone; the test rows' aggregates continue from the store the
   first half left, as a worker's would, and never see a label.
2. *Online with feedback* (TREC spam-track style): the whole corpus in order of
   receipt; each verdict's true label comes back ``label_delay`` mails later;
   the model is retrained every ``retrain_every`` new labels on everything
   labelled so far; metrics are over the verdicts as they were issued.

Behavioural aggregates are computed as the stream flows (point in time);
Warden's scores come from the served path (ONNX scorer); the text baselines
are trained on exactly the same windows. Nothing from an evaluation window
reaches training: the aggregates, the token table, the thresholds and the
model are computed from the training window only.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from warden.features.ingest.pseudonym import Pseudonymiser
from warden.models import metrics
from warden.models import peers as peer_filters
from warden.models.baselines import NAMES as BASELINE_NAMES
from warden.models.baselines import Baselines
from warden.models.dataset import Dataset, build_parts
from warden.models.exceptions import TrainingError
from warden.models.peers import PeerResult
from warden.models.registry import Candidate
from warden.models.report import (
    MetricRow,
    ModelScores,
    PeerRow,
    ProtocolResult,
    ReportData,
    WorstError,
    render,
)
from warden.models.score_table import ScoreTable
from warden.models.scorer import Scorer
from warden.models.train import corpus_candidate, corpus_pseudonymiser, train
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.corpus import CorpusMail

Metric = Callable[[np.ndarray, np.ndarray], float]

#: Metrics with bootstrap intervals, for every model.
RANKING: dict[str, Metric] = {
    "roc_auc": metrics.roc_auc,
    "1-roca_pct": lambda y, s: 100.0 * (1.0 - metrics.roc_auc(y, s)),
    "recall_at_0.1pct_fpr": lambda y, s: metrics.recall_at_fpr(y, s, 0.001),
    "recall_at_1pct_fpr": lambda y, s: metrics.recall_at_fpr(y, s, 0.01),
}


@dataclass(frozen=True)
class Forward:
    """The corpus under the forward split: training rows, test rows and every mail by event id."""

    training: Dataset
    test: Dataset
    mails: dict[str, CorpusMail]
    pseudonymiser: Pseudonymiser

    def everything(self) -> Dataset:
        """Training then test rows: the whole corpus in order of receipt (the online protocol)."""
        return self.training.then(self.test)


def forward(settings: WardenSettings, mails: Sequence[CorpusMail]) -> Forward:
    """Split ``mails`` forward and build both halves' rows through one store, training half first.

    Called once per ``warden evaluate``; the training rows are what ``warden
    train`` builds from the first half alone.
    """
    first, second = corpus.split(mails)
    pseudonymiser = corpus_pseudonymiser(settings)
    training, test = build_parts([first, second], pseudonymiser)
    return Forward(training, test, {m.event.event_id: m for m in mails}, pseudonymiser)


@dataclass(frozen=True)
class Evaluated:
    """One protocol's outcome: the report section and the plain figures."""

    result: ProtocolResult
    figures: dict[str, dict[str, float]]
    candidate: Candidate | None
    #: Every system's score of every evaluated mail (the per-mail CSV).
    table: ScoreTable | None = None
    #: The peer filters' runs (``--peers``), ok or not.
    peers: tuple[PeerResult, ...] = ()


def warden_scores(candidate: Candidate, data: Dataset) -> np.ndarray:
    """Scores of ``data`` through the served path: token evidence, ONNX scorer."""
    scorer = Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens)
    return scorer.score(data.rows(data.evidence(candidate.tokens)))


def _metric_rows(
    model: str, labels: np.ndarray, scores: np.ndarray, resamples: int, probabilities: bool = True
) -> tuple[list[MetricRow], dict[str, float]]:
    rows, figures = [], {}
    for name, metric in RANKING.items():
        value = metric(labels, scores)
        low, high = metrics.bootstrap_ci(labels, scores, metric, resamples) if resamples else (None, None)
        rows.append(MetricRow(model, name, value, low, high))
        figures[name] = value
    if not probabilities:
        return rows, figures
    for name, value in (
        ("brier", metrics.brier(labels, scores)),
        ("calibration_error", metrics.expected_calibration_error(labels, scores)),
    ):
        rows.append(MetricRow(model, name, value, None, None))
        figures[name] = value
    return rows, figures


def _policy_rows(
    labels: np.ndarray, junk: np.ndarray, block: np.ndarray
) -> tuple[list[MetricRow], dict[str, float]]:
    rows, figures = [], {}
    for action, flagged in (("junk", junk), ("block", block)):
        counts = metrics.confusion(labels, flagged)
        for key in ("precision", "recall", "fpr"):
            name = f"{key}_at_{action}"
            rows.append(MetricRow("warden", name, counts[key], None, None))
            figures[name] = counts[key]
    return rows, figures


def _worst(
    data: Dataset, scores: np.ndarray, mails: dict[str, CorpusMail], pseudonymiser: Pseudonymiser
) -> tuple[WorstError, ...]:
    ham = [i for i in np.argsort(-scores) if data.labels[i] == 0][:8]
    spam = [i for i in np.argsort(scores) if data.labels[i] == 1][:8]
    out = []
    for i in [*ham, *spam]:
        mail = mails[data.event_ids[i]]
        out.append(
            WorstError(
                event_id=data.event_ids[i],
                label=int(data.labels[i]),
                score=float(scores[i]),
                sender=pseudonymiser.address(mail.event.sender),
                subject=mail.event.subject,  # the corpus is public
            )
        )
    return tuple(out)


def _protocol(
    name: str,
    description: str,
    labels: np.ndarray,
    scored: dict[str, np.ndarray],
    junk: np.ndarray,
    block: np.ndarray,
    thresholds: dict[str, float],
    worst: tuple[WorstError, ...],
    resamples: int,
    ranked: dict[str, np.ndarray] | None = None,
) -> tuple[ProtocolResult, dict[str, dict[str, float]]]:
    """One protocol's report section; ``ranked``: scores that are not probabilities (the peers')."""
    rows: list[MetricRow] = []
    figures: dict[str, dict[str, float]] = {}
    for model, scores in scored.items():
        model_rows, model_figures = _metric_rows(model, labels, scores, resamples)
        rows += model_rows
        figures[model] = model_figures
    for model, scores in (ranked or {}).items():
        model_rows, model_figures = _metric_rows(model, labels, scores, resamples, probabilities=False)
        rows += model_rows
        figures[model] = model_figures
    policy_rows, policy_figures = _policy_rows(labels, junk, block)
    rows += policy_rows
    figures["warden"].update(policy_figures)
    models = tuple(ModelScores(m, labels.astype(np.int8), np.clip(s, 0.0, 1.0)) for m, s in scored.items())
    models += tuple(ModelScores(m, labels.astype(np.int8), rank_scale(s)) for m, s in (ranked or {}).items())
    result = ProtocolResult(name, description, models, tuple(rows), thresholds, worst)
    return result, figures


def rank_scale(scores: np.ndarray) -> np.ndarray:
    """Scores of any scale mapped onto [0, 1] by their rank (ties stay tied), for the figures.

    The ROC and precision-recall curves depend only on the order of the scores,
    which this keeps exactly; a squashing function would tie the extremes.
    """
    dense = rankdata(scores, method="dense") - 1.0
    top = float(dense.max()) if len(dense) else 0.0
    return np.asarray(dense / top if top > 0 else np.zeros_like(dense), dtype=np.float64)


def run_peers(
    settings: WardenSettings, train_ids: Sequence[str], test_ids: Sequence[str], mails: dict[str, CorpusMail]
) -> tuple[PeerResult, ...]:
    """The peer filters trained on ``train_ids`` and scoring ``test_ids``, in a private temporary folder."""
    with tempfile.TemporaryDirectory(prefix="warden-peers-") as work:
        return tuple(
            peer_filters.evaluate(
                settings, [mails[i] for i in train_ids], [mails[i] for i in test_ids], Path(work)
            )
        )


def score_table(
    settings: WardenSettings,
    data: Dataset,
    mails: dict[str, CorpusMail],
    scores: dict[str, np.ndarray],
) -> ScoreTable:
    """The per-mail CSV's content for the mails of ``data``."""
    files = corpus.source_files(settings.corpus, download=False)  # mails built by code have none
    names = [f"{files[i].parent.name}/{files[i].name}" if i in files else "" for i in data.event_ids]
    times = np.asarray([mails[i].event_time for i in data.event_ids], dtype=np.float64)
    return ScoreTable(names, list(data.event_ids), data.labels, times, scores)


def static(
    settings: WardenSettings, split: Forward, resamples: int = 500, with_peers: bool = False
) -> Evaluated:
    """Train on the first half as ``warden train`` does, evaluate on the second half.

    With ``with_peers`` the peer filters learn the first half and score the second half too.
    """
    training, test, mails = split.training, split.test, split.mails
    candidate = corpus_candidate(settings, training, corpus.FIRST_HALF)
    scored = {"warden": warden_scores(candidate, test)}
    baselines = Baselines.fit([mails[i] for i in training.event_ids])
    scored.update(baselines.scores([mails[i] for i in test.event_ids]))
    ran = run_peers(settings, training.event_ids, test.event_ids, mails) if with_peers else ()
    ranked = {p.name: p.scores for p in ran if p.scores is not None}
    thresholds = candidate.manifest.thresholds
    result, figures = _protocol(
        "static, forward split",
        f"All mails in order of receipt (topmost Received: header); trained on the first half "
        f"({_counts(training)}, {_span(training)}), evaluated on the second half ({_counts(test)}, "
        f"{_span(test)}). Test rows' aggregates continue from the training half's store and see no "
        "labels. Thresholds were set on the newest 20% of the training half at the target ham "
        "false-positive rates.",
        test.labels,
        scored,
        scored["warden"] >= thresholds.junk,
        scored["warden"] >= thresholds.block,
        thresholds.model_dump(),
        _worst(test, scored["warden"], mails, split.pseudonymiser),
        resamples,
        ranked,
    )
    for peer in ran:
        if peer.status == "ok":
            figures[peer.name].update(
                train_mails_per_cpu_s=peer.train_per_cpu_s, score_mails_per_cpu_s=peer.score_per_cpu_s
            )
    figures["split"] = {
        "training_spam": float(training.labels.sum()),
        "training_ham": float(len(training) - training.labels.sum()),
        "test_spam": float(test.labels.sum()),
        "test_ham": float(len(test) - test.labels.sum()),
    }
    return Evaluated(result, figures, candidate, score_table(settings, test, mails, scored | ranked), ran)


def _counts(data: Dataset) -> str:
    spam = int(data.labels.sum())
    return f"{spam:,} spam + {len(data) - spam:,} ham"


def _span(data: Dataset) -> str:
    if not len(data):
        return "no mail"
    first, last = (
        datetime.fromtimestamp(float(t), UTC).date() for t in (data.timestamps.min(), data.timestamps.max())
    )
    return f"received {first.isoformat()} to {last.isoformat()}"


def online(
    settings: WardenSettings,
    data: Dataset,
    mails: dict[str, CorpusMail],
    pseudonymiser: Pseudonymiser,
    retrain_every: int = 500,
    label_delay: int = 100,
    resamples: int = 500,
) -> Evaluated:
    """Replay everything in order of receipt with delayed labels and periodic retraining."""
    n = len(data)
    scored: dict[str, np.ndarray] = {m: np.full(n, np.nan) for m in ("warden", *BASELINE_NAMES)}
    junk = np.zeros(n, dtype=bool)
    block = np.zeros(n, dtype=bool)
    candidate: Candidate | None = None
    baselines: Baselines | None = None
    retrains = 0
    next_retrain = retrain_every
    start = 0
    while start < n:
        labelled = max(0, start - label_delay)
        if labelled >= next_retrain:
            window = data.take(slice(0, labelled))
            try:
                candidate = train(window, settings.models, source=f"online:{labelled}")
                baselines = Baselines.fit([mails[i] for i in window.event_ids])
                retrains += 1
            except TrainingError:
                pass  # not both classes yet: keep the previous model
            next_retrain = labelled + retrain_every
        # Score until the next retraining point (labels arrive label_delay later).
        stop = min(n, next_retrain + label_delay)
        if candidate is not None and baselines is not None:
            chunk = data.take(slice(start, stop))
            warden = warden_scores(candidate, chunk)
            scored["warden"][start:stop] = warden
            junk[start:stop] = warden >= candidate.manifest.thresholds.junk
            block[start:stop] = warden >= candidate.manifest.thresholds.block
            for name, values in baselines.scores([mails[i] for i in chunk.event_ids]).items():
                scored[name][start:stop] = values
        start = stop
    issued = ~np.isnan(scored["warden"])
    first = int(np.argmax(issued)) if issued.any() else n
    view = data.take(np.flatnonzero(issued))
    result, figures = _protocol(
        "online with feedback",
        f"All {n:,} mails in order of receipt. Each verdict's true label arrives {label_delay} mails "
        f"later; the model and the baselines are retrained on all labels so far every "
        f"{retrain_every} new labels ({retrains} retrainings). Metrics cover the "
        f"{int(issued.sum()):,} verdicts issued after the first model; the first {first:,} "
        "mails were its warm-up.",
        view.labels,
        {m: s[issued] for m, s in scored.items()},
        junk[issued],
        block[issued],
        candidate.manifest.thresholds.model_dump() if candidate else {},
        _worst(view, scored["warden"][issued], mails, pseudonymiser),
        resamples,
    )
    figures["protocol"] = {
        "retrain_every": float(retrain_every),
        "label_delay": float(label_delay),
        "retrainings": float(retrains),
        "warm_up_mails": float(first),
        "verdicts": float(issued.sum()),
    }
    table = score_table(settings, view, mails, {m: s[issued] for m, s in scored.items()})
    return Evaluated(result, figures, None, table)


def evaluate(
    settings: WardenSettings,
    out_dir: Path,
    protocols: Sequence[str] = ("static", "online"),
    retrain_every: int = 500,
    label_delay: int = 100,
    resamples: int = 500,
    with_peers: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """Run the protocols, write ``report.html``, the figures, ``evaluation.json`` and the per-mail CSVs.

    ``with_peers``: bogofilter, SpamAssassin and Rspamd are trained and scored on
    the static protocol's split too (their runs also go to ``peers.json``).
    """
    all_mails = corpus.load(settings.corpus)
    split = forward(settings, all_mails)
    results: list[ProtocolResult] = []
    figures: dict[str, dict[str, dict[str, float]]] = {}
    importance: tuple[tuple[str, float], ...] = ()
    tables: dict[str, ScoreTable] = {}
    ran: tuple[PeerResult, ...] = ()
    if "static" in protocols:
        done = static(settings, split, resamples, with_peers)
        results.append(done.result)
        figures["static"] = done.figures
        ran = done.peers
        if done.table is not None:
            tables["static"] = done.table
        if done.candidate is not None:
            booster = done.candidate.booster
            importance = tuple(
                zip(booster.feature_name(), map(float, booster.feature_importance("gain")), strict=True)
            )
    if "online" in protocols:
        done = online(
            settings,
            split.everything(),
            split.mails,
            split.pseudonymiser,
            retrain_every,
            label_delay,
            resamples,
        )
        results.append(done.result)
        figures["online"] = done.figures
        if done.table is not None:
            tables["online"] = done.table
    report = ReportData(
        title="Warden mail classifier: evaluation on the SpamAssassin public corpus",
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        protocols=tuple(results),
        feature_importance=importance,
        peers=tuple(peer_row(p) for p in ran),
        notes=(
            f"{len(all_mails):,} distinct mails (npm {settings.corpus.npm_package}"
            f"@{settings.corpus.npm_version}), replayed in order of receipt.",
            f"Bootstrap: {resamples} resamples of the evaluated mails, 95% percentile intervals.",
            f"Policy targets: junk at {settings.models.junk_fpr:.1%} and block at "
            f"{settings.models.block_fpr:.1%} ham false-positive rate on the validation window.",
            "Reproduce: make install && .venv/bin/warden evaluate" + (" --peers" if with_peers else ""),
            *(f"Per-mail scores of every system ({name}): scores-{name}.csv" for name in tables),
        ),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    render(report, out_dir)
    (out_dir / "evaluation.json").write_text(json.dumps(figures, indent=2, default=float))
    for name, table in tables.items():
        table.write(out_dir / f"scores-{name}.csv")
    if with_peers:
        (out_dir / "peers.json").write_text(json.dumps([_peer_json(p) for p in ran], indent=2))
    return figures


def peer_row(peer: PeerResult) -> PeerRow:
    """A peer's run as the report's peer table shows it."""
    return PeerRow(
        name=peer.name,
        status=peer.status,
        reason=peer.reason,
        version=peer.version,
        settings=peer.settings,
        train_per_cpu_s=peer.train_per_cpu_s,
        score_per_cpu_s=peer.score_per_cpu_s,
        notes=peer.notes,
    )


def _peer_json(peer: PeerResult) -> dict[str, object]:
    """A peer's run without its scores (they are in the per-mail CSV)."""
    return {
        "name": peer.name,
        "status": peer.status,
        "reason": peer.reason,
        "version": peer.version,
        "settings": peer.settings,
        "train_mails": peer.train_mails,
        "train_cpu_s": peer.train_cpu_s,
        "score_mails": peer.score_mails,
        "score_cpu_s": peer.score_cpu_s,
        "notes": list(peer.notes),
    }
