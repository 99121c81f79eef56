"""The self-contained HTML report of ``warden evaluate``: figures, tables and notes.

The evaluation is computed elsewhere and handed over as a :class:`ReportData`;
this module only draws it. Figures are drawn with matplotlib's ``Figure`` and
the Agg canvas directly (pyplot's global state is never touched), written as
PNG files beside ``report.html`` and embedded in it as base64 data URIs, so
the HTML needs no network, no JavaScript and no other file.

A score ``s`` is flagged at threshold ``t`` when ``s >= t``, as in
``models.policy``.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from warden.models.exceptions import ReportError
from warden.models.metrics import confusion, roc_auc

MIN_FPR = 1e-4
CALIBRATION_BINS = 10
TOP_FEATURES = 25


@dataclass(frozen=True)
class ModelScores:
    name: str  # "warden", "tfidf_logreg", "naive_bayes"
    labels: np.ndarray  # int8 0/1 (1 = spam), one per evaluated mail
    scores: np.ndarray  # float64 in [0, 1], same length


@dataclass(frozen=True)
class MetricRow:
    model: str
    metric: str  # e.g. "roc_auc", "1-roca_pct", "recall_at_0.1pct_fpr", "precision_at_junk", ...
    value: float
    low: float | None  # bootstrap 95% CI, or None
    high: float | None


@dataclass(frozen=True)
class WorstError:
    event_id: str
    label: int  # true label
    score: float  # warden score
    sender: str  # pseudonym
    subject: str | None  # shown only when the corpus is public; may be None


@dataclass(frozen=True)
class ProtocolResult:
    name: str  # e.g. "static, forward split" or "online with feedback"
    description: str  # one paragraph, plain text
    models: tuple[ModelScores, ...]  # warden first, then baselines
    metrics: tuple[MetricRow, ...]
    thresholds: dict[str, float]  # {"junk": t1, "block": t2} for warden
    worst_errors: tuple[WorstError, ...]


@dataclass(frozen=True)
class PeerRow:
    """How one peer filter ran (its scores are among a protocol's models when it ran)."""

    name: str  # "bogofilter", "spamassassin", "rspamd"
    status: str  # "ok", "missing" or "failed"
    reason: str  # why missing or failed; "" when ok
    version: str
    settings: str
    train_per_cpu_s: float  # training mails per CPU-second (NaN when it did not run)
    score_per_cpu_s: float  # scored mails per CPU-second
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ReportData:
    title: str
    generated_at: str  # ISO timestamp
    protocols: tuple[ProtocolResult, ...]
    feature_importance: tuple[tuple[str, float], ...]  # (feature name, total gain), any order
    notes: tuple[str, ...]  # free-text lines (data ranges, settings, commands to reproduce)
    peers: tuple[PeerRow, ...] = ()  # the other filters run beside Warden (`--peers`), in order


@dataclass(frozen=True)
class Curve:
    """Cumulative counts at each distinct score, highest score first (ties form one step)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int


def curve(labels: np.ndarray, scores: np.ndarray) -> Curve:
    """Counts flagged at every distinct threshold; tied scores move together, never one by one."""
    order = np.argsort(-scores, kind="mergesort")
    ordered, truth = scores[order], labels[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1] if len(ordered) else np.array([], int)
    positives = int(truth.sum())
    return Curve(
        ordered[last], np.cumsum(truth)[last], np.cumsum(~truth)[last], positives, len(truth) - positives
    )


def roc_points(c: Curve) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates from (0, 0) to (1, 1); needs both classes."""
    return np.r_[0.0, c.fp / c.negatives], np.r_[0.0, c.tp / c.positives]


def pr_points(c: Curve) -> tuple[np.ndarray, np.ndarray, float]:
    """Recall, precision and average precision (step-wise, as scikit-learn); needs positives."""
    recall, precision = c.tp / c.positives, c.tp / (c.tp + c.fp)
    average = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return np.r_[0.0, recall], np.r_[precision[:1], precision], average


def calibration(labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Rows of (bin start, mean score, spam fraction, count) per non-empty equal-width bin on [0, 1]."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    mean = np.bincount(index, weights=scores, minlength=bins)
    spam = np.bincount(index, weights=labels.astype(np.float64), minlength=bins)
    full = counts > 0
    starts = np.arange(bins) / bins
    return np.column_stack([starts[full], mean[full] / counts[full], spam[full] / counts[full], counts[full]])


def render(report: ReportData, out_dir: Path) -> Path:
    """Write ``report.html`` and every figure as PNG into ``out_dir``; return the HTML's path.

    Called once at the end of ``warden evaluate``. Raises :class:`ReportError`
    before writing anything when the data is inconsistent.
    """
    for protocol in report.protocols:
        _check(protocol)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = [f"<h1>{_e(report.title)}</h1>", f"<p class=meta>Generated {_e(report.generated_at)}</p>"]
    for number, protocol in enumerate(report.protocols, start=1):
        body += _protocol_section(protocol, f"p{number}-{_slug(protocol.name)}", out_dir)
    if report.peers:
        body += ["<h2>Peer filters</h2>", _peers_table(report.peers)]
    body.append("<h2>Feature importance</h2>")
    if report.feature_importance:
        body.append(_save(_importance_figure(report.feature_importance), out_dir, "feature-importance"))
    else:
        body.append("<p class=warn>No feature importance was provided.</p>")
    if report.notes:
        body += ["<h2>Notes</h2>", "<ul>", *(f"<li>{_e(n)}</li>" for n in report.notes), "</ul>"]
    path = out_dir / "report.html"
    path.write_text(_PAGE.format(title=_e(report.title), body="\n".join(body)), encoding="utf-8")
    return path


def _check(protocol: ProtocolResult) -> None:
    if not protocol.models:
        raise ReportError(f"protocol {protocol.name!r} has no models")
    for model in protocol.models:
        if model.labels.shape != model.scores.shape or model.labels.ndim != 1:
            raise ReportError(f"{protocol.name!r}/{model.name}: labels and scores differ in shape")
        if not np.all((model.scores >= 0.0) & (model.scores <= 1.0)):
            raise ReportError(f"{protocol.name!r}/{model.name}: scores must lie in [0, 1] (no NaN)")
        if not np.all((model.labels == 0) | (model.labels == 1)):
            raise ReportError(f"{protocol.name!r}/{model.name}: labels must be 0 or 1")


def _protocol_section(protocol: ProtocolResult, slug: str, out_dir: Path) -> list[str]:
    warden = protocol.models[0]
    spam = int(warden.labels.sum())
    out = [
        f"<h2>{_e(protocol.name)}</h2>",
        f"<p>{_e(protocol.description)}</p>",
        f"<p class=meta>{len(warden.labels)} mails: {len(warden.labels) - spam} ham, {spam} spam.</p>",
        "<h3>Metrics</h3>",
        _metrics_table(protocol),
    ]
    curves = {m.name: curve(m.labels, m.scores) for m in protocol.models}
    both = [m for m in protocol.models if curves[m.name].positives and curves[m.name].negatives]
    with_spam = [m for m in protocol.models if curves[m.name].positives]
    out.append("<h3>ROC and precision-recall</h3>")
    skipped = sorted({m.name for m in protocol.models} - {m.name for m in both})
    if skipped:
        out.append(
            f"<p class=warn>Not on the ROC curves (labels hold a single class): {_e(', '.join(skipped))}."
            " Without spam there is no recall, so such models have no precision-recall curve either.</p>"
        )
    if both:
        out.append(_save(_roc_figure(protocol.name, both, curves), out_dir, f"{slug}-roc"))
    if with_spam:
        out.append(_save(_pr_figure(protocol.name, with_spam, curves), out_dir, f"{slug}-pr"))
    out.append(f"<h3>Scores of {_e(warden.name)}</h3>")
    out.append(_save(_histogram_figure(protocol, warden), out_dir, f"{slug}-scores"))
    out += [_confusion_table(name, t, warden) for name, t in sorted(protocol.thresholds.items(), key=_value)]
    out.append(f"<h3>Calibration of {_e(warden.name)}</h3>")
    out.append(_save(_calibration_figure(protocol.name, warden), out_dir, f"{slug}-calibration"))
    out.append("<h3>Worst errors</h3>")
    out.append(_errors_table(protocol.worst_errors))
    return out


def _value(item: tuple[str, float]) -> float:
    return item[1]


def _roc_figure(title: str, models: list[ModelScores], curves: dict[str, Curve]) -> Figure:
    fig, ax = _figure()
    for model in models:
        fpr, tpr = roc_points(curves[model.name])
        # FPR 0 has no place on a log axis: draw it just left of the visible range.
        auc = roc_auc(model.labels, model.scores)
        ax.plot(np.maximum(fpr, MIN_FPR / 10), tpr, label=f"{_t(model.name)} (AUC {auc:.4f})")
    chance = np.logspace(np.log10(MIN_FPR), 0, 50)
    ax.plot(chance, chance, ls=":", color="grey", label="chance")
    resolution = 1 / curves[models[0].name].negatives
    if resolution > MIN_FPR:
        ax.axvline(resolution, ls="--", lw=0.8, color="grey", label=f"1 ham = {resolution:.1e} FPR")
    ax.set_xscale("log")
    ax.set(xlim=(MIN_FPR, 1), ylim=(0, 1.01), xlabel="false-positive rate (ham flagged)")
    ax.set(ylabel="true-positive rate (spam flagged)", title=f"ROC — {_t(title)}")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def _pr_figure(title: str, models: list[ModelScores], curves: dict[str, Curve]) -> Figure:
    fig, ax = _figure()
    for model in models:
        recall, precision, average = pr_points(curves[model.name])
        ax.plot(recall, precision, drawstyle="steps-pre", label=f"{_t(model.name)} (AP {average:.4f})")
    c = curves[models[0].name]
    prevalence = c.positives / (c.positives + c.negatives)
    ax.axhline(prevalence, ls=":", color="grey", label=f"spam share {prevalence:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
    ax.set(title=f"Precision-recall — {_t(title)}")
    ax.legend(loc="lower left", fontsize="small")
    return fig


def _histogram_figure(protocol: ProtocolResult, model: ModelScores) -> Figure:
    fig, ax = _figure()
    for value, name in ((0, "ham"), (1, "spam")):
        scores = model.scores[model.labels == value]
        if len(scores):
            ax.hist(
                scores, bins=50, range=(0.0, 1.0), histtype="step", lw=1.5, label=f"{name} ({len(scores)})"
            )
    for i, (name, threshold) in enumerate(sorted(protocol.thresholds.items(), key=_value)):
        ax.axvline(threshold, color=f"C{i + 2}", ls="--", label=f"{_t(name)} ≥ {threshold:.4f}")
    if len(model.scores):
        ax.set_yscale("log")
    ax.set(xlim=(0, 1), xlabel=f"{_t(model.name)} score", ylabel="mails (log scale)")
    ax.set(title=f"Scores by class — {_t(protocol.name)}")
    ax.legend(loc="upper center", fontsize="small")
    return fig


def _calibration_figure(title: str, model: ModelScores) -> Figure:
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    rows = calibration(model.labels, model.scores)
    ece = float(np.sum(rows[:, 3] * np.abs(rows[:, 2] - rows[:, 1])) / max(rows[:, 3].sum(), 1))
    top.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    top.plot(rows[:, 1], rows[:, 2], marker="o", label=f"{_t(model.name)} (ECE {ece:.4f})")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="spam fraction in bin")
    top.set(title=f"Reliability, {CALIBRATION_BINS} bins — {_t(title)}")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(rows[:, 0], rows[:, 3], width=0.9 / CALIBRATION_BINS, align="edge", color="C0", alpha=0.6)
    if len(rows):
        bottom.set_yscale("log")
    bottom.set(xlabel="mean score in bin", ylabel="mails")
    return fig


def _importance_figure(importance: tuple[tuple[str, float], ...]) -> Figure:
    top = sorted(importance, key=_value, reverse=True)[:TOP_FEATURES]
    fig, ax = _figure(height=1.0 + 0.28 * len(top))
    positions = np.arange(len(top))[::-1]
    ax.barh(positions, [gain for _, gain in top], color="C0")
    ax.set_yticks(positions, labels=[_t(name) for name, _ in top], fontsize="small")
    ax.set(xlabel="total gain", title=f"Feature importance (top {len(top)} of {len(importance)} by gain)")
    return fig


def _figure(height: float = 4.8) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(6.4, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, out_dir: Path, stem: str) -> str:
    """Write the figure as ``stem.png`` and return an ``<img>`` tag embedding the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    fig.clear()
    data = buffer.getvalue()
    (out_dir / f"{stem}.png").write_bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_e(stem)}">'


def _metrics_table(protocol: ProtocolResult) -> str:
    models = list(dict.fromkeys([m.name for m in protocol.models] + [r.model for r in protocol.metrics]))
    metrics = list(dict.fromkeys(r.metric for r in protocol.metrics))
    if not metrics:
        return "<p class=warn>No metrics were provided.</p>"
    cells = {(r.model, r.metric): format_metric(r) for r in protocol.metrics}
    head = "".join(f"<th>{_e(m)}</th>" for m in metrics)
    rows = ""
    for model in models:
        values = "".join(f"<td>{_e(cells.get((model, m), '—'))}</td>" for m in metrics)
        rows += f"<tr><th>{_e(model)}</th>{values}</tr>"
    return f"<table><tr><th>model</th>{head}</tr>{rows}</table>"


def format_metric(row: MetricRow) -> str:
    """``0.9991 [0.9985, 0.9996]``; the interval is left out when either bound is missing."""
    text = _number(row.value)
    if row.low is not None and row.high is not None:
        text += f" [{_number(row.low)}, {_number(row.high)}]"
    return text


def _number(value: float) -> str:
    if np.isnan(value):
        return "n/a"
    return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"


def _confusion_table(name: str, threshold: float, model: ModelScores) -> str:
    c = confusion(model.labels, model.scores >= threshold)
    rates = ", ".join(f"{key} {_number(float(c[key]))}" for key in ("precision", "recall", "fpr"))
    return (
        f"<table class=confusion><caption>{_e(model.name)} at {_e(name)} (score ≥ {threshold:.4f}): "
        f"{rates}</caption><tr><th></th><th>passed</th><th>flagged</th></tr>"
        f"<tr><th>ham</th><td>{c['tn']:.0f}</td><td>{c['fp']:.0f}</td></tr>"
        f"<tr><th>spam</th><td>{c['fn']:.0f}</td><td>{c['tp']:.0f}</td></tr></table>"
    )


def _peers_table(peers: tuple[PeerRow, ...]) -> str:
    head = (
        "<tr><th>peer</th><th>status</th><th>version</th><th>settings</th>"
        "<th>training mails / CPU-s</th><th>scored mails / CPU-s</th><th>notes</th></tr>"
    )
    rows = "".join(
        f"<tr><th>{_e(p.name)}</th><td>{_e(p.status if p.status == 'ok' else f'{p.status}: {p.reason}')}</td>"
        f"<td>{_e(p.version)}</td><td>{_e(p.settings)}</td><td>{_e(_rate(p.train_per_cpu_s))}</td>"
        f"<td>{_e(_rate(p.score_per_cpu_s))}</td><td>{_e('; '.join(p.notes))}</td></tr>"
        for p in peers
    )
    return (
        "<p class=meta>Trained on the static protocol's training mails and scored on its test mails; "
        "CPU is the process time of the programs and their daemons. Their scores are ranked on the "
        "figures (their scales differ from probabilities).</p>"
        f"<table>{head}{rows}</table>"
    )


def _rate(value: float) -> str:
    return "—" if np.isnan(value) else f"{value:,.1f}"


def _errors_table(errors: tuple[WorstError, ...]) -> str:
    if not errors:
        return "<p>No errors were listed.</p>"
    ham = sorted((e for e in errors if e.label == 0), key=lambda e: -e.score)
    spam = sorted((e for e in errors if e.label != 0), key=lambda e: e.score)
    head = "<tr><th>event</th><th>true label</th><th>score</th><th>sender</th><th>subject</th></tr>"
    rows = "".join(
        f"<tr><td>{_e(e.event_id)}</td><td>{'spam' if e.label else 'ham'}</td><td>{e.score:.4f}</td>"
        f"<td>{_e(e.sender)}</td><td>{'—' if e.subject is None else _e(e.subject)}</td></tr>"
        for e in ham + spam
    )
    return f"<p class=meta>Highest-scored ham first, then lowest-scored spam.</p><table>{head}{rows}</table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _t(text: str) -> str:
    """Text for a figure: a ``$`` must not start matplotlib's math mode."""
    return text.replace("$", r"\$")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "protocol"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
caption {{ text-align: left; font-weight: 600; padding-bottom: 0.3em; }}
img {{ max-width: 100%; display: block; margin: 0.8em 0; }}
.meta {{ color: #666; }}
.warn {{ color: #8a4b00; background: #fff4e0; padding: 0.4em 0.6em; }}
</style></head>
<body>
{body}
</body></html>
"""
