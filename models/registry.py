"""The model registry: a directory of immutable versions and an atomic current pointer.

Layout under ``ModelSettings.registry_dir``::

    versions/<version>/model.onnx        the served graph
    versions/<version>/booster.txt       the LightGBM booster it was exported from
    versions/<version>/parity_rows.npy   the rows parity was checked on
    versions/<version>/tokens.json       the token table (text evidence) learned with it
    versions/<version>/manifest.json     schema hash, metrics, thresholds, parity, data range
    versions/<version>/signature.json    every file's length and SHA-256, signed (models.signing)
    CURRENT                              the promoted version and the promotion history, signed
                                         with a sequence number (models.pointers; replaced atomically)
    SHADOW                               the version scored in the champion's shadow, signed likewise
    kinds/<kind>/...                     the same layout for the calendar and contacts models

Mail's models sit at the root (registries from before other kinds existed
read unchanged); every other event kind has a registry of its own under
``kinds/<kind>`` (:meth:`Registry.for_kind`), holding only models of that
kind's schema.

A version directory is written under a temporary name, signed with the
registry's Ed25519 key, and renamed into place, then made read-only: readers
never see half a version. Registration re-runs the parity check itself
instead of trusting the candidate's claim.

Nothing read from the directory is trusted as it stands. A pointer
(``CURRENT``, ``SHADOW``) must be a statement signed with the registry's key
(:mod:`models.pointers`; only promote, rollback and set_shadow write one, and
they need the signing key) naming version ids (:data:`VERSION_ID`) whose
directories resolve inside the registry, and a version is loaded only from
the bytes its signature was checked against (:meth:`Registry.load`);
promoting or shadowing checks the signature first. Registries written before
pointers were signed keep their versions; their plain-text ``CURRENT`` is
refused until it is re-pointed with ``warden models promote VERSION``
(``HISTORY`` files of that time are no longer read).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from warden.features.definitions import SCHEMAS
from warden.features.tokens import TokenTable
from warden.models.exceptions import ModelRefused, RegistryError
from warden.models.export import parity
from warden.models.pointers import POINTERS, Pointer, PointerName, next_sequence, read_pointer, sign_pointer
from warden.models.signing import (
    SIGNATURE_FILE,
    RegistryKeys,
    SigningKey,
    registry_keys,
    sign_files,
    verify_version,
)
from warden.streams.records import EventKind
from warden.streams.settings import WardenSettings

MODEL_FILE = "model.onnx"
BOOSTER_FILE = "booster.txt"
PARITY_ROWS_FILE = "parity_rows.npy"
TOKENS_FILE = "tokens.json"
MANIFEST_FILE = "manifest.json"
#: What a version id looks like; a pointer naming anything else is refused (no ``/``, no ``..``).
VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    junk: float
    block: float


class Parity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_abs_diff: float
    label_flips: int = 0
    #: Rows scored within float32 precision of a threshold (ties, not flips).
    ties: int = 0
    rows: int
    tolerance: float


class DataRange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    first_event_time: float
    last_event_time: float
    rows: int
    positives: int
    source: str


class Manifest(BaseModel):
    """Everything needed to trust, serve and compare one model version."""

    # An undefined metric (precision when no validation row is flagged: NaN) is written as NaN,
    # not null, so that the manifest loads again; JSON null would not validate as a float.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    version: str
    created_at: str
    kind: str = "mail"
    schema_hash: str
    feature_names: list[str]
    thresholds: Thresholds
    metrics: dict[str, float]
    parity: Parity
    data: DataRange
    onnx_sha256: str
    token_table_sha256: str
    trainer: dict[str, str]


@dataclass(frozen=True)
class Candidate:
    """A trained model ready for the registry: graph, booster, token table, parity rows, manifest."""

    model_bytes: bytes
    booster: lgb.Booster
    tokens: TokenTable
    parity_rows: np.ndarray
    manifest: Manifest


@dataclass(frozen=True)
class StoredVersion:
    """A registered version's files as its signature was checked against (see :meth:`Registry.load`).

    Everything a loader needs is parsed from these bytes, never read from disk
    again, so a file replaced after the check is never served.
    """

    version: str
    files: Mapping[str, bytes]
    manifest: Manifest

    @property
    def model_bytes(self) -> bytes:
        return self.files[MODEL_FILE]

    def tokens(self) -> TokenTable:
        try:
            return TokenTable.from_json(self.files[TOKENS_FILE])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"token table of {self.version} is unreadable: {exc}") from None

    def booster(self) -> lgb.Booster:
        """The LightGBM booster the graph was exported from (used for reasons and parity)."""
        try:
            return lgb.Booster(model_str=self.files[BOOSTER_FILE].decode("utf-8"))
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
            raise RegistryError(f"booster of {self.version} is unreadable: {exc}") from None

    def parity_rows(self, limit: int | None = None) -> np.ndarray:
        """The first ``limit`` rows parity was checked on."""
        try:
            rows = np.load(io.BytesIO(self.files[PARITY_ROWS_FILE]), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RegistryError(f"parity rows of {self.version} are unreadable: {exc}") from None
        return np.array(rows[:limit], dtype=np.float32)

    def candidate(self) -> Candidate:
        return Candidate(self.model_bytes, self.booster(), self.tokens(), self.parity_rows(), self.manifest)


def check_candidate(candidate: Candidate, kind: EventKind = "mail") -> None:
    """Refuse a candidate whose files and manifest disagree or whose graph fails parity.

    Called by :meth:`Registry.register` before storing, and by
    :meth:`Registry.promote` for versions this registry object did not check
    itself (a version copied in by hand, or a file changed on disk since).
    Raises :class:`ModelRefused` with a one-line reason.
    """
    model_bytes, booster, rows = candidate.model_bytes, candidate.booster, candidate.parity_rows
    manifest = candidate.manifest
    if manifest.token_table_sha256 != candidate.tokens.sha256():
        raise ModelRefused("the manifest's token_table_sha256 does not match the token table")
    schema = SCHEMAS[kind]
    if manifest.kind != kind:
        raise ModelRefused(f"a {manifest.kind} model does not belong in the {kind} registry")
    if manifest.schema_hash != schema.schema_hash or manifest.feature_names != list(schema.feature_names):
        raise ModelRefused(
            f"schema hash {manifest.schema_hash} is not the running {kind} schema {schema.schema_hash}"
        )
    if manifest.onnx_sha256 != hashlib.sha256(model_bytes).hexdigest():
        raise ModelRefused("the manifest's onnx_sha256 does not match the model bytes")
    thresholds = (0.5, manifest.thresholds.junk, manifest.thresholds.block)
    check = parity(model_bytes, booster, rows, thresholds)
    measured = check.max_abs_diff
    if math.isinf(measured):
        raise ModelRefused(f"the ONNX graph scores NaN or infinity on some of its {len(rows)} parity rows")
    if not measured <= manifest.parity.tolerance:
        raise ModelRefused(
            f"parity check failed: max |onnx - booster| = {measured:.3g} "
            f"> tolerance {manifest.parity.tolerance:.3g} on {len(rows)} rows"
        )
    if check.label_flips:
        raise ModelRefused(f"parity check failed: {check.label_flips} rows change decision")
    if abs(measured - manifest.parity.max_abs_diff) > manifest.parity.tolerance:
        raise ModelRefused(
            f"the manifest claims parity {manifest.parity.max_abs_diff:.3g}, measured {measured:.3g}"
        )


def new_version(model_bytes: bytes) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{hashlib.sha256(model_bytes).hexdigest()[:8]}"


class Registry:
    """A registry of one event kind's models, rooted at one directory (created on first registration).

    ``keys`` holds the verify key (every reader) and, in training and
    retraining only, the signing key (:meth:`register` needs it).
    """

    def __init__(self, root: Path, keys: RegistryKeys, kind: EventKind = "mail") -> None:
        self.root = root
        self.keys = keys
        self.kind: EventKind = kind
        #: Versions this object registered or checked for parity itself (promote need not re-run it).
        self._checked: set[str] = set()

    @classmethod
    def from_settings(cls, settings: WardenSettings, *, signing: bool = False) -> Registry:
        """The mail registry of ``settings`` with this process's keys (the signing key if ``signing``).

        Raises :class:`~models.exceptions.SigningKeyError` when a key is missing or unreadable.
        """
        return cls(settings.models.registry_dir, registry_keys(settings, signing=signing))

    def for_kind(self, kind: EventKind) -> Registry:
        """The registry of ``kind``'s models (mail: this one; others: ``kinds/<kind>`` below it)."""
        if kind == self.kind:
            return self
        if self.kind != "mail":
            raise RegistryError(f"the {self.kind} registry holds no other kinds")
        return Registry(self.root / "kinds" / kind, self.keys, kind)

    @property
    def _versions(self) -> Path:
        return self.root / "versions"

    def version_dir(self, version: str) -> Path:
        """The directory of ``version``, refused unless it is a version id resolving inside the registry."""
        if not VERSION_ID.fullmatch(version):
            raise RegistryError(f"{version[:40]!r} is not a version id")
        path = self._versions / version
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise RegistryError(f"version {version} resolves outside the registry {self.root}")
        return path

    def register(self, candidate: Candidate) -> str:
        """Check, sign and store a candidate; returns its version. Does not promote it.

        Raises :class:`ModelRefused` if its schema is not the running schema,
        its ONNX graph does not match its booster within the manifest's
        tolerance on its parity rows, or the manifest misstates any of these;
        :class:`RegistryError` without the signing key or for a bad version id.
        """
        if self.keys.signing is None:
            raise RegistryError(
                "registering a version needs the signing key (WARDEN_MODELS__SIGNING_KEY_FILE)"
            )
        check_candidate(candidate, self.kind)
        model_bytes, booster, rows = candidate.model_bytes, candidate.booster, candidate.parity_rows
        manifest = candidate.manifest
        final = self.version_dir(manifest.version)
        self._versions.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise RegistryError(f"version {manifest.version} already exists")
        rows_file = io.BytesIO()
        np.save(rows_file, rows.astype(np.float32))
        files = {
            MODEL_FILE: model_bytes,
            BOOSTER_FILE: booster.model_to_string().encode("utf-8"),
            PARITY_ROWS_FILE: rows_file.getvalue(),
            TOKENS_FILE: candidate.tokens.to_json(),
            MANIFEST_FILE: manifest.model_dump_json(indent=2).encode("utf-8"),
        }
        signature = sign_files(self.kind, manifest.version, files, self.keys.signing)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self._versions))
        try:
            for name, data in {**files, SIGNATURE_FILE: signature}.items():
                (staging / name).write_bytes(data)
                (staging / name).chmod(0o444)
            staging.chmod(0o555)
            staging.rename(final)
        except BaseException:
            staging.chmod(0o755)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._checked.add(manifest.version)
        return manifest.version

    def load(self, version: str) -> StoredVersion:
        """``version``'s files, checked against its signature; load models from what this returns.

        Raises :class:`RegistryError` (not a version id, outside the registry,
        no such version) or :class:`ModelRefused` (unsigned, signed by another
        key, a file changed, missing, added or a symlink).
        """
        directory = self.version_dir(version)
        if not directory.is_dir():
            raise RegistryError(f"no model version {version}")
        files = verify_version(directory, self.kind, version, self.keys.verify)
        try:
            manifest = Manifest.model_validate_json(files[MANIFEST_FILE])
        except (KeyError, ValidationError) as exc:
            raise RegistryError(f"manifest of {version} is unreadable: {exc}") from None
        if manifest.version != version:
            raise ModelRefused(f"the manifest of {version} names version {manifest.version}")
        return StoredVersion(version, files, manifest)

    def candidate(self, version: str) -> Candidate:
        """A stored version read back (signature checked) as a candidate."""
        return self.load(version).candidate()

    def verify(self, version: str) -> None:
        """Check the signature and re-run registration's checks on a stored version: schema, parity.

        Raises :class:`ModelRefused` (a check fails) or :class:`RegistryError`
        (a file is missing or unreadable).
        """
        check_candidate(self.candidate(version), self.kind)
        self._checked.add(version)

    def versions(self) -> list[str]:
        """Registered versions, oldest first (staging directories and other names left out)."""
        if not self._versions.is_dir():
            return []
        return sorted(p.name for p in self._versions.iterdir() if VERSION_ID.fullmatch(p.name))

    def manifest(self, version: str) -> Manifest:
        """``version``'s manifest, from its checked files (raises like :meth:`load`)."""
        return self.load(version).manifest

    def pointer(self, name: PointerName) -> Pointer | None:
        """The verified ``CURRENT`` or ``SHADOW`` statement; None when the file does not exist.

        Called by workers before following a pointer. Raises
        :class:`RegistryError` with a one-line reason when the file is not
        signed by this registry's key for this kind and pointer, or names
        anything but version ids inside the registry (a path, ``..``).
        """
        found = read_pointer(self.root / name, self.kind, name, self.keys.verify)
        if found is None:
            return None
        for version in (found.version, *found.history):
            if version is None:
                continue
            try:
                self.version_dir(version)
            except RegistryError as exc:
                raise RegistryError(f"{name} in {self.root}: {exc}") from None
        return found

    def shadow(self) -> str | None:
        """The version scored in the shadow of the current one, if any (raises RegistryError if bad)."""
        found = self.pointer("SHADOW")
        return None if found is None else found.version

    def set_shadow(self, version: str | None) -> None:
        """Score ``version`` beside the champion without acting on it (None: no shadow).

        Its signature is checked first (raises like :meth:`load`); the pointer is
        signed (raises :class:`RegistryError` without the signing key).
        """
        key = self._signing_key("setting the shadow")
        if version is not None:
            self.load(version)
        self._sign(key, "SHADOW", version, ())

    def current(self) -> str | None:
        """The promoted version, or None when nothing was promoted yet.

        Raises :class:`RegistryError` when ``CURRENT`` is not a signed pointer of this
        registry naming a version id (a path, ``..``): the caller keeps what it serves.
        """
        found = self.pointer("CURRENT")
        return None if found is None else found.version

    def promote(self, version: str) -> None:
        """Make ``version`` current (a newly signed pointer, replaced atomically) and push it on the history.

        Its signature is checked first, and a version this object did not
        register is verified too (see :meth:`verify`): a file changed on disk,
        a schema mismatch, a graph scoring NaN or a manifest that lies about
        parity raises :class:`ModelRefused` and the current version stays.
        A ``CURRENT`` that does not verify (hand-written, or from before signed
        pointers) is replaced, and the history starts again at ``version``.
        Raises :class:`RegistryError` without the signing key.
        """
        key = self._signing_key("promoting")
        if version in self._checked:
            self.load(version)
        else:
            self.verify(version)
        try:
            found = self.pointer("CURRENT")
        except RegistryError:
            found = None  # nothing in it can be trusted, its history included
        history = list(found.history) if found is not None else []
        self._sign(key, "CURRENT", version, (*history, version))

    def rollback(self) -> str:
        """Make the version promoted before the current one current again (signature checked).

        The history comes from the signed ``CURRENT``: raises :class:`RegistryError`
        when that does not verify, when there is no earlier version, or without
        the signing key. The new pointer's sequence is higher than the one it
        replaces, so workers follow it.
        """
        key = self._signing_key("rolling back")
        found = self.pointer("CURRENT")
        history = list(found.history) if found is not None else []
        if len(history) < 2:
            raise RegistryError("no earlier promoted version to roll back to")
        history.pop()
        previous = history[-1]
        self.load(previous)
        self._sign(key, "CURRENT", previous, tuple(history))
        return previous

    def history(self) -> tuple[str, ...]:
        """Promoted versions, oldest first, from the signed ``CURRENT`` (raises like :meth:`pointer`)."""
        found = self.pointer("CURRENT")
        return () if found is None else found.history

    def _signing_key(self, what: str) -> SigningKey:
        if self.keys.signing is None:
            raise RegistryError(
                f"{what} needs the signing key (pointers are signed): set WARDEN_MODELS__SIGNING_KEY_FILE"
            )
        return self.keys.signing

    def _sign(
        self, key: SigningKey, name: PointerName, version: str | None, history: tuple[str, ...]
    ) -> None:
        """Write ``name`` as a statement signed with a sequence above every verified one here."""
        highest = 0
        for other in POINTERS:
            try:
                found = read_pointer(self.root / other, self.kind, other, self.keys.verify)
            except RegistryError:
                continue  # unverifiable: says nothing about the sequence
            if found is not None:
                highest = max(highest, found.sequence)
        pointer = Pointer(name, version, next_sequence(highest), history)
        self._write_atomic(self.root / name, sign_pointer(self.kind, pointer, key))

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
