"""Reasons for flagged rows: path contributions add up to the booster's raw score, and name real features."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from tests.unit.test_models import rows_of, synthetic
from warden.models.reasons import PathContributions
from warden.models.registry import Candidate
from warden.models.scorer import Scorer
from warden.models.train import train
from warden.streams.settings import ModelSettings


@pytest.fixture(scope="module")
def candidate() -> Candidate:
    return train(synthetic(), ModelSettings(num_trees=60, num_leaves=15), source="synthetic")


def test_credits_and_bias_add_up_to_the_raw_score_on_missing_and_extreme_values(candidate: Candidate) -> None:
    rows = rows_of(synthetic(300, seed=11))
    rng = np.random.default_rng(4)
    rows[rng.random(rows.shape) < 0.1] = np.nan
    rows[::13, 0] = 1e30
    rows[::17, 3] = -1e30
    contributions = PathContributions(candidate.booster)
    credits = contributions(rows)
    raw = candidate.booster.predict(rows, raw_score=True)
    assert credits.shape == (len(rows), rows.shape[1])
    np.testing.assert_allclose(credits.sum(axis=1) + contributions.bias, raw, atol=1e-9)


def test_a_stump_credits_its_split_feature_alone() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(400, 3))
    labels = (rows[:, 2] > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 2, "verbose": -1, "min_data_in_leaf": 5}
    stump = lgb.train(params, lgb.Dataset(rows, label=labels), num_boost_round=1)
    threshold = stump.dump_model()["tree_info"][0]["tree_structure"]["threshold"]
    credits = PathContributions(stump)(rows)
    assert np.all(credits[:, :2] == 0)
    assert np.all(np.sign(credits[:, 2]) == np.where(rows[:, 2] > threshold, 1, -1))


def test_reasons_name_the_features_that_pushed_towards_abuse_strongest_first(candidate: Candidate) -> None:
    scorer = Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens, candidate.booster)
    rows = rows_of(synthetic(200, seed=5)).astype(np.float32)
    flagged = rows[scorer.score(rows) > 0.5]
    assert len(flagged) > 10
    credits = PathContributions(candidate.booster)(flagged)
    for row, reasons, exact in zip(
        credits, scorer.explain(flagged, 3), scorer.explain(flagged, 3, exact=True), strict=True
    ):
        assert reasons
        assert exact
        assert [r.contribution for r in reasons] == sorted((r.contribution for r in reasons), reverse=True)
        assert all(r.contribution > 0 and r.description for r in reasons)
        names = scorer.schema.feature_names
        assert [r.contribution for r in reasons] == [row[names.index(r.feature)] for r in reasons]
