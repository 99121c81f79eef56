"""Text evidence: per-token log-odds learned on a training window, shipped with the model.

Message text never leaves ingest. There, each word becomes a *bucket*: a
keyed hash (see :meth:`features.ingest.pseudonym.Pseudonymiser.token_buckets`) in a
space of :data:`BUCKETS`; ``mail.features`` carries the set of buckets, a
list of numbers. A :class:`TokenTable` maps buckets to smoothed spam/ham
log-odds. It is learned on the training window only, stored beside the model
in the registry, and applied by the scorer with the same function training
used, so both see identical evidence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Size of the bucket space (collisions are rare at corpus vocabularies of ~1e5).
BUCKETS = 1 << 22
#: Distinct buckets kept per message (bounds the record size on mail.features).
MAX_TOKENS_PER_MESSAGE = 600
#: Inverse L2 strength of the token logistic regression.
LOGISTIC_C = 10.0

EVIDENCE_NAMES: tuple[str, ...] = ("token_linear_logit", "token_known_share")


@dataclass(frozen=True)
class TokenTable:
    """A logistic regression over token buckets: one weight per bucket, and a bias.

    (Per-token naive-Bayes log-odds summaries were tried as well: on the
    time-ordered corpus split they lowered ROC AUC on the newer mail, so the
    discriminative weights alone are shipped.)
    """

    weights: dict[int, float]
    bias: float
    documents: int

    @classmethod
    def learn(
        cls,
        token_sets: Sequence[Sequence[int]],
        labels: Sequence[int] | np.ndarray,
        sample_weight: np.ndarray | None = None,
    ) -> TokenTable:
        """Learn from the token sets of labelled training documents (and nothing else).

        ``sample_weight`` carries the feedback weights: a label that weighs
        nothing (a capped report) teaches the token weights nothing either.
        """
        weights, bias = _logistic_weights(token_sets, labels, sample_weight)
        return cls(weights, bias, len(token_sets))

    def evidence(self, tokens: Iterable[int]) -> list[float]:
        """The evidence features of one message, in :data:`EVIDENCE_NAMES` order."""
        distinct = set(tokens)
        known = [self.weights[t] for t in distinct if t in self.weights]
        logit = self.bias + sum(known)
        return [float(logit), len(known) / len(distinct) if distinct else 0.0]

    def to_json(self) -> bytes:
        document = {
            "documents": self.documents,
            "weights": sorted(self.weights.items()),
            "bias": self.bias,
        }
        return json.dumps(document, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> TokenTable:
        document = json.loads(raw)
        return cls(
            {int(t): float(v) for t, v in document["weights"]},
            float(document["bias"]),
            int(document["documents"]),
        )

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()


def _logistic_weights(
    token_sets: Sequence[Sequence[int]],
    labels: Sequence[int] | np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> tuple[dict[int, float], float]:
    """An L2 logistic regression on binary token presence: one weight per bucket."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    columns: dict[int, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, tokens in enumerate(token_sets):
        for token in set(tokens):
            rows.append(i)
            cols.append(columns.setdefault(token, len(columns)))
    if not columns or len(set(np.asarray(labels).tolist())) < 2:
        return {}, 0.0
    matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(token_sets), len(columns)))
    model = LogisticRegression(C=LOGISTIC_C, solver="liblinear", max_iter=2000)
    model.fit(matrix, np.asarray(labels), sample_weight=sample_weight)
    coef = model.coef_[0]
    weights = {token: float(coef[j]) for token, j in columns.items() if abs(coef[j]) > 1e-4}
    return weights, float(model.intercept_[0])


def cross_fitted_evidence(
    token_sets: Sequence[Sequence[int]],
    labels: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Evidence for training rows from tables learned on the *other* folds.

    A row's own label never informs its own evidence; otherwise the model
    would learn to trust evidence that is far weaker on unseen mail.
    """
    n = len(token_sets)
    order = np.random.default_rng(seed).permutation(n)
    out = np.zeros((n, len(EVIDENCE_NAMES)), dtype=np.float64)
    for fold in range(folds):
        held = order[fold::folds]
        mask = np.ones(n, dtype=bool)
        mask[held] = False
        table = TokenTable.learn(
            [token_sets[int(i)] for i in np.flatnonzero(mask)],
            labels[mask],
            None if sample_weight is None else sample_weight[mask],
        )
        for i in held:
            out[i] = table.evidence(token_sets[int(i)])
    return out
