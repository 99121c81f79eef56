"""Signed registry versions and validated pointers: whatever is changed on disk is refused and the
champion keeps serving."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.bad_models import SIGNATURE_BREAKS, TAMPERED_FILES, point_at, resign, tamper, write_pointer
from tests.unit.test_models import synthetic
from warden.models.exceptions import ModelRefused, ModelRejected, RegistryError, SigningKeyError
from warden.models.registry import Candidate, Registry
from warden.models.signing import (
    SIGNATURE_FILE,
    RegistryKeys,
    load_signing_key,
    registry_keys,
    verify_key_path,
    write_pair,
)
from warden.models.train import train
from warden.serving.slot import ModelSlot, load_warm
from warden.serving.worker.metrics import WorkerStats
from warden.streams.settings import ModelSettings, WardenSettings

KEYS = RegistryKeys.generate()
OTHER_KEYS = RegistryKeys.generate()


@pytest.fixture(scope="module")
def candidate() -> Candidate:
    return train(synthetic(600), ModelSettings(num_trees=20, num_leaves=7), source="synthetic")


@pytest.fixture
def registry(candidate: Candidate, tmp_path: Path) -> Registry:
    """A registry with one promoted version, held with both keys (as training holds them)."""
    registry = Registry(tmp_path / "registry", KEYS)
    registry.promote(
        registry.register(
            replace(candidate, manifest=candidate.manifest.model_copy(update={"version": "v-good"}))
        )
    )
    return registry


def worker_view(registry: Registry) -> Registry:
    """The same directory as a worker sees it: the verify key only."""
    return Registry(registry.root, RegistryKeys(KEYS.verify))


@pytest.mark.parametrize("what", TAMPERED_FILES + SIGNATURE_BREAKS)
def test_a_version_its_signature_does_not_cover_is_refused_everywhere(registry: Registry, what: str) -> None:
    bad = tamper(registry, "v-good", what)
    worker = worker_view(registry)
    with pytest.raises(ModelRefused, match=f"version {bad}"):
        worker.load(bad)
    with pytest.raises(ModelRejected, match=f"version {bad}"):
        load_warm(worker, bad)
    with pytest.raises(ModelRefused):
        Registry(registry.root, KEYS).promote(bad)  # a fresh process holding the signing key
    with pytest.raises(ModelRefused):
        Registry(registry.root, KEYS).set_shadow(bad)
    with pytest.raises(RegistryError, match="needs the signing key"):
        worker.set_shadow(bad)  # a worker signs no pointer
    assert worker.current() == "v-good"
    assert worker.shadow() is None


def test_each_break_is_named(registry: Registry) -> None:
    reasons = {}
    for what in TAMPERED_FILES + SIGNATURE_BREAKS:
        with pytest.raises(ModelRefused) as caught:
            registry.load(tamper(registry, "v-good", what))
        reasons[what] = str(caught.value)
    assert "is not the file that was signed" in reasons["model.onnx"]
    assert "does not verify" in reasons[SIGNATURE_FILE]
    assert "is unsigned" in reasons["unsigned"]
    assert "signed by another key" in reasons["other_key"]
    assert "does not cover: extra.py" in reasons["extra_file"]
    assert "misses the signed file tokens.json" in reasons["missing_file"]
    assert "cannot be opened as a file" in reasons["symlinked_file"]
    assert "statement is for mail version v-good" in reasons["renamed"]
    assert all("\n" not in reason for reason in reasons.values())


def test_a_signed_version_loads_from_the_bytes_that_were_checked(registry: Registry) -> None:
    stored = worker_view(registry).load("v-good")
    path = registry.version_dir("v-good") / "parity_rows.npy"
    before = stored.parity_rows()
    path.chmod(0o644)
    path.write_bytes(b"swapped after the check")  # what a racing writer would do
    assert np.array_equal(stored.parity_rows(), before, equal_nan=True)
    with pytest.raises(ModelRefused):
        worker_view(registry).load("v-good")


@pytest.mark.parametrize("pointer", ["../x", "/etc/passwd", "versions/../../x", "v-good/../../x", "..", ""])
def test_a_signed_pointer_that_is_not_a_version_id_is_refused(registry: Registry, pointer: str) -> None:
    # Signed by the key holder (a tool that skips promote's checks): the signature alone is not enough.
    worker = worker_view(registry)
    stats = WorkerStats()
    slot = ModelSlot.from_registry(worker, stats)
    point_at(registry, pointer, "CURRENT")
    point_at(registry, pointer, "SHADOW")
    with pytest.raises(RegistryError, match="not a version id"):
        worker.current()
    with pytest.raises(RegistryError, match="not a version id"):
        worker.shadow()
    with pytest.raises(RegistryError, match="not a version id"):
        Registry(registry.root, KEYS).promote(pointer)
    for _ in range(3):
        assert asyncio.run(slot.refresh()) == []
    assert slot.champion.version == "v-good", "the champion keeps serving"
    assert stats.model_refusals == 2, "each refused pointer is counted once"
    assert slot.champion.score(np.zeros((2, len(slot.champion.schema.feature_names)), np.float32)).shape == (
        2,
    )


def test_a_version_directory_resolving_outside_the_registry_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    # A validly signed version, but kept outside and linked in: refused on where it lives alone.
    outside = Registry(tmp_path / "elsewhere", KEYS)
    shutil.copytree(registry.root / "versions" / "v-good", outside.root / "versions" / "v-evil")
    (outside.root / "versions" / "v-evil").chmod(0o755)
    manifest = outside.root / "versions" / "v-evil" / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_text(manifest.read_text().replace('"v-good"', '"v-evil"'))
    resign(outside, "v-evil")
    assert outside.load("v-evil").version == "v-evil"
    os.symlink(outside.root / "versions" / "v-evil", registry.root / "versions" / "v-evil")
    point_at(registry, "v-evil")
    worker = worker_view(registry)
    with pytest.raises(RegistryError, match="resolves outside the registry"):
        worker.current()
    with pytest.raises(RegistryError, match="resolves outside the registry"):
        Registry(registry.root, KEYS).promote("v-evil")
    with pytest.raises(ModelRejected, match="resolves outside the registry"):
        load_warm(worker, "v-evil")


def test_a_rollback_follows_the_signed_history_only(registry: Registry, candidate: Candidate) -> None:
    registry.promote(
        registry.register(
            replace(candidate, manifest=candidate.manifest.model_copy(update={"version": "v-next"}))
        )
    )
    assert registry.history() == ("v-good", "v-next")
    (registry.root / "HISTORY").write_text("/abs/path\nv-next\n")  # the old unsigned file: not read
    assert Registry(registry.root, KEYS).rollback() == "v-good"
    assert worker_view(registry).current() == "v-good"
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        registry.rollback()
    # A history entry that is not a version id stops a rollback even when signed.
    data = point_at(registry, "v-next")
    write_pointer(registry, "CURRENT", data.replace(b'"v-next"\n  ]', b'"/abs/path"\n  ]'))
    with pytest.raises(RegistryError, match="signature does not verify"):
        registry.rollback()
    point_at(registry, "v-next")
    pointer = worker_view(registry).pointer("CURRENT")
    assert pointer is not None
    from warden.models.pointers import Pointer, sign_pointer

    assert KEYS.signing is not None
    forged_history = Pointer("CURRENT", "v-next", pointer.sequence + 1, ("/abs/path", "v-next"))
    write_pointer(registry, "CURRENT", sign_pointer("mail", forged_history, KEYS.signing))
    with pytest.raises(RegistryError, match="not a version id"):
        registry.rollback()


def test_only_a_signing_key_registers_and_another_pair_verifies_nothing(
    registry: Registry, candidate: Candidate
) -> None:
    other = candidate.manifest.model_copy(update={"version": "v-other"})
    with pytest.raises(RegistryError, match="needs the signing key"):
        worker_view(registry).register(replace(candidate, manifest=other))
    assert "v-other" not in registry.versions()
    with pytest.raises(ModelRefused, match="signed by another key"):
        Registry(registry.root, OTHER_KEYS).load("v-good")
    with pytest.raises(RegistryError, match="not a version id"):
        registry.register(
            replace(candidate, manifest=candidate.manifest.model_copy(update={"version": "../x"}))
        )


def _settings(tmp_path: Path, **models: object) -> WardenSettings:
    return WardenSettings(
        dev={"state_dir": tmp_path / "dev"}, models={"registry_dir": tmp_path / "r", **models}
    )


def test_development_generates_one_pair_and_production_needs_configured_keys(tmp_path: Path) -> None:
    dev = _settings(tmp_path)
    first = registry_keys(dev, signing=True)
    assert first.signing is not None
    assert registry_keys(dev, signing=True).verify.key_id == first.verify.key_id, "generated once"
    assert registry_keys(dev).signing is None, "readers do not load the signing key"
    assert verify_key_path(dev).read_bytes() == first.verify.pem()
    signing_file = tmp_path / "dev" / "registry-keys" / "signing.pem"
    assert signing_file.stat().st_mode & 0o077 == 0

    production = dev.model_copy(update={"environment": "production"})
    for signing in (False, True):
        with pytest.raises(SigningKeyError, match="production needs WARDEN_MODELS__") as caught:
            registry_keys(production, signing=signing)
        assert "warden models keygen" in str(caught.value)
    with pytest.raises(SigningKeyError, match="VERIFY_KEY_FILE"):
        verify_key_path(production)

    signing_path, verify_path = write_pair(tmp_path / "pair")
    worker = _settings(tmp_path, verify_key_file=verify_path).model_copy(update={"environment": "production"})
    assert registry_keys(worker).verify.key_id == load_signing_key(signing_path).verify_key.key_id
    with pytest.raises(SigningKeyError, match="SIGNING_KEY_FILE"):
        registry_keys(worker, signing=True)
    trainer = _settings(tmp_path, signing_key_file=signing_path)
    assert registry_keys(trainer, signing=True).signing is not None
    with pytest.raises(SigningKeyError, match="workers get the public key"):
        verify_key_path(trainer)
    _, other_verify = write_pair(tmp_path / "other")
    mixed = _settings(tmp_path, signing_key_file=signing_path, verify_key_file=other_verify)
    with pytest.raises(SigningKeyError, match="are not one pair"):
        registry_keys(mixed, signing=True)


def test_a_key_file_that_is_exposed_or_not_a_key_is_refused(tmp_path: Path) -> None:
    signing_path, verify_path = write_pair(tmp_path / "pair")
    with pytest.raises(SigningKeyError, match="exists"):
        write_pair(tmp_path / "pair")
    signing_path.chmod(0o644)
    with pytest.raises(SigningKeyError, match="readable or writable by every user"):
        load_signing_key(signing_path)
    signing_path.chmod(0o600)
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        load_signing_key(verify_path)
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signing_key(tmp_path / "absent.pem")


def test_the_models_commands_name_refused_versions_and_make_keys(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from warden.infra.cli.main import main
    from warden.streams.exceptions import ExitCode

    assert main(["models", "keygen", "--out", str(tmp_path / "keys")]) == 0
    made = capsys.readouterr().out
    assert f"WARDEN_MODELS__SIGNING_KEY_FILE={tmp_path / 'keys' / 'signing.pem'}" in made
    assert (
        main(["models", "keygen", "--out", str(tmp_path / "keys")]) == ExitCode.FAILURE
    )  # never overwritten
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    main(["keygen"])
    assert len(first) == 64
    assert first != capsys.readouterr().out.strip()

    bad = tamper(registry, "v-good", "unsigned")
    assert KEYS.signing is not None
    signing, verify = write_pair(tmp_path / "registry-pair", KEYS.signing)
    monkeypatch.setenv("WARDEN_MODELS__REGISTRY_DIR", str(registry.root))
    monkeypatch.setenv("WARDEN_MODELS__VERIFY_KEY_FILE", str(verify))
    monkeypatch.setenv("WARDEN_MODELS__SIGNING_KEY_FILE", str(signing))
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "* v-good  auc=" in listed
    assert f"  {bad}  REFUSED: version {bad} is unsigned" in listed
    assert main(["models", "promote", bad]) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert err == f"warden: error: version {bad} is unsigned (no signature.json)\n"
    write_pointer(registry, "CURRENT", b"../../etc\n")  # by hand: not signed
    assert main(["models", "show"]) == ExitCode.FAILURE
    assert "is not a signed pointer" in capsys.readouterr().err
    assert main(["models", "list"]) == 0  # the versions are still listed, the pointer said refused
    listed = capsys.readouterr().out
    assert "pointer REFUSED: CURRENT in" in listed
    assert "  v-good  auc=" in listed


def test_a_production_worker_without_a_verify_key_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from warden.infra.cli.main import main
    from warden.streams.exceptions import ExitCode

    for name, value in {
        "WARDEN_ENVIRONMENT": "production",
        "WARDEN_PRIVACY__HMAC_KEY": "9f" * 4 + "0123456789abcdef" * 3,
        "WARDEN_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "WARDEN_REDIS__URL": "redis://127.0.0.1:9/0",
        "WARDEN_MODELS__REGISTRY_DIR": str(tmp_path / "registry"),
        "WARDEN_DEV__STATE_DIR": str(tmp_path / "dev"),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["worker"]) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert err.startswith("warden: error: production needs WARDEN_MODELS__VERIFY_KEY_FILE")
    assert err.count("\n") == 1
    assert not (tmp_path / "dev" / "registry-keys").exists(), "no pair is generated outside development"
