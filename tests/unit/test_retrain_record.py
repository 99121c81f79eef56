"""The last retrain run's outcome: recorded by `warden retrain` in the registry, exported by the workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, get_args

import pytest

from tests.unit.test_models import KEYS, synthetic
from warden.models import retrain, runs
from warden.models.exceptions import RegistryError
from warden.models.registry import Registry
from warden.models.train import train
from warden.serving.slot import ModelSlot
from warden.serving.worker.metrics import WorkerStats, exposition
from warden.streams.settings import ModelSettings, WardenSettings


def test_every_retrain_outcome_can_be_recorded() -> None:
    assert set(get_args(retrain.Outcome)) | {"failed"} == set(runs.RUN_OUTCOMES)


def test_a_record_reads_back_and_none_is_no_run(tmp_path: Path) -> None:
    assert runs.read_last_run(tmp_path) is None
    assert runs.write_last_run(tmp_path, "not_promoted", 1_700_000_000.5)
    assert runs.read_last_run(tmp_path) == runs.LastRun("not_promoted", 1_700_000_000.5)
    assert runs.write_last_run(tmp_path, "failed", 1_700_000_100.0)
    assert runs.read_last_run(tmp_path) == runs.LastRun("failed", 1_700_000_100.0)


def test_an_unwritable_registry_is_logged_not_raised(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    assert not runs.write_last_run(tmp_path / "file", "promoted", 1.0)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{" + b" " * runs.MAX_RECORD_BYTES + b"}", "longer than"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        # A label value is a closed set: an outcome that would smuggle samples into /metrics is refused.
        (b'{"outcome": "failed\\"} 1\\nwarden_fake{x=\\"", "finished_at": 1}', "unknown outcome"),
        (b'{"outcome": "promoted", "finished_at": true}', "no valid end time"),
        (b'{"outcome": "promoted", "finished_at": -1}', "no valid end time"),
        (b'{"outcome": "promoted", "finished_at": "soon"}', "no valid end time"),
        (b'{"outcome": "promoted", "finished_at": 1e999}', "no valid end time"),
    ],
)
def test_a_hostile_record_is_refused_with_a_reason(tmp_path: Path, raw: bytes, reason: str) -> None:
    (tmp_path / runs.RUN_FILE).write_bytes(raw)
    with pytest.raises(RegistryError, match=reason):
        runs.read_last_run(tmp_path)


def _retrain_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decide: Any) -> Registry:
    """Run retrain.retrain on a temporary registry with reading and deciding replaced."""
    registry = Registry(tmp_path / "registry", KEYS)
    monkeypatch.setattr(retrain.Registry, "from_settings", lambda *_, **__: registry)
    monkeypatch.setattr(retrain, "holdout_key", lambda _: b"k" * 32)
    monkeypatch.setattr(retrain, "read_examples", lambda *_: retrain.Examples([], {}))
    monkeypatch.setattr(retrain, "decide", decide)
    return registry


def test_retrain_records_its_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = retrain.RetrainResult("not_promoted", "r-1", 10)
    registry = _retrain_with(tmp_path, monkeypatch, lambda *_: result)
    before = time.time()
    assert retrain.retrain(WardenSettings()).outcome == "not_promoted"
    last = runs.read_last_run(registry.root)
    assert last is not None
    assert last.outcome == "not_promoted"
    assert before <= last.finished_at <= time.time()


def test_a_run_stopped_by_an_error_is_recorded_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> retrain.RetrainResult:
        raise OSError("registry volume full")

    registry = _retrain_with(tmp_path, monkeypatch, broken)
    with pytest.raises(OSError, match="volume full"):
        retrain.retrain(WardenSettings())
    last = runs.read_last_run(registry.root)
    assert last is not None
    assert last.outcome == "failed"


def test_a_run_refused_by_the_lock_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _retrain_with(tmp_path, monkeypatch, lambda *_: retrain.RetrainResult("promoted", "r-1", 10))
    with retrain.registry_lock(registry), pytest.raises(retrain.RetrainLocked):
        retrain.retrain(WardenSettings())
    assert runs.read_last_run(registry.root) is None


def test_workers_export_the_recorded_run(tmp_path: Path) -> None:
    candidate = train(synthetic(), ModelSettings(num_trees=20, num_leaves=7), source="synthetic")
    registry = Registry(tmp_path, KEYS)
    registry.promote(registry.register(candidate))
    stats = WorkerStats()
    slot = ModelSlot.from_registry(registry, stats)

    asyncio.run(slot.refresh())
    assert "warden_retrain_last_run_timestamp_seconds{" not in exposition(stats).decode("utf-8")

    runs.write_last_run(registry.root, "failed", 1_700_000_000.0)
    asyncio.run(slot.refresh())
    failed = 'warden_retrain_last_run_timestamp_seconds{outcome="failed"} 1.7e+09'
    assert failed in exposition(stats).decode("utf-8")

    # A record replaced by garbage reads as no run (logged), and the worker keeps serving.
    (registry.root / runs.RUN_FILE).write_bytes(b"\x00" * 5000)
    asyncio.run(slot.refresh())
    assert "warden_retrain_last_run_timestamp_seconds{" not in exposition(stats).decode("utf-8")
    assert slot.champion.version == candidate.manifest.version
