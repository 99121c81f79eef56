"""Text baselines, trained on the same window as Warden, so its figures mean something.

Offline only: they read the raw corpus text, which the stream never carries
past ingest. TF-IDF + logistic regression and multinomial naive Bayes, both
with their usual defaults for spam filtering (word unigrams and bigrams).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB

from warden.streams.sources.corpus import CorpusMail

NAMES: tuple[str, ...] = ("tfidf_logreg", "naive_bayes")


def text_of(mail: CorpusMail) -> str:
    """What the baselines read: subject and body (plain text, else HTML)."""
    event = mail.event
    return f"{event.subject}\n{event.text or event.html}"[:200_000]


@dataclass(frozen=True)
class Baselines:
    """Both baselines fitted on one training window."""

    tfidf: TfidfVectorizer
    logreg: LogisticRegression
    counts: CountVectorizer
    bayes: MultinomialNB

    @classmethod
    def fit(cls, mails: Sequence[CorpusMail]) -> Baselines:
        texts = [text_of(m) for m in mails]
        labels = np.asarray([m.is_spam for m in mails], dtype=np.int8)
        tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2), max_features=200_000)
        logreg = LogisticRegression(C=10.0, max_iter=2000, solver="liblinear")
        logreg.fit(tfidf.fit_transform(texts), labels)
        counts = CountVectorizer(min_df=2, ngram_range=(1, 2), max_features=200_000)
        bayes = MultinomialNB(alpha=0.1)
        bayes.fit(counts.fit_transform(texts), labels)
        return cls(tfidf, logreg, counts, bayes)

    def scores(self, mails: Sequence[CorpusMail]) -> dict[str, np.ndarray]:
        """Spam probability of each mail under each baseline, by name."""
        texts = [text_of(m) for m in mails]
        return {
            "tfidf_logreg": self.logreg.predict_proba(self.tfidf.transform(texts))[:, 1],
            "naive_bayes": _squash(self.bayes.predict_joint_log_proba(self.counts.transform(texts))),
        }


def _squash(joint: np.ndarray) -> np.ndarray:
    """Naive Bayes log-likelihood ratios mapped into (0, 1) without saturating.

    ``predict_proba`` rounds most of its answers to exactly 0 or 1, which ties
    hundreds of mails and makes recall at a fixed false-positive rate
    meaningless; this keeps the ranking (its scores are not calibrated).
    """
    ratio = joint[:, 1] - joint[:, 0]
    return np.asarray(0.5 + 0.5 * np.tanh(ratio / 200.0), dtype=np.float64)
