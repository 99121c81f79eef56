"""The review ranking model: how much one operator review is expected to be worth.

A review labels a whole campaign group (:mod:`serving.review.campaigns`), so the
value of reviewing a group is the number of verdicts the label would
correct, now and in the model trained on it next::

    value(group) = sum over its unlabelled members m of  P(verdict of m is wrong)

``P(wrong)`` is a logistic model over a few *review features* of each
verdict, chosen to capture what makes a verdict worth a look:

==================  ============================================================
feature             meaning
==================  ============================================================
``closeness``       ``exp(-|logit(score) - logit(junk threshold)|)``: 1 on the
                    threshold, near 0 far from it (uncertainty)
``score``           the model's score (abuse the model half-sees)
``token_novelty``   ``1 - token_known_share``: words the model never learned
``new_sender_dom``  ``1 / (1 + sender domain age in hours)`` (calendar and
                    contacts: the organizer's or card owner's account age)
``new_url_dom``     ``1 / (1 + youngest URL domain age in hours)`` (0 without URLs)
``reach``           ``log1p`` of the sender's distinct recipients and the URL
                    domain's distinct senders in 24 h
==================  ============================================================

Each feature reads the same-meaning column of the event kind's schema
(:data:`features.definitions.SCHEMAS`).

Summing over members makes reach explicit: a campaign of 150 mails that the
model half-doubts outranks one borderline mail. The weights are fitted
offline on logged feedback (a label says whether the verdict it joins was
wrong); until there is feedback with both outcomes, documented prior weights
are used. See ``serving/review/measure.py`` for the measurement against random
sampling and lowest-confidence-first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from warden.features.definitions import SCHEMAS

REVIEW_FEATURES: tuple[str, ...] = (
    "closeness",
    "score",
    "token_novelty",
    "new_sender_dom",
    "new_url_dom",
    "reach",
)

_EPS = 1e-6


def _columns(kind: str) -> dict[str, int]:
    """Where each review feature's inputs sit in ``kind``'s schema."""
    names = SCHEMAS[kind].feature_names
    if kind == "mail":
        sender_age, urls, sender_reach = "sender_domain_age_h", "url_count", "sender_distinct_recipients_24h"
    else:
        prefix = next(n for n in names if n.endswith("_account_age_h")).removesuffix("_account_age_h")
        sender_age, urls = f"{prefix}_account_age_h", "links"
        sender_reach = f"{prefix}_distinct_recipients_24h"
    return {
        "known": names.index("token_known_share"),
        "sender_age": names.index(sender_age),
        "urls": names.index(urls),
        "url_age": names.index("url_domain_age_h_min"),
        "sender_reach": names.index(sender_reach),
        "url_reach": names.index("url_domain_distinct_senders_24h_max"),
    }


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def review_features(
    scores: Sequence[float] | np.ndarray, rows: np.ndarray, junk_threshold: float, kind: str = "mail"
) -> np.ndarray:
    """The review features of scored rows (``rows`` in ``kind``'s schema order)."""
    n = len(scores)
    out = np.zeros((n, len(REVIEW_FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    at = _columns(kind)
    rows = np.asarray(rows, dtype=np.float64).reshape(n, len(SCHEMAS[kind].feature_names))
    s = np.asarray(scores, dtype=np.float64)
    clipped = np.clip(s, _EPS, 1 - _EPS)
    out[:, 0] = np.exp(-np.abs(np.log(clipped / (1 - clipped)) - _logit(junk_threshold)))
    out[:, 1] = s
    out[:, 2] = 1.0 - rows[:, at["known"]]
    out[:, 3] = 1.0 / (1.0 + np.maximum(rows[:, at["sender_age"]], 0.0))
    has_urls = rows[:, at["urls"]] > 0
    out[:, 4] = np.where(has_urls, 1.0 / (1.0 + np.maximum(rows[:, at["url_age"]], 0.0)), 0.0)
    out[:, 5] = np.log1p(
        np.maximum(rows[:, at["sender_reach"]], 0.0) + np.maximum(rows[:, at["url_reach"]], 0.0)
    )
    return out


#: Prior weights (before any feedback): uncertainty and novelty first, then reach.
PRIOR_WEIGHTS = (3.0, 1.0, 2.0, 1.0, 1.0, 0.3)
PRIOR_BIAS = -4.0


@dataclass(frozen=True)
class RankingModel:
    """``P(wrong) = sigmoid(w . review features + b)``; a review's value sums it over a group."""

    weights: tuple[float, ...] = PRIOR_WEIGHTS
    bias: float = PRIOR_BIAS
    #: How many labels it was fitted on (0: the prior).
    fitted_on: int = 0

    def p_wrong(self, features: np.ndarray) -> np.ndarray:
        """Probability that each verdict is wrong, from its review features."""
        z = np.asarray(features, dtype=np.float64) @ np.asarray(self.weights) + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    @classmethod
    def fit(cls, features: np.ndarray, wrong: np.ndarray, prior: RankingModel | None = None) -> RankingModel:
        """Fit on logged feedback: ``wrong[i]`` is 1 when label i disagreed with its verdict.

        Returns ``prior`` (or the documented prior) when the labels hold one outcome only.
        """
        from sklearn.linear_model import LogisticRegression

        wrong = np.asarray(wrong, dtype=np.int8)
        if len(wrong) < 20 or len(set(wrong.tolist())) < 2:
            return prior or cls()
        model = LogisticRegression(C=1.0, max_iter=1000, class_weight=None)
        model.fit(np.asarray(features, dtype=np.float64), wrong)
        return cls(
            weights=tuple(float(w) for w in model.coef_[0]),
            bias=float(model.intercept_[0]),
            fitted_on=len(wrong),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "features": list(REVIEW_FEATURES),
                "weights": list(self.weights),
                "bias": self.bias,
                "fitted_on": self.fitted_on,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RankingModel:
        document = json.loads(text)
        if tuple(document["features"]) != REVIEW_FEATURES:
            raise ValueError("ranking model was fitted on other review features")
        return cls(
            tuple(float(w) for w in document["weights"]), float(document["bias"]), int(document["fitted_on"])
        )


def wrong_verdicts(actions: Sequence[str], labels: Sequence[int]) -> np.ndarray:
    """1 where a label (1 abuse, 0 legit) disagrees with the action taken."""
    return np.asarray(
        [int((label == 1) == (action == "allow")) for action, label in zip(actions, labels, strict=True)],
        dtype=np.int8,
    )
