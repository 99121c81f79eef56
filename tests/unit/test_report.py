import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_curve

from warden.models.report import (
    MetricRow,
    ModelScores,
    ProtocolResult,
    ReportData,
    ReportError,
    WorstError,
    calibration,
    curve,
    pr_points,
    render,
    roc_points,
)

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"
MODELS = ("warden", "tfidf_logreg", "naive_bayes")


def _models(labels: np.ndarray, seed: int) -> tuple[ModelScores, ...]:
    rng = np.random.default_rng(seed)
    out = []
    for separation in (4.0, 2.0, 1.0):
        logits = rng.normal(0, 1, len(labels)) + separation * (labels - 0.5)
        scores = np.round(1 / (1 + np.exp(-logits)), 2)  # rounded: many ties
        out.append(scores)
    return tuple(ModelScores(name, labels, s) for name, s in zip(MODELS, out, strict=True))


def _protocol(name: str, labels: np.ndarray, seed: int) -> ProtocolResult:
    return ProtocolResult(
        name=name,
        description=f"Evaluation under the {name} protocol & friends.",
        models=_models(labels, seed),
        metrics=(
            MetricRow("warden", "roc_auc", 0.9991, 0.9985, 0.9996),
            MetricRow("tfidf_logreg", "roc_auc", 0.9712, None, None),
            MetricRow("naive_bayes", "recall_at_1pct_fpr", 0.8123, 0.8001, 0.8250),
        ),
        thresholds={"junk": 0.7, "block": 0.95},
        worst_errors=(
            WorstError("ev-1", 0, 0.99, "sender-a", HOSTILE),
            WorstError("ev-2", 1, 0.01, "sender-b", None),
        ),
    )


def _report(*protocols: ProtocolResult) -> ReportData:
    return ReportData(
        title="Warden evaluation",
        generated_at="2024-05-01T12:00:00+00:00",
        protocols=protocols,
        feature_importance=tuple((f"feature_{i}", float(i * i)) for i in range(30)),
        notes=("data: 2005-01 to 2006-12", "warden evaluate --seed 1"),
    )


def _labels(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < 0.3).astype(np.int8)


def test_render_writes_self_contained_html(tmp_path: Path) -> None:
    names = ("static, time-ordered", "online with feedback")
    report = _report(*(_protocol(name, _labels(400, i), i) for i, name in enumerate(names)))
    path = render(report, tmp_path)
    text = path.read_text(encoding="utf-8")

    assert path == tmp_path / "report.html"
    for name in (*names, *MODELS):
        assert name in text
    for value in ("0.9991 [0.9985, 0.9996]", "0.9712", "0.8123 [0.8001, 0.8250]"):
        assert value in text
    assert "data: 2005-01 to 2006-12" in text
    assert "http://" not in text
    assert "https://" not in text
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<td>sender-b</td><td>—</td>" in text
    # Four figures per protocol and the feature importance.
    assert text.count('<img src="data:image/png;base64,') == 2 * 4 + 1
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(
        [
            f"p{i}-{slug}-{kind}.png"
            for i, slug in ((1, "static-time-ordered"), (2, "online-with-feedback"))
            for kind in ("roc", "pr", "scores", "calibration")
        ]
        + ["feature-importance.png"]
    )
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes().startswith(PNG)
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert all(e.startswith("iVBORw0KGgo") for e in embedded)  # base64 of the PNG signature


def test_single_class_protocol_renders_what_it_can(tmp_path: Path) -> None:
    ham_only = _protocol("ham only", np.zeros(200, dtype=np.int8), 3)
    text = render(_report(ham_only), tmp_path).read_text(encoding="utf-8")

    assert "single class" in text
    assert not (tmp_path / "p1-ham-only-roc.png").exists()
    assert not (tmp_path / "p1-ham-only-pr.png").exists()
    assert (tmp_path / "p1-ham-only-scores.png").read_bytes().startswith(PNG)
    assert (tmp_path / "p1-ham-only-calibration.png").read_bytes().startswith(PNG)


def test_inconsistent_data_is_refused(tmp_path: Path) -> None:
    labels = _labels(50, 4)
    bad = ModelScores("warden", labels, np.full(49, 0.5))
    protocol = _protocol("bad", labels, 4)
    with pytest.raises(ReportError, match="shape"):
        render(_report(ProtocolResult("bad", "", (bad,), (), {}, ())), tmp_path)
    nan = ModelScores("warden", labels, np.full(50, np.nan))
    with pytest.raises(ReportError, match=r"\[0, 1\]"):
        render(_report(ProtocolResult("bad", "", (nan,), (), {}, ())), tmp_path)
    with pytest.raises(ReportError, match="no models"):
        render(_report(ProtocolResult("bad", "", (), protocol.metrics, {}, ())), tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_curves_match_scikit_learn_with_ties() -> None:
    labels = _labels(500, 5)
    scores = np.round(np.random.default_rng(5).random(500) * 0.5 + labels * 0.4, 1)
    c = curve(labels, scores)
    fpr, tpr = roc_points(c)
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)
    assert len(c.thresholds) == len(np.unique(scores))
    _, _, average = pr_points(c)
    assert average == pytest.approx(average_precision_score(labels, scores))


def test_calibration_bins() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.05, 0.15, 0.12, 0.95, 1.0])
    rows = calibration(labels, scores)
    np.testing.assert_allclose(rows[:, 0], [0.0, 0.1, 0.9])
    np.testing.assert_allclose(rows[:, 1], [0.05, 0.135, 0.975])
    np.testing.assert_allclose(rows[:, 2], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(rows[:, 3], [1, 2, 2])
