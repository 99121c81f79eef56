import itertools

import numpy as np
from scipy.stats import bootstrap
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from warden.models.metrics import (
    bootstrap_ci,
    brier,
    confusion,
    expected_calibration_error,
    recall_at_fpr,
    roc_auc,
    threshold_at_fpr,
)


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)  # many ties
    pairs = [(p, n) for p, n in itertools.product(scores[labels == 1], scores[labels == 0])]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert abs(roc_auc(labels, scores) - expected) < 1e-12


def test_threshold_keeps_false_positives_within_target() -> None:
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(1000), np.ones(100)]
    scores = np.r_[rng.random(1000) * 0.8, 0.5 + rng.random(100) * 0.5]
    for fpr in (0.001, 0.01, 0.1):
        threshold = threshold_at_fpr(labels, scores, fpr)
        assert confusion(labels, scores >= threshold)["fpr"] <= fpr


def test_confusion_counts() -> None:
    result = confusion(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (1, 1, 1, 1)
    assert result["precision"] == 0.5


def _scored(seed: int, n: int, rate: float, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores that separate the classes a little, rounded so that many scores tie."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < rate
    return labels, np.round(rng.random(n) * 0.7 + labels * 0.3, decimals)


def _recall_by_definition(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Positives strictly above the first negative left out, counting down the sorted negatives."""
    negatives = np.sort(scores[~labels])[::-1]
    return float(np.mean(scores[labels] > negatives[int(np.floor(fpr * len(negatives)))]))


def test_recall_at_fpr_matches_definition_with_ties() -> None:
    for seed in range(40):
        labels, scores = _scored(seed, 50 + 40 * seed, 0.1 + 0.01 * seed, 1 + seed % 4)
        for fpr in (0.0, 0.001, 0.01, 0.1, 0.5):
            assert recall_at_fpr(labels, scores, fpr) == _recall_by_definition(labels, scores, fpr)


def test_recall_at_fpr_edges() -> None:
    scores = np.array([0.2, 0.4, 0.6, 0.8])
    assert np.isnan(recall_at_fpr(np.zeros(4, dtype=bool), scores, 0.01))  # no positive
    # No negative: the threshold falls back to 0.5.
    assert recall_at_fpr(np.ones(4, dtype=bool), scores, 0.01) == 0.5
    # Every negative allowed: flagged down to the lowest negative.
    assert recall_at_fpr(np.array([1, 0, 1, 0], dtype=bool), scores, 1.0) == 0.5
    assert np.isnan(recall_at_fpr(np.array([1, 0, 1, 0]), np.array([0.1, np.nan, 0.3, 0.2]), 0.1))


def test_auc_undefined_is_nan() -> None:
    assert np.isnan(roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))
    assert np.isnan(roc_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))
    assert np.isnan(roc_auc(np.array([1, 0, 1]), np.array([0.1, np.nan, 0.3])))


def test_brier_matches_definition() -> None:
    labels, scores = _scored(3, 500, 0.3, 3)
    assert abs(brier(labels, scores) - float(np.mean((scores - labels) ** 2))) < 1e-12
    assert abs(brier(np.ones(2, dtype=bool), np.array([0.1, 0.2])) - 0.725) < 1e-12


def test_calibration_error_matches_sklearn_curve_away_from_edges() -> None:
    rng = np.random.default_rng(4)
    scores = rng.random(2000)  # no score on a bin edge
    labels = rng.random(2000) < scores
    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    sizes = np.histogram(scores, bins=10, range=(0.0, 1.0))[0]
    expected = float(np.sum(sizes[sizes > 0] * np.abs(observed - predicted)) / len(scores))
    assert abs(expected_calibration_error(labels, scores) - expected) < 1e-12


def test_bootstrap_matches_scipy_when_every_resample_is_defined() -> None:
    labels, scores = _scored(5, 600, 0.3, 2)
    ours = bootstrap_ci(labels, scores, roc_auc, resamples=300, seed=7)
    theirs = bootstrap(
        (labels, scores),
        roc_auc,
        paired=True,
        vectorized=False,
        n_resamples=300,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert abs(ours[0] - theirs.low) < 1e-12
    assert abs(ours[1] - theirs.high) < 1e-12


def test_bootstrap_drops_resamples_without_both_classes() -> None:
    # Two positives in forty mails: many resamples hold none, where the AUC is undefined.
    labels = np.zeros(40, dtype=bool)
    labels[[3, 17]] = True
    scores = np.linspace(0.0, 1.0, 40)
    low, high = bootstrap_ci(labels, scores, roc_auc, resamples=200)
    assert np.isfinite(low)
    assert np.isfinite(high)
    assert low <= roc_auc(labels, scores) <= high


def test_threshold_flags_what_the_roc_curve_operating_point_flags() -> None:
    for seed in range(20):
        labels, scores = _scored(seed, 400, 0.2, 1 + seed % 3)
        negatives = int((~labels).sum())
        rates, _, thresholds = roc_curve(labels, scores, drop_intermediate=False)
        for fpr in (0.01, 0.1):
            within = np.rint(rates * negatives) <= np.floor(fpr * negatives)
            curve_threshold = thresholds[np.flatnonzero(within)[-1]]
            ours = threshold_at_fpr(labels, scores, fpr)
            assert np.array_equal(scores >= ours, scores >= curve_threshold)
