"""Quality figures for binary abuse classifiers: scikit-learn's where it computes the same thing.

What stays hand-written here has no library equivalent with the same result: the calibration
error, the bootstrap interval, the deployed threshold and its widening (each says why).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is absent or a score is NaN."""
    labels = np.asarray(labels).astype(bool)
    # scikit-learn raises on both; an undefined figure is NaN in the report (and is dropped by
    # the bootstrap, where a resample without one class is common on small test sets).
    if labels.all() or not labels.any() or np.isnan(scores).any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Share of positives flagged at the strictest threshold that keeps FPR <= ``fpr``.

    NaN when there is no positive or a score is NaN.
    """
    labels = np.asarray(labels).astype(bool)
    if not labels.any() or np.isnan(scores).any():
        return float("nan")
    negatives = int((~labels).sum())
    allowed = int(np.floor(fpr * negatives))
    if negatives == 0 or allowed >= negatives:
        # Outside the curve (no negative, or every negative allowed): the threshold's own rule.
        return float(np.mean(scores[labels] >= threshold_at_fpr(labels, scores, fpr)))
    rates, recalls, _ = roc_curve(labels, scores, drop_intermediate=False)
    # Back to counts (rates are false positives / negatives), so the comparison with the allowed
    # count is exact rather than a float comparison of two rounded rates.
    false_positives = np.rint(rates * negatives)
    return float(recalls[np.searchsorted(false_positives, allowed, side="right") - 1])


def brier(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean squared error of the probabilities (scores must lie in [0, 1])."""
    return float(brier_score_loss(np.asarray(labels).astype(int), scores))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean score| over equal-width score bins, weighted by size.

    Not ``sklearn.calibration.calibration_curve``: it returns no bin sizes (the weights) and puts
    a score on a bin edge in the lower bin, where this (and the published figures) put it in the
    upper one; tests/unit/test_metrics.py checks both agree away from the edges.
    """
    edges = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = edges == b
        if mask.any():
            total += mask.sum() * abs(labels[mask].mean() - scores[mask].mean())
    return float(total / len(scores))


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    resamples: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of ``metric`` (resampling mails with replacement).

    ``scipy.stats.bootstrap(..., paired=True, method="percentile")`` draws the same resamples
    from the same seed and gives the same interval, except that it keeps resamples where the
    metric is undefined (a resample with one class has no AUC) and so returns NaN on the small
    test sets where this drops them; tests/unit/test_metrics.py checks both agree otherwise.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        value = metric(labels[pick], scores[pick])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold whose false-positive rate (score >= t on negatives) is <= ``fpr``.

    Not a threshold of ``sklearn.metrics.roc_curve``: those are the scores themselves, so the
    one at this operating point may be a positive's score, while this sits just above the first
    negative left out (the same flags on the validation set; a different deployed value, which
    ``widened_threshold`` then moves). tests/unit/test_metrics.py checks the flags agree.
    """
    negatives = np.sort(scores[~labels.astype(bool)])[::-1]
    if len(negatives) == 0:
        return 0.5
    allowed = int(np.floor(fpr * len(negatives)))
    if allowed >= len(negatives):
        return float(negatives[-1])
    # Strictly above the (allowed+1)-th highest negative score.
    return float(np.nextafter(negatives[allowed], np.inf))


def widened_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Raise ``threshold`` as far as validation recall allows, then back off to mid-way.

    Every threshold between ``threshold`` and the lowest positive score at or above it
    flags the same validation positives (and no more negatives); this returns the midpoint
    of that range in log-odds, so the threshold keeps the validation recall but sits between
    the classes instead of at the edge of the negatives' tail (where a separable validation
    window puts a false-positive-rate target).
    """
    positives = scores[labels.astype(bool) & (scores >= threshold)]
    if len(positives) == 0:
        return threshold
    eps = 1e-12
    low = float(np.clip(threshold, eps, 1 - eps))
    high = float(np.clip(positives.min(), eps, 1 - eps))
    middle = (np.log(low / (1 - low)) + np.log(high / (1 - high))) / 2
    return float(min(float(positives.min()), max(threshold, 1.0 / (1.0 + np.exp(-middle)))))


def confusion(labels: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Counts, precision, recall and false-positive rate of a flag against labels."""
    labels = labels.astype(bool)
    flagged = flagged.astype(bool)
    tp = int((labels & flagged).sum())
    fp = int((~labels & flagged).sum())
    fn = int((labels & ~flagged).sum())
    tn = int((~labels & ~flagged).sum())
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "fpr": fp / (fp + tn) if fp + tn else float("nan"),
    }
