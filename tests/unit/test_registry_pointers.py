"""Signed registry pointers: a hand-edited, replayed, foreign or copied pointer is refused and the
worker keeps serving; a rollback signed by the key holder is followed."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from tests.bad_models import point_at, write_pointer
from tests.unit.test_models import synthetic
from warden.models.exceptions import RegistryError
from warden.models.pointers import REPOINT_HINT
from warden.models.registry import Candidate, Registry
from warden.models.signing import RegistryKeys, write_pair
from warden.models.train import train
from warden.serving.slot import ModelSlot
from warden.serving.worker.metrics import WorkerStats
from warden.streams.settings import ModelSettings

KEYS = RegistryKeys.generate()
OTHER_KEYS = RegistryKeys.generate()


@pytest.fixture(scope="module")
def candidate() -> Candidate:
    return train(synthetic(600), ModelSettings(num_trees=20, num_leaves=7), source="synthetic")


@pytest.fixture
def registry(candidate: Candidate, tmp_path: Path) -> Registry:
    """Three signed versions, v-old promoted before v-new (the current one); v-shadow registered."""
    registry = Registry(tmp_path / "registry", KEYS)
    for version in ("v-old", "v-new", "v-shadow"):
        registry.register(
            replace(candidate, manifest=candidate.manifest.model_copy(update={"version": version}))
        )
    registry.promote("v-old")
    registry.promote("v-new")
    return registry


def worker_view(registry: Registry) -> Registry:
    return Registry(registry.root, RegistryKeys(KEYS.verify))


def refresh(slot: ModelSlot, times: int = 3) -> list[tuple[str, str | None, str | None]]:
    swaps = []
    for _ in range(times):
        swaps += [(s.role, s.old, s.new) for s in asyncio.run(slot.refresh())]
    return swaps


def test_pointers_are_signed_statements_with_increasing_sequences(registry: Registry) -> None:
    statement = json.loads((registry.root / "CURRENT").read_text())
    assert statement["format"] == "warden-pointer-v1"
    assert (statement["kind"], statement["pointer"], statement["version"]) == ("mail", "CURRENT", "v-new")
    assert statement["history"] == ["v-old", "v-new"]
    assert statement["key_id"] == KEYS.verify.key_id
    sequences = [worker_view(registry).pointer("CURRENT").sequence]  # type: ignore[union-attr]
    registry.set_shadow("v-shadow")
    sequences.append(worker_view(registry).pointer("SHADOW").sequence)  # type: ignore[union-attr]
    assert registry.rollback() == "v-old"
    sequences.append(worker_view(registry).pointer("CURRENT").sequence)  # type: ignore[union-attr]
    # Deleting the pointer files does not reset the sequence (it follows the signer's clock).
    (registry.root / "CURRENT").unlink()
    (registry.root / "SHADOW").unlink()
    registry.promote("v-new")
    sequences.append(worker_view(registry).pointer("CURRENT").sequence)  # type: ignore[union-attr]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)
    assert worker_view(registry).history() == ("v-new",), "a history that does not verify starts again"


def test_only_the_signing_key_changes_a_pointer(registry: Registry) -> None:
    worker = worker_view(registry)
    for change in (lambda: worker.promote("v-old"), worker.rollback, lambda: worker.set_shadow("v-shadow")):
        with pytest.raises(RegistryError, match="needs the signing key"):
            change()
    assert worker.current() == "v-new"
    assert worker.shadow() is None


@pytest.mark.parametrize("attack", ["hand-edited", "replayed", "other-key", "edited", "copied", "other-kind"])
def test_a_forged_current_is_refused_and_the_worker_keeps_serving(
    registry: Registry, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each attack points CURRENT back at v-old, a validly signed version known to be weaker."""
    registry.rollback()
    older = (registry.root / "CURRENT").read_bytes()  # signed, naming v-old: replayed later
    registry.promote("v-new")  # the worker follows this, a higher sequence
    worker = worker_view(registry)
    stats = WorkerStats()
    slot = ModelSlot.from_registry(worker, stats)
    assert slot.champion.version == "v-new"
    registry.set_shadow("v-old")
    shadow_statement = (registry.root / "SHADOW").read_bytes()
    refresh(slot)
    registry.set_shadow(None)
    refresh(slot)
    refusals = stats.model_refusals

    if attack == "hand-edited":
        write_pointer(registry, "CURRENT", b"v-old\n")
        why = "is not a signed pointer"
    elif attack == "replayed":
        write_pointer(registry, "CURRENT", older)  # the very bytes signed earlier
        assert worker.current() == "v-old", "its signature verifies: only the sequence tells"
        why = "older signed pointer put back"
    elif attack == "other-key":
        point_at(registry, "v-old", key=OTHER_KEYS.signing)
        why = "signed by another key"
    elif attack == "edited":
        data = point_at(registry, "v-new")
        write_pointer(registry, "CURRENT", data.replace(b'"version": "v-new"', b'"version": "v-old"'))
        why = "signature does not verify"
    elif attack == "copied":
        write_pointer(registry, "CURRENT", shadow_statement)  # a signed SHADOW naming v-old
        why = "holds the signed SHADOW pointer of the mail registry"
    else:
        calendar = Registry(registry.root.parent / "elsewhere", KEYS, "calendar")
        data = point_at(calendar, "v-old")  # signed, but for the calendar registry
        write_pointer(registry, "CURRENT", data)
        why = "holds the signed CURRENT pointer of the calendar registry"
    if attack != "replayed":
        with pytest.raises(RegistryError, match=why):
            worker.current()
    with caplog.at_level(logging.WARNING, logger="warden.serving.slot"):
        assert refresh(slot) == []
    assert slot.champion.version == "v-new", "the champion keeps serving"
    assert stats.model_version == "v-new"
    assert stats.model_refusals == refusals + 1, "counted once, however often it is read"
    assert why in caplog.text
    assert "registry pointer refused, keeping v-new" in caplog.text

    # The key holder repairs it; the worker follows the new pointer and counts the next attack anew.
    registry.promote("v-shadow")
    assert refresh(slot) == [("champion", "v-new", "v-shadow")]


