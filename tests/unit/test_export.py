"""The hand-built ONNX graph: its shape, its missing-value rules, and the bound-buffer scorer."""

from __future__ import annotations

import hashlib

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import pytest
from onnxmltools.convert.common.data_types import FloatTensorType

from tests.unit.test_models import WIDTH, rows_of, synthetic
from warden.models.exceptions import ExportError
from warden.models.export import onnx_scores, parity, parity_rows, session, to_onnx
from warden.models.registry import Candidate
from warden.models.scorer import BoundSession, Scorer
from warden.models.train import train
from warden.streams.settings import ModelSettings


@pytest.fixture(scope="module")
def candidate() -> Candidate:
    return train(synthetic(), ModelSettings(num_trees=60, num_leaves=15), source="synthetic")


def _booster(rows: np.ndarray, labels: np.ndarray, **params: object) -> lgb.Booster:
    settings = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 3, **params}
    return lgb.train(settings, lgb.Dataset(rows, label=labels), num_boost_round=40)


def _signed_rows(n: int, seed: int, nan_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows around zero on a coarse grid (negative thresholds), optionally with NaNs."""
    rng = np.random.default_rng(seed)
    rows = (rng.integers(-20, 20, size=(n, 6)) / np.float32(3)).astype(np.float32)
    labels = (rows[:, 0] - rows[:, 1] + rng.normal(0, 1, n) > 0).astype(np.int8)
    if nan_share:
        rows[rng.random(rows.shape) < nan_share] = np.nan
    return rows, labels


def test_the_graph_is_one_tree_ensemble_node_and_a_sigmoid(candidate: Candidate) -> None:
    model = onnx.load_from_string(to_onnx(candidate.booster))
    assert [node.op_type for node in model.graph.node] == ["TreeEnsembleRegressor", "Sigmoid"]
    assert [output.name for output in model.graph.output] == ["score"]


@pytest.mark.parametrize("nan_share", [0.0, 0.2])
def test_missing_values_follow_lightgbm_on_negative_thresholds(nan_share: float) -> None:
    """NaN reads as 0 on splits without missing values, and goes the default way on NaN splits."""
    rows, labels = _signed_rows(2000, seed=1, nan_share=nan_share)
    booster = _booster(rows, labels)
    kinds = {
        node["missing_type"]
        for tree in booster.dump_model()["tree_info"]
        for node in _splits(tree["tree_structure"])
    }
    assert ("NaN" in kinds) == (nan_share > 0)
    thresholds = [
        float(str(node["threshold"]))
        for tree in booster.dump_model()["tree_info"]
        for node in _splits(tree["tree_structure"])
    ]
    assert min(thresholds) < 0 < max(thresholds)
    test, _ = _signed_rows(500, seed=2)
    test[np.random.default_rng(4).random(test.shape) < 0.4] = np.nan
    check = parity(to_onnx(booster), booster, parity_rows(booster, test, seed=5), (0.5, 0.2, 0.8))
    assert check.max_abs_diff <= 1e-5
    assert check.label_flips == 0


def _splits(node: dict[str, object]) -> list[dict[str, object]]:
    if "split_index" not in node:
        return []
    left, right = node["left_child"], node["right_child"]
    assert isinstance(left, dict)
    assert isinstance(right, dict)
    return [node, *_splits(left), *_splits(right)]


def test_only_binary_boosters_are_exported() -> None:
    rows, labels = _signed_rows(300, seed=3)
    regression = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(rows, label=labels), num_boost_round=3
    )
    with pytest.raises(ExportError, match="only binary"):
        to_onnx(regression)


def test_bound_buffers_score_every_batch_size_like_a_plain_run(candidate: Candidate) -> None:
    sess = session(candidate.model_bytes)
    bound = BoundSession(sess, WIDTH)
    rows = rows_of(synthetic(600, seed=7)).astype(np.float32)
    rows[::7, 3] = np.float32(1e-36)  # the zero rule applies inside the bound buffer too
    for size in (*range(1, BoundSession.KEPT_SIZES + 4), 64, 512, 3, 1):
        batch = rows[:size]
        np.testing.assert_array_equal(bound.run(batch), onnx_scores(sess, batch))
    np.testing.assert_array_equal(rows[::7, 3], np.float32(1e-36))  # the caller's rows are untouched


def test_versions_exported_by_onnxmltools_still_load(candidate: Candidate) -> None:
    """Registered versions written before the hand-built graph keep serving."""
    older = onnxmltools.convert_lightgbm(
        candidate.booster,
        initial_types=[("input", FloatTensorType([None, WIDTH]))],
        zipmap=False,
        target_opset=15,
    ).SerializeToString()
    manifest = candidate.manifest.model_copy(update={"onnx_sha256": hashlib.sha256(older).hexdigest()})
    scorer = Scorer(older, manifest, candidate.tokens)
    rows = rows_of(synthetic(100, seed=8))
    np.testing.assert_allclose(scorer.score(rows), candidate.booster.predict(rows), atol=1e-5)
