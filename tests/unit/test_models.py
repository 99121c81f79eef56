"""Export parity, registry refusals and scorer refusals, on small real models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxmltools
import pytest
from onnxmltools.convert.common.data_types import FloatTensorType

from features.definitions import FEATURE_NAMES, SCHEMA_HASH
from infra.settings import ModelSettings
from models.dataset import Dataset
from models.exceptions import ModelRefused, RegistryError
from models.export import onnx_scores, parity, parity_rows, session, to_onnx
from models.registry import Registry
from models.train import Candidate, train
from serving.exceptions import ModelRejected, NoModel
from serving.scorer import Scorer

WIDTH = len(FEATURE_NAMES)


def synthetic(n: int = 1200, seed: int = 0) -> Dataset:
    """Rows on a coarse float32 grid, so many rows sit exactly on split thresholds."""
    rng = np.random.default_rng(seed)
    rows = (rng.integers(0, 40, size=(n, WIDTH)) / np.float32(7)).astype(np.float32)
    signal = rows[:, 0] + rows[:, 3] - rows[:, 5] + rng.normal(0, 1.0, n)
    labels = (signal > np.median(signal)).astype(np.int8)
    return Dataset(rows, labels, np.arange(n, dtype=np.float64) + 1e9, tuple(f"e{i}" for i in range(n)))


@pytest.fixture(scope="module")
def candidate() -> Candidate:
    return train(synthetic(), ModelSettings(num_trees=60, num_leaves=15), source="synthetic")


def test_export_matches_the_booster_at_threshold_edges_and_missing_values(
    candidate: Candidate,
) -> None:
    rows = parity_rows(candidate.booster, synthetic(300, seed=1).rows)
    assert np.isnan(rows).any()
    assert parity(candidate.model_bytes, candidate.booster, rows) <= 1e-5
    assert candidate.manifest.parity.max_abs_diff <= 1e-5


def test_uncorrected_thresholds_break_parity_at_edges(candidate: Candidate) -> None:
    """The correction in to_onnx is needed: onnxmltools alone disagrees on edge rows."""
    raw = onnxmltools.convert_lightgbm(
        candidate.booster,
        initial_types=[("input", FloatTensorType([None, WIDTH]))],
        zipmap=False,
        target_opset=15,
    ).SerializeToString()
    rows = parity_rows(candidate.booster, synthetic(300, seed=1).rows)
    assert parity(raw, candidate.booster, rows) > 1e-5
    assert parity(to_onnx(candidate.booster), candidate.booster, rows) <= 1e-5


def test_registry_stores_immutable_versions_and_switches_atomically(
    candidate: Candidate, tmp_path: Path
) -> None:
    registry = Registry(tmp_path)
    assert registry.current() is None
    version = registry.register(
        candidate.model_bytes, candidate.booster, candidate.parity_rows, candidate.manifest
    )
    assert registry.versions() == [version]
    assert registry.current() is None
    registry.promote(version)
    assert registry.current() == version
    # Versions are read-only on disk (root ignores the bits, so check the bits themselves).
    assert registry.model_path(version).stat().st_mode & 0o222 == 0
    with pytest.raises(RegistryError, match="already exists"):
        registry.register(candidate.model_bytes, candidate.booster, candidate.parity_rows, candidate.manifest)
    with pytest.raises(RegistryError, match="no model version"):
        registry.promote("nope")


def test_rollback_walks_back_through_promotions(candidate: Candidate, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    versions = []
    for suffix in ("a", "b", "c"):
        manifest = candidate.manifest.model_copy(update={"version": f"v-{suffix}"})
        versions.append(
            registry.register(candidate.model_bytes, candidate.booster, candidate.parity_rows, manifest)
        )
        registry.promote(versions[-1])
    assert registry.rollback() == "v-b"
    assert registry.rollback() == "v-a"
    with pytest.raises(RegistryError, match="no earlier"):
        registry.rollback()


def test_registry_refuses_a_model_for_another_schema(candidate: Candidate, tmp_path: Path) -> None:
    manifest = candidate.manifest.model_copy(update={"schema_hash": "0" * 16})
    with pytest.raises(ModelRefused, match="schema hash"):
        Registry(tmp_path).register(candidate.model_bytes, candidate.booster, candidate.parity_rows, manifest)
    assert Registry(tmp_path).versions() == []


def test_registry_refuses_a_graph_that_fails_parity(candidate: Candidate, tmp_path: Path) -> None:
    other = train(synthetic(seed=5), ModelSettings(num_trees=40, num_leaves=7), source="other")
    manifest = candidate.manifest.model_copy(
        update={"onnx_sha256": hashlib.sha256(other.model_bytes).hexdigest()}
    )
    with pytest.raises(ModelRefused, match="parity check failed"):
        Registry(tmp_path).register(other.model_bytes, candidate.booster, candidate.parity_rows, manifest)
    assert Registry(tmp_path).versions() == []


def test_registry_refuses_a_manifest_that_lies(candidate: Candidate, tmp_path: Path) -> None:
    lying = candidate.manifest.model_copy(
        update={"parity": candidate.manifest.parity.model_copy(update={"max_abs_diff": 0.5})}
    )
    with pytest.raises(ModelRefused, match="claims parity"):
        Registry(tmp_path).register(candidate.model_bytes, candidate.booster, candidate.parity_rows, lying)
    swapped = candidate.manifest.model_copy(update={"onnx_sha256": "f" * 64})
    with pytest.raises(ModelRefused, match="onnx_sha256"):
        Registry(tmp_path).register(candidate.model_bytes, candidate.booster, candidate.parity_rows, swapped)


def test_scorer_refuses_a_schema_mismatch_and_corrupt_files(candidate: Candidate) -> None:
    with pytest.raises(ModelRejected, match="feature schema"):
        Scorer(candidate.model_bytes, candidate.manifest.model_copy(update={"schema_hash": "x"}))
    with pytest.raises(ModelRejected, match="ONNX Runtime cannot load"):
        Scorer(b"not an onnx graph", candidate.manifest)
    with pytest.raises(NoModel):
        Scorer.from_registry(Registry(Path("/nonexistent/registry")))


def test_scorer_scores_like_the_booster_and_applies_the_policy(candidate: Candidate) -> None:
    scorer = Scorer(candidate.model_bytes, candidate.manifest)
    rows = synthetic(200, seed=9).rows
    scores = scorer.score(rows)
    expected = candidate.booster.predict(rows.astype(np.float64))
    assert np.max(np.abs(scores - expected)) <= 1e-5
    assert scorer.manifest.schema_hash == SCHEMA_HASH
    policy = scorer.policy
    assert policy.decide(policy.block) == "block"
    assert policy.decide(policy.junk) in ("junk", "block")
    assert policy.decide(0.0) == "allow" or policy.junk == 0.0
    with pytest.raises(ModelRejected, match="shape"):
        scorer.score(rows[:, :5])
    np.testing.assert_allclose(onnx_scores(session(candidate.model_bytes), rows), scores)


def test_training_refuses_data_it_cannot_learn_from() -> None:
    from models.exceptions import TrainingError

    data = synthetic(400)
    one_class = Dataset(data.rows, np.zeros(400, np.int8), data.timestamps, data.event_ids)
    with pytest.raises(TrainingError, match="one class"):
        train(one_class, ModelSettings(num_trees=5), source="x")
    with pytest.raises(TrainingError, match="too few"):
        train(data.take(slice(0, 10)), ModelSettings(num_trees=5), source="x")


def test_booster_file_round_trips(candidate: Candidate, tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    candidate.booster.save_model(str(path))
    reloaded = lgb.Booster(model_file=str(path))
    rows = synthetic(50, seed=3).rows.astype(np.float64)
    np.testing.assert_allclose(reloaded.predict(rows), candidate.booster.predict(rows))
