"""The model registry: a directory of immutable versions and an atomic current pointer.

Layout under ``ModelSettings.registry_dir``::

    versions/<version>/model.onnx        the served graph
    versions/<version>/booster.txt       the LightGBM booster it was exported from
    versions/<version>/parity_rows.npy   the rows parity was checked on
    versions/<version>/tokens.json       the token table (text evidence) learned with it
    versions/<version>/manifest.json     schema hash, metrics, thresholds, parity, data range
    CURRENT                              the promoted version (replaced atomically)
    HISTORY                              one promoted version per line, oldest first
    kinds/<kind>/...                     the same layout for the calendar and contacts models

Mail's models sit at the root (registries from before other kinds existed
read unchanged); every other event kind has a registry of its own under
``kinds/<kind>`` (:meth:`Registry.for_kind`), holding only models of that
kind's schema.

A version directory is written under a temporary name and renamed into
place, then made read-only: readers never see half a version. Registration
re-runs the parity check itself instead of trusting the candidate's claim.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from features.definitions import SCHEMAS
from features.tokens import TokenTable
from models.exceptions import ModelRefused, RegistryError
from models.export import parity
from streams.records import EventKind

MODEL_FILE = "model.onnx"
BOOSTER_FILE = "booster.txt"
PARITY_ROWS_FILE = "parity_rows.npy"
TOKENS_FILE = "tokens.json"
MANIFEST_FILE = "manifest.json"


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

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    """A registry of one event kind's models, rooted at one directory (created on first registration)."""

    def __init__(self, root: Path, kind: EventKind = "mail") -> None:
        self.root = root
        self.kind: EventKind = kind
        #: Versions this object registered or verified itself (promote need not re-check them).
        self._checked: set[str] = set()

    def for_kind(self, kind: EventKind) -> Registry:
        """The registry of ``kind``'s models (mail: this one; others: ``kinds/<kind>`` below it)."""
        if kind == self.kind:
            return self
        if self.kind != "mail":
            raise RegistryError(f"the {self.kind} registry holds no other kinds")
        return Registry(self.root / "kinds" / kind, kind)

    @property
    def _versions(self) -> Path:
        return self.root / "versions"

    def register(self, candidate: Candidate) -> str:
        """Check and store a candidate; returns its version. Does not promote it.

        Raises :class:`ModelRefused` if its schema is not the running schema,
        its ONNX graph does not match its booster within the manifest's
        tolerance on its parity rows, or the manifest misstates any of these.
        """
        check_candidate(candidate, self.kind)
        model_bytes, booster, rows = candidate.model_bytes, candidate.booster, candidate.parity_rows
        manifest = candidate.manifest
        self._versions.mkdir(parents=True, exist_ok=True)
        final = self._versions / manifest.version
        if final.exists():
            raise RegistryError(f"version {manifest.version} already exists")
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self._versions))
        try:
            (staging / MODEL_FILE).write_bytes(model_bytes)
            booster.save_model(str(staging / BOOSTER_FILE))
            np.save(staging / PARITY_ROWS_FILE, rows.astype(np.float32))
            (staging / TOKENS_FILE).write_bytes(candidate.tokens.to_json())
            (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
            for path in staging.iterdir():
                path.chmod(0o444)
            staging.chmod(0o555)
            staging.rename(final)
        except BaseException:
            staging.chmod(0o755)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._checked.add(manifest.version)
        return manifest.version

    def candidate(self, version: str) -> Candidate:
        """A stored version read back as a candidate (raises RegistryError if a file is missing)."""
        path = self._versions / version / PARITY_ROWS_FILE
        try:
            rows = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise RegistryError(f"no parity rows for version {version}") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"parity rows of {version} are unreadable: {exc}") from None
        return Candidate(
            model_bytes=self.model_path(version).read_bytes(),
            booster=self.booster(version),
            tokens=self.tokens(version),
            parity_rows=rows,
            manifest=self.manifest(version),
        )

    def verify(self, version: str) -> None:
        """Re-run registration's checks on a stored version: integrity, schema, parity.

        Raises :class:`ModelRefused` (a check fails) or :class:`RegistryError`
        (a file is missing or unreadable).
        """
        candidate = self.candidate(version)
        if candidate.manifest.version != version:
            raise ModelRefused(f"the manifest of {version} names version {candidate.manifest.version}")
        check_candidate(candidate, self.kind)
        self._checked.add(version)

    def parity_rows(self, version: str, limit: int | None = None) -> np.ndarray:
        """The first ``limit`` rows parity was checked on (memory-mapped: cheap to sample)."""
        path = self._versions / version / PARITY_ROWS_FILE
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise RegistryError(f"no parity rows for version {version}") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"parity rows of {version} are unreadable: {exc}") from None
        return np.array(rows[:limit], dtype=np.float32)

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self._versions.is_dir():
            return []
        return sorted(p.name for p in self._versions.iterdir() if not p.name.startswith("."))

    def manifest(self, version: str) -> Manifest:
        path = self._versions / version / MANIFEST_FILE
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"no model version {version}") from None
        except (OSError, ValidationError) as exc:
            raise RegistryError(f"manifest of {version} is unreadable: {exc}") from None

    def model_path(self, version: str) -> Path:
        path = self._versions / version / MODEL_FILE
        if not path.is_file():
            raise RegistryError(f"no model file for version {version}")
        return path

    def booster(self, version: str) -> lgb.Booster:
        """The LightGBM booster ``version`` was exported from (used for reasons)."""
        path = self._versions / version / BOOSTER_FILE
        if not path.is_file():
            raise RegistryError(f"no booster file for version {version}")
        try:
            return lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise RegistryError(f"booster of {version} is unreadable: {exc}") from None

    def shadow(self) -> str | None:
        """The version scored in the shadow of the current one, if any."""
        try:
            version = (self.root / "SHADOW").read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def set_shadow(self, version: str | None) -> None:
        """Score ``version`` beside the champion without acting on it (None: no shadow)."""
        if version is not None and version not in self.versions():
            raise RegistryError(f"no model version {version}")
        self._write_atomic(self.root / "SHADOW", (version or "") + "\n")

    def tokens(self, version: str) -> TokenTable:
        """The token table shipped with ``version``."""
        path = self._versions / version / TOKENS_FILE
        try:
            return TokenTable.from_json(path.read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"no token table for version {version}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"token table of {version} is unreadable: {exc}") from None

    def current(self) -> str | None:
        """The promoted version, or None when nothing was promoted yet."""
        try:
            version = (self.root / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def promote(self, version: str) -> None:
        """Make ``version`` current (atomic rename) and push it on the history.

        A version this object did not register is verified first (see
        :meth:`verify`): a corrupt file, a schema mismatch, a graph scoring NaN
        or a manifest that lies about parity raises :class:`ModelRefused` and
        the current version stays.
        """
        if version not in self.versions():
            raise RegistryError(f"no model version {version}")
        if version not in self._checked:
            self.verify(version)
        history = self._history()
        history.append(version)
        self._write_atomic(self.root / "HISTORY", "".join(v + "\n" for v in history))
        self._write_atomic(self.root / "CURRENT", version + "\n")

    def rollback(self) -> str:
        """Pop the current version off the history and make the one before it current."""
        history = self._history()
        if len(history) < 2:
            raise RegistryError("no earlier promoted version to roll back to")
        history.pop()
        previous = history[-1]
        self._write_atomic(self.root / "HISTORY", "".join(v + "\n" for v in history))
        self._write_atomic(self.root / "CURRENT", previous + "\n")
        return previous

    def _history(self) -> list[str]:
        try:
            return (self.root / "HISTORY").read_text().split()
        except FileNotFoundError:
            return []

    def _write_atomic(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