def test_a_replayed_older_pointer_naming_an_older_version_is_refused(registry: Registry) -> None:
    registry.rollback()  # CURRENT -> v-old, signed
    older = (registry.root / "CURRENT").read_bytes()
    registry.promote("v-new")
    stats = WorkerStats()
    slot = ModelSlot.from_registry(worker_view(registry), stats)
    write_pointer(registry, "CURRENT", older)  # a valid signature, a lower sequence
    assert worker_view(registry).current() == "v-old", "the signature alone cannot tell"
    assert refresh(slot) == []
    assert slot.champion.version == "v-new"
    assert stats.model_refusals == 1
    # A rollback signed by the key holder now: a higher sequence, followed.
    registry.promote("v-new")
    assert Registry(registry.root, KEYS).rollback() == "v-old"
    assert refresh(slot) == [("champion", "v-new", "v-old")]
    assert stats.model_refusals == 1


def test_a_removed_pointer_after_one_was_followed_is_refused(registry: Registry) -> None:
    registry.set_shadow("v-shadow")
    stats = WorkerStats()
    slot = ModelSlot.from_registry(worker_view(registry), stats)
    assert slot.shadow is not None
    (registry.root / "CURRENT").unlink()
    (registry.root / "SHADOW").unlink()
    assert refresh(slot) == []
    assert (slot.champion.version, slot.shadow.version) == ("v-new", "v-shadow")
    assert stats.model_refusals == 2
    registry.set_shadow(None)  # a signed clear is followed
    assert refresh(slot) == [("shadow", "v-shadow", None)]


def test_a_registry_from_before_signed_pointers_is_refused_until_re_promoted(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from warden.infra.cli.main import main
    from warden.streams.exceptions import ExitCode

    write_pointer(registry, "CURRENT", b"v-new\n")  # as every Warden before signed pointers wrote it
    write_pointer(registry, "HISTORY", b"v-old\nv-new\n")
    with pytest.raises(RegistryError, match="is not a signed pointer") as caught:
        ModelSlot.from_registry(worker_view(registry), WorkerStats())  # a worker does not start on it
    assert REPOINT_HINT in str(caught.value)
    assert KEYS.signing is not None
    signing, verify = write_pair(tmp_path / "pair", KEYS.signing)
    monkeypatch.setenv("WARDEN_MODELS__REGISTRY_DIR", str(registry.root))
    monkeypatch.setenv("WARDEN_MODELS__VERIFY_KEY_FILE", str(verify))
    assert main(["models", "rollback"]) == ExitCode.FAILURE  # no signing key: nothing written
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setenv("WARDEN_MODELS__SIGNING_KEY_FILE", str(signing))
    assert main(["models", "rollback"]) == ExitCode.FAILURE
    assert "is not a signed pointer" in capsys.readouterr().err
    assert main(["models", "promote", "v-new"]) == 0
    assert "promote: v-new" in capsys.readouterr().out
    assert worker_view(registry).current() == "v-new"
    assert ModelSlot.from_registry(worker_view(registry), WorkerStats()).champion.version == "v-new"
    assert main(["models", "promote", "v-old"]) == 0
    assert main(["models", "rollback"]) == 0  # the key holder's rollback works
    assert "rollback: v-new" in capsys.readouterr().out
    assert worker_view(registry).history() == ("v-new",)
