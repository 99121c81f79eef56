"""The ONNX scorer: one model version, scored a micro-batch at a time.

The scorer refuses a model whose schema hash is not the running feature
schema (``features.definitions.SCHEMA_HASH``): a model trained on other
features would score garbage silently.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
import onnxruntime as ort

from warden.features.definitions import SCHEMAS, Schema
from warden.features.tokens import TokenTable
from warden.models.exceptions import ExportError, ModelRefused, ModelRejected, NoModel, RegistryError
from warden.models.export import INPUT_NAME, apply_zero_rule, score_output, session
from warden.models.policy import Policy
from warden.models.reasons import PathContributions
from warden.models.registry import Manifest, Registry, StoredVersion
from warden.streams.records import EventFeatures, Reason


class BoundSession:
    """An ONNX Runtime session whose input and output buffers are bound once per batch size.

    ``run_with_iobinding`` on preallocated float32 buffers skips the per-call
    allocation and name lookups of ``run()``. Buffers are kept for the
    :data:`KEPT_SIZES` batch sizes used last (micro-batches come in few
    sizes). Not thread-safe: one scorer serves one event loop.
    """

    KEPT_SIZES = 16

    def __init__(self, sess: ort.InferenceSession, width: int) -> None:
        self._session = sess
        self._width = width
        self._output, self._column = score_output(sess)
        self._bound: OrderedDict[int, tuple[ort.IOBinding, np.ndarray, np.ndarray]] = OrderedDict()

    def _binding(self, size: int) -> tuple[ort.IOBinding, np.ndarray, np.ndarray]:
        bound = self._bound.get(size)
        if bound is not None:
            self._bound.move_to_end(size)
            return bound
        inputs = np.zeros((size, self._width), dtype=np.float32)
        columns = 1 if self._column == 0 else 2
        outputs = np.zeros((size, columns), dtype=np.float32)
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(inputs))
        binding.bind_ortvalue_output(self._output, ort.OrtValue.ortvalue_from_numpy(outputs))
        self._bound[size] = (binding, inputs, outputs)
        if len(self._bound) > self.KEPT_SIZES:
            self._bound.popitem(last=False)
        return binding, inputs, outputs

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities (float64) for a float32 matrix of rows, LightGBM's zero rule applied."""
        binding, inputs, outputs = self._binding(len(rows))
        np.copyto(inputs, rows, casting="same_kind")
        apply_zero_rule(inputs)
        self._session.run_with_iobinding(binding)
        return outputs[:, self._column].astype(np.float64)


def stored_version(registry: Registry, version: str | None = None) -> StoredVersion:
    """``version`` (default: the promoted one) with its signature checked, before anything is loaded.

    Raises :class:`NoModel` when nothing is promoted, and :class:`ModelRejected`
    for a pointer that is not a version id or leaves the registry, and for a
    version that is unsigned, signed by another key, or changed on disk.
    """
    try:
        chosen = version or registry.current()
        if chosen is None:
            raise NoModel(f"no model promoted in {registry.root}: run `warden train`")
        return registry.load(chosen)
    except (RegistryError, ModelRefused) as exc:
        raise ModelRejected(str(exc)) from exc


