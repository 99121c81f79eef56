"""Export parity, registry refusals and scorer refusals, on small real models."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxmltools
import pytest
from onnxmltools.convert.common.data_types import FloatTensorType

from tests.bad_models import BAD_KINDS, BadKind, graph, plant, point_at
from warden.features.definitions import AGGREGATES, CONTENT, EVIDENCE_NAMES, FEATURE_NAMES, SCHEMA_HASH
from warden.models.dataset import Dataset
from warden.models.exceptions import ExportError, ModelRefused, ModelRejected, NoModel, RegistryError
from warden.models.export import onnx_scores, parity, parity_rows, session, to_onnx
from warden.models.registry import Candidate, Registry
from warden.models.scorer import Scorer
from warden.models.signing import RegistryKeys
from warden.models.train import train
from warden.serving.slot import ModelSlot, load_warm
from warden.serving.worker.agents.score import score_served, verdicts_of
from warden.serving.worker.metrics import WorkerStats
from warden.streams.records import MailFeatures, SourcePosition
from warden.streams.settings import ModelSettings

WIDTH = len(FEATURE_NAMES)
#: The registry's key pair in these tests (workers would hold only ``KEYS.verify``).
KEYS = RegistryKeys.generate()


def synthetic(n: int = 1200, seed: int = 0) -> Dataset:
    """Rows on a coarse float32 grid, so many rows sit exactly on split thresholds."""
    rng = np.random.default_rng(seed)
    content = (rng.integers(0, 40, size=(n, len(CONTENT))) / np.float32(7)).astype(np.float64)
    aggregates = rng.integers(0, 5, size=(n, len(AGGREGATES))).astype(np.float64)
    signal = content[:, 0] + content[:, 3] - content[:, 5] + rng.normal(0, 1.0, n)
    labels = (signal > np.median(signal)).astype(np.int8)
    tokens = tuple(
        tuple(
            sorted(
                {int(t) for t in rng.integers(0, 50, 8)}
                | ({1000 + int(label)} if rng.random() < 0.6 else set())
            )
        )
        for label in labels
    )
    return Dataset(
        content=content,
        aggregates=aggregates,
        tokens=tokens,
        labels=labels,
        timestamps=np.arange(n, dtype=np.float64) + 1e9,
        event_ids=tuple(f"e{i}" for i in range(n)),
        folders=tuple("synthetic" for _ in range(n)),
    )


def rows_of(data: Dataset) -> np.ndarray:
    """Full rows with blank evidence: enough for parity, which compares two graphs."""
    return data.rows(np.zeros((len(data), len(EVIDENCE_NAMES))))


@pytest.fixture(scope="module")
def candidate() -> Candidate:
    return train(synthetic(), ModelSettings(num_trees=60, num_leaves=15), source="synthetic")


def test_export_matches_the_booster_at_threshold_edges_and_missing_values(
    candidate: Candidate,
) -> None:
    rows = parity_rows(candidate.booster, rows_of(synthetic(300, seed=1)))
    assert np.isnan(rows).any()
    check = parity(candidate.model_bytes, candidate.booster, rows, (0.5, 0.2, 0.8))
    assert check.max_abs_diff <= 1e-5
    assert check.label_flips == 0
    assert check.rows == len(rows)
    assert candidate.manifest.parity.max_abs_diff <= 1e-5


def test_uncorrected_thresholds_break_parity_at_edges(candidate: Candidate) -> None:
    """The correction in to_onnx is needed: onnxmltools alone disagrees on edge rows."""
    raw = onnxmltools.convert_lightgbm(
        candidate.booster,
        initial_types=[("input", FloatTensorType([None, WIDTH]))],
        zipmap=False,
        target_opset=15,
    ).SerializeToString()
    rows = parity_rows(candidate.booster, rows_of(synthetic(300, seed=1)))
    broken = parity(raw, candidate.booster, rows)
    assert broken.max_abs_diff > 1e-5
    assert broken.label_flips > 0
    assert parity(to_onnx(candidate.booster), candidate.booster, rows).label_flips == 0


def test_registry_stores_immutable_versions_and_switches_atomically(
    candidate: Candidate, tmp_path: Path
) -> None:
    registry = Registry(tmp_path, KEYS)
    assert registry.current() is None
    version = registry.register(candidate)
    assert registry.versions() == [version]
    assert registry.current() is None
    registry.promote(version)
    assert registry.current() == version
    # Versions are read-only on disk (root ignores the bits, so check the bits themselves).
    assert (registry.version_dir(version) / "model.onnx").stat().st_mode & 0o222 == 0
    with pytest.raises(RegistryError, match="already exists"):
        registry.register(candidate)
    with pytest.raises(RegistryError, match="no model version"):
        registry.promote("nope")


def test_rollback_walks_back_through_promotions(candidate: Candidate, tmp_path: Path) -> None:
    registry = Registry(tmp_path, KEYS)
    versions = []
    for suffix in ("a", "b", "c"):
        manifest = candidate.manifest.model_copy(update={"version": f"v-{suffix}"})
        versions.append(registry.register(replace(candidate, manifest=manifest)))
        registry.promote(versions[-1])
    assert registry.rollback() == "v-b"
    assert registry.rollback() == "v-a"
    with pytest.raises(RegistryError, match="no earlier"):
        registry.rollback()


def test_registry_refuses_a_model_for_another_schema(candidate: Candidate, tmp_path: Path) -> None:
    manifest = candidate.manifest.model_copy(update={"schema_hash": "0" * 16})
    with pytest.raises(ModelRefused, match="schema hash"):
        Registry(tmp_path, KEYS).register(replace(candidate, manifest=manifest))
    assert Registry(tmp_path, KEYS).versions() == []


def test_registry_refuses_a_graph_that_fails_parity(candidate: Candidate, tmp_path: Path) -> None:
    other = train(synthetic(seed=5), ModelSettings(num_trees=40, num_leaves=7), source="other")
    manifest = candidate.manifest.model_copy(
        update={"onnx_sha256": hashlib.sha256(other.model_bytes).hexdigest()}
    )
    with pytest.raises(ModelRefused, match="parity check failed"):
        Registry(tmp_path, KEYS).register(
            replace(candidate, model_bytes=other.model_bytes, manifest=manifest)
        )
    assert Registry(tmp_path, KEYS).versions() == []


def test_registry_refuses_a_manifest_that_lies(candidate: Candidate, tmp_path: Path) -> None:
    lying = candidate.manifest.model_copy(
        update={"parity": candidate.manifest.parity.model_copy(update={"max_abs_diff": 0.5})}
    )
    with pytest.raises(ModelRefused, match="claims parity"):
        Registry(tmp_path, KEYS).register(replace(candidate, manifest=lying))
    swapped = candidate.manifest.model_copy(update={"onnx_sha256": "f" * 64})
    with pytest.raises(ModelRefused, match="onnx_sha256"):
        Registry(tmp_path, KEYS).register(replace(candidate, manifest=swapped))


def test_scorer_refuses_a_schema_mismatch_and_corrupt_files(candidate: Candidate) -> None:
    with pytest.raises(ModelRejected, match="feature schema"):
        Scorer(
            candidate.model_bytes,
            candidate.manifest.model_copy(update={"schema_hash": "x"}),
            candidate.tokens,
        )
    with pytest.raises(ModelRejected, match="does not match its manifest's onnx_sha256"):
        Scorer(b"not an onnx graph", candidate.manifest, candidate.tokens)
    garbage = b"not an onnx graph"
    rehashed = candidate.manifest.model_copy(update={"onnx_sha256": hashlib.sha256(garbage).hexdigest()})
    with pytest.raises(ModelRejected, match="ONNX Runtime cannot load"):
        Scorer(garbage, rehashed, candidate.tokens)
    with pytest.raises(NoModel):
        Scorer.from_registry(Registry(Path("/nonexistent/registry"), KEYS))


def test_scorer_scores_like_the_booster_and_applies_the_policy(candidate: Candidate) -> None:
    scorer = Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens)
    rows = rows_of(synthetic(200, seed=9))
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
    from warden.models.exceptions import TrainingError

    data = synthetic(400)
    one_class = replace(data, labels=np.zeros(400, np.int8))
    with pytest.raises(TrainingError, match="one class"):
        train(one_class, ModelSettings(num_trees=5), source="x")
    with pytest.raises(TrainingError, match="too few"):
        train(data.take(slice(0, 10)), ModelSettings(num_trees=5), source="x")


def test_the_shipped_model_is_refitted_on_the_whole_window_with_thresholds_from_unseen_rows() -> None:
    data = synthetic(1000, seed=3)
    refitted = train(data, ModelSettings(num_trees=60), source="x")
    early = train(data, ModelSettings(num_trees=60, refit=False), source="x")
    # The same early-stopped model sets both candidates' thresholds, on validation rows it never fitted.
    assert refitted.manifest.thresholds == early.manifest.thresholds
    assert refitted.manifest.metrics["validation_auc"] == early.manifest.metrics["validation_auc"]
    kept = refitted.manifest.metrics["early_stopped_trees"]
    assert early.manifest.metrics["trees"] == kept
    # The refit grows as many trees per row as early stopping kept, on every row with every token.
    assert refitted.manifest.metrics["trees"] == np.ceil(kept * 1000 / 800)
    assert refitted.tokens.documents == 1000
    assert early.tokens.documents == 800
    assert refitted.model_bytes != early.model_bytes
    assert refitted.manifest.parity.label_flips == 0


def test_booster_file_round_trips(candidate: Candidate, tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    candidate.booster.save_model(str(path))
    reloaded = lgb.Booster(model_file=str(path))
    rows = rows_of(synthetic(50, seed=3)).astype(np.float64)
    np.testing.assert_allclose(reloaded.predict(rows), candidate.booster.predict(rows))


def test_tiny_values_follow_lightgbms_zero_rule(candidate: Candidate) -> None:
    """LightGBM reads |x| <= 1e-35 as 0 and has splits at +-1e-35: the scorer must agree."""
    rows = rows_of(synthetic(64, seed=4))
    for value in (1e-35, -1e-35, 1.0000000180025095e-35, -1.0000000180025095e-35, 5e-36):
        tiny = rows.copy()
        tiny[:, ::3] = np.float32(value)
        expected = candidate.booster.predict(tiny.astype(np.float64))
        assert np.max(np.abs(onnx_scores(session(candidate.model_bytes), tiny) - expected)) <= 1e-5


# --- Bad models planted behind the registry's back: refused at promotion and at load ---

REFUSALS: dict[BadKind, tuple[str, str]] = {
    # kind: (promotion refuses with, loading refuses with)
    "corrupt": ("onnx_sha256 does not match", "does not match its manifest's onnx_sha256"),
    "garbage": ("ONNX Runtime cannot load", "ONNX Runtime cannot load"),
    "schema": ("schema hash", "feature schema"),
    "nan": ("NaN or infinity", "non-finite score"),
    "lying": ("parity check failed", "differs from its booster"),
}


@pytest.fixture
def registry(candidate: Candidate, tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry", KEYS)
    registry.promote(registry.register(candidate))
    return registry


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_version_is_refused_at_promotion_and_at_load(registry: Registry, kind: BadKind) -> None:
    champion = registry.current()
    assert champion is not None
    bad = plant(registry, champion, kind)
    at_promotion, at_load = REFUSALS[kind]
    fresh = Registry(registry.root, KEYS)  # a new process: it did not register the version itself
    with pytest.raises((ModelRefused, ExportError), match=at_promotion):
        fresh.promote(bad)
    assert fresh.current() == champion
    with pytest.raises(ModelRejected, match=at_load):
        load_warm(fresh, bad)


def test_the_nan_graph_looks_fine_on_zeros_but_not_on_real_rows(candidate: Candidate) -> None:
    """Why loading checks parity rows: a warm-up on zeros alone would let it through."""
    model = graph("nan")
    manifest = candidate.manifest.model_copy(update={"onnx_sha256": hashlib.sha256(model).hexdigest()})
    scorer = Scorer(model, manifest, candidate.tokens)
    assert np.all(np.isfinite(scorer.score(np.zeros((8, WIDTH), dtype=np.float32))))
    with pytest.raises(ModelRejected, match="non-finite"):
        scorer.score(rows_of(synthetic(20, seed=2)))


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_a_running_slot_keeps_its_champion_when_the_pointer_names_a_bad_version(
    registry: Registry, kind: BadKind
) -> None:
    stats = WorkerStats()
    slot = ModelSlot.from_registry(registry, stats)
    champion = slot.champion.version
    point_at(registry, plant(registry, champion, kind))
    assert await slot.refresh() == []
    assert await slot.refresh() == []  # refused once, never retried
    assert slot.champion.version == champion
    assert stats.model_version == champion
    assert stats.model_refusals == 1


def _nan_scorer(candidate: Candidate, version: str) -> Scorer:
    model = graph("nan")
    manifest = candidate.manifest.model_copy(
        update={"version": version, "onnx_sha256": hashlib.sha256(model).hexdigest()}
    )
    return Scorer(model, manifest, candidate.tokens)


def test_a_champion_that_scores_nan_on_live_rows_falls_back_to_the_one_it_replaced(
    registry: Registry, candidate: Candidate
) -> None:
    stats = WorkerStats()
    slot = ModelSlot.from_registry(registry, stats)
    good = slot.champion
    features = [
        MailFeatures(
            event_id=f"e{i}",
            timestamp=1e9,
            key_id="k1",
            sender="k1.s",
            sender_domain="k1.d",
            recipients=["k1.r"],
            content=[float(i % 5 + 1)] * len(CONTENT),
            source=SourcePosition(topic="t", partition=0, offset=i),
            produced_at_ms=1,
        )
        for i in range(6)
    ]
    aggregates = [[1.0] * len(AGGREGATES) for _ in features]
    # A swap brought in a champion that only fails on live rows; it must not stop the batch.
    slot.previous, slot.champion = good, _nan_scorer(candidate, "v-nan")
    scored = score_served(slot, "mail", features, aggregates)
    assert not isinstance(scored, str)
    verdicts = verdicts_of(scored, {}, 5)
    assert scored.scorer is good
    assert {v.model_version for v in verdicts} == {good.version}
    assert slot.champion is good
    assert stats.model_refusals == 1
    # A failing shadow is dropped and the champion's verdicts stand.
    slot.shadow = _nan_scorer(candidate, "v-nan-shadow")
    scored = score_served(slot, "mail", features, aggregates)
    assert not isinstance(scored, str)
    assert scored.shadow is None
    assert slot.shadow is None
    # With nothing to fall back to, the batch gets a reason (the agent dead-letters it).
    slot.champion, slot.previous = _nan_scorer(candidate, "v-nan-2"), None
    reason = score_served(slot, "mail", features, aggregates)
    assert isinstance(reason, str)
    assert "non-finite" in reason
