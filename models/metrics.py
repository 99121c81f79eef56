"""Quality figures for binary abuse classifiers, in plain numpy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Share of positives flagged at the strictest threshold that keeps FPR <= ``fpr``."""
    labels = np.asarray(labels).astype(bool)
    threshold = threshold_at_fpr(labels, scores, fpr)
    return float(np.mean(scores[labels] >= threshold)) if labels.any() else float("nan")


def brier(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((scores - labels) ** 2))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean score| over equal-width score bins, weighted by size."""
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
    """A 95% percentile-bootstrap interval of ``metric`` (resampling mails with replacement)."""
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
    """The lowest threshold whose false-positive rate (score >= t on negatives) is <= ``fpr``."""
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
