import itertools

import numpy as np

from warden.models.metrics import confusion, roc_auc, threshold_at_fpr


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
