"""Fitting the review ranking model on logged feedback (the ``training-examples`` topic).

Each training example is a label joined with the row its verdict was served
from and the model version that served it. That version scores the row
again (the same ONNX graph, so the same score), its policy gives the action
taken, and the label says whether that action was wrong: exactly the
``P(wrong)`` target of :class:`serving.review.ranking.RankingModel`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from warden.features.definitions import row
from warden.models.exceptions import ModelsError
from warden.models.registry import Registry
from warden.models.scorer import Scorer
from warden.serving.exceptions import ReviewError, ServingError
from warden.serving.review.ranking import RankingModel, review_features, wrong_verdicts
from warden.streams.records import TrainingExample


def fit_on_examples(examples: Sequence[TrainingExample], registry: Registry) -> tuple[RankingModel, int]:
    """The ranking model fitted on ``examples``; returns it and how many examples it used.

    Examples whose model version is no longer in the registry are skipped.
    Raises ReviewError when no example can be used.
    """
    scorers: dict[str, Scorer | None] = {}
    features: list[np.ndarray] = []
    actions: list[str] = []
    labels: list[int] = []
    for example in examples:
        version = example.row.model_version
        if version not in scorers:
            try:
                scorers[version] = Scorer.from_registry(registry, version)
            except (ModelsError, ServingError):
                scorers[version] = None
        scorer = scorers[version]
        if scorer is None:
            continue
        served = example.row
        values = np.asarray(
            [row(served.content, scorer.tokens.evidence(served.tokens), served.aggregates)], dtype=np.float32
        )
        score = float(scorer.score(values)[0])
        features.append(review_features([score], values, scorer.policy.junk)[0])
        actions.append(scorer.policy.decide(score))
        labels.append(example.label)
    if not features:
        raise ReviewError("no training example was served by a model still in the registry")
    model = RankingModel.fit(np.asarray(features), wrong_verdicts(actions, labels))
    return model, len(features)