class Scorer:
    """A loaded model version with its policy."""

    def __init__(
        self,
        model_bytes: bytes,
        manifest: Manifest,
        tokens: TokenTable,
        booster: lgb.Booster | None = None,
    ) -> None:
        if hashlib.sha256(model_bytes).hexdigest() != manifest.onnx_sha256:
            raise ModelRejected(
                f"model {manifest.version}: the ONNX file does not match its manifest's onnx_sha256 "
                "(corrupt or replaced)"
            )
        schema = SCHEMAS.get(manifest.kind)
        if schema is None:
            raise ModelRejected(f"model {manifest.version} is for an unknown event kind {manifest.kind!r}")
        if manifest.schema_hash != schema.schema_hash:
            raise ModelRejected(
                f"model {manifest.version} was trained on feature schema "
                f"{manifest.schema_hash}; this worker computes {schema.schema_hash} for {manifest.kind}"
            )
        self.schema: Schema = schema
        try:
            self._session = session(model_bytes)
        except ExportError as exc:
            raise ModelRejected(f"model {manifest.version}: {exc}") from exc
        shape = self._session.get_inputs()[0].shape
        if len(shape) != 2 or shape[1] != len(schema.feature_names):
            raise ModelRejected(f"model {manifest.version} takes input of shape {shape}")
        try:
            self._bound = BoundSession(self._session, len(schema.feature_names))
        except ExportError as exc:
            raise ModelRejected(f"model {manifest.version}: {exc}") from exc
        if tokens.sha256() != manifest.token_table_sha256:
            raise ModelRejected(f"model {manifest.version}: token table does not match its manifest")
        self.tokens = tokens
        self.booster = booster
        self.manifest = manifest
        self.policy = Policy(manifest.thresholds.junk, manifest.thresholds.block)

    @property
    def version(self) -> str:
        return self.manifest.version

    @classmethod
    def from_registry(cls, registry: Registry, version: str | None = None) -> Scorer:
        """Load ``version`` (default: the promoted one). Raises NoModel or ModelRejected."""
        return cls.from_stored(stored_version(registry, version))

    @classmethod
    def from_stored(cls, stored: StoredVersion) -> Scorer:
        """A scorer built from a version's signature-checked bytes. Raises ModelRejected."""
        try:
            return cls(stored.model_bytes, stored.manifest, stored.tokens(), stored.booster())
        except RegistryError as exc:
            raise ModelRejected(str(exc)) from exc

    @functools.cached_property
    def contributions(self) -> PathContributions | None:
        """The per-leaf contribution table of the booster, if any (built once: ~0.3 s for 300 trees)."""
        return PathContributions(self.booster) if self.booster is not None else None

    def explain(self, rows: np.ndarray, top: int, *, exact: bool = False) -> list[list[Reason]]:
        """The ``top`` features that pushed each row most towards abuse.

        Path contributions from the booster the graph was exported from
        (:mod:`models.reasons`: ~30 µs a row), or with ``exact`` LightGBM's
        tree SHAP (~0.5 ms a row and up). Called for flagged rows only;
        without a booster (or ``top=0``) there are no reasons.
        """
        contributions_of = self.contributions
        if contributions_of is None or self.booster is None or top == 0 or len(rows) == 0:
            return [[] for _ in range(len(rows))]
        width = len(self.schema.feature_names)
        if exact:
            contributions = np.asarray(
                # One thread: OpenMP workers spinning on a shared machine cost ~25% more CPU (measured).
                self.booster.predict(rows.astype(np.float64), pred_contrib=True, num_threads=1),
                dtype=np.float64,
            )[:, :width]
        else:
            contributions = contributions_of(rows)[:, :width]
        names, docs = self.schema.feature_names, self.schema.docs
        out = []
        for values, contrib in zip(rows, contributions, strict=True):
            order = np.argsort(-contrib)[:top]
            out.append(
                [
                    Reason(
                        feature=names[i],
                        description=docs[names[i]],
                        value=float(values[i]),
                        contribution=float(contrib[i]),
                    )
                    for i in order
                    if contrib[i] > 0
                ]
            )
        return out

    def rows(self, batch: Sequence[EventFeatures], aggregates: Sequence[Sequence[float]]) -> np.ndarray:
        """Model rows for a batch of this model's kind: content, its text evidence, aggregates."""
        row = self.schema.row
        return np.asarray(
            [
                row(f.content, self.tokens.evidence(f.tokens), a)
                for f, a in zip(batch, aggregates, strict=True)
            ],
            dtype=np.float32,
        ).reshape(len(batch), len(self.schema.feature_names))

    def check(self, rows: np.ndarray) -> float:
        """Score ``rows`` with the graph and its booster; returns the largest difference.

        Called when a worker loads a version (on a sample of its parity rows):
        raises :class:`ModelRejected` when the graph scores NaN or infinity, or
        strays from its booster beyond the manifest's parity tolerance (a
        manifest that lies about parity, or a graph swapped on disk).
        """
        scores = self.score(rows)
        if self.booster is None or len(rows) == 0:
            return 0.0
        try:
            expected = np.asarray(self.booster.predict(rows.astype(np.float64)), dtype=np.float64)
        except lgb.basic.LightGBMError as exc:
            raise ModelRejected(
                f"model {self.version}: its booster cannot score its parity rows: {exc}"
            ) from exc
        diff = float(np.max(np.abs(expected - scores)))
        parity = self.manifest.parity
        if not diff <= parity.tolerance:
            raise ModelRejected(
                f"model {self.version} differs from its booster by {diff:.3g} on its parity rows "
                f"(tolerance {parity.tolerance:.3g}; the manifest claims {parity.max_abs_diff:.3g})"
            )
        return diff

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Abuse probabilities for a float32 matrix of rows in schema order (one ONNX call)."""
        if rows.ndim != 2 or rows.shape[1] != len(self.schema.feature_names):
            raise ModelRejected(f"rows of shape {rows.shape} do not fit the schema")
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float64)
        scores = self._bound.run(rows)
        if not np.all(np.isfinite(scores)):
            raise ModelRejected(f"model {self.version} produced a non-finite score")
        return scores
