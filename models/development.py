"""Forward folds inside the training half: where choices about the model are made.

Every choice about the mail model (features, parameters, the refit) is made
on the corpus's training half; the test half is only ever scored by ``warden
evaluate``'s static protocol. ``warden evaluate --protocol folds`` trains with
the current settings on the oldest part of the training half and scores the
window after it, at several cuts, so that two settings are compared by
running it twice (``WARDEN_MODELS__REFIT=false warden evaluate --protocol
folds``).

The training half is not uniform in time: its newest fifth holds 19 spam of
605 mails and the fifth before it 98. So the folds overlap (windows of 20%
starting every 10%) and each fold's class counts are reported beside its
figures; recall at 0.1% FPR on a few hundred ham is recall at no false
positive at all.

``warden evaluate --protocol ceiling`` is a diagnostic, not an evaluation:
the test half scored by models trained on its own other folds (keyed
5-fold), i.e. with no drift at all. It bounds what the forward split can
show for this model and these features; nothing is chosen with it.
"""

from __future__ import annotations

import numpy as np

from warden.models.dataset import Dataset, build
from warden.models.evaluate import RANKING, forward, warden_scores
from warden.models.train import corpus_pseudonymiser, train
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus

#: Where each fold's test window starts, as a share of the training half (in time order).
CUTS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
#: Each fold's test window, as a share of the training half.
WIDTH = 0.2


def folds(settings: WardenSettings, data: Dataset) -> dict[str, dict[str, float]]:
    """Figures per fold and their mean: train on rows before each cut, score the window after it.

    ``data`` is the training half's rows in time order (:func:`training_half`).
    Raises TrainingError when a fold's rows cannot support a model.
    """
    figures: dict[str, dict[str, float]] = {}
    n = len(data)
    for cut in CUTS:
        start, stop = int(n * cut), int(n * min(1.0, cut + WIDTH))
        candidate = train(data.take(slice(0, start)), settings.models, source=f"fold:{cut:.1f}")
        window = data.take(slice(start, stop))
        scores = warden_scores(candidate, window)
        spam = float(window.labels.sum())
        fold = {name: metric(window.labels, scores) for name, metric in RANKING.items()}
        figures[f"{cut:.1f}-{min(1.0, cut + WIDTH):.1f}"] = fold | {"spam": spam, "ham": len(window) - spam}
    figures["mean"] = {name: float(np.mean([f[name] for f in figures.values()])) for name in RANKING}
    return figures


def training_half(settings: WardenSettings) -> Dataset:
    """The forward split's first half as ``warden train`` builds it. Raises CorpusError without a corpus."""
    return build(corpus.load(settings.corpus, corpus.FIRST_HALF), corpus_pseudonymiser(settings))


def ceiling(settings: WardenSettings, test: Dataset, folds: int = 5) -> dict[str, dict[str, float]]:
    """The test half scored out of fold by models trained on the rest of it (a diagnostic).

    ``test`` is the test half's rows as the static protocol builds them
    (:func:`test_half`); each fold is scored by a model trained on the other
    folds, in time order. Raises TrainingError.
    """
    fold = np.random.default_rng(settings.models.seed).permutation(len(test)) % folds
    scores = np.zeros(len(test))
    for k in range(folds):
        candidate = train(test.take(fold != k), settings.models, source=f"ceiling:{k}")
        scores[fold == k] = warden_scores(candidate, test.take(fold == k))
    spam = float(test.labels.sum())
    figures = {name: metric(test.labels, scores) for name, metric in RANKING.items()}
    return {"test half, out of fold": figures | {"spam": spam, "ham": len(test) - spam}}


def test_half(settings: WardenSettings) -> Dataset:
    """The forward split's second half, continuing from the first half's store. Raises CorpusError."""
    return forward(settings, corpus.load(settings.corpus)).test
