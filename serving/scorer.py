"""The ONNX scorer: one model version, scored a micro-batch at a time.

The scorer refuses a model whose schema hash is not the running feature
schema (``features.definitions.SCHEMA_HASH``): a model trained on other
features would score garbage silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import lightgbm as lgb
import numpy as np

from features.definitions import FEATURE_DOCS, FEATURE_NAMES, SCHEMA_HASH, row
from features.tokens import TokenTable
from models.exceptions import ExportError, RegistryError
from models.export import onnx_scores, session
from models.registry import Manifest, Registry
from serving.exceptions import ModelRejected, NoModel
from serving.policy import Policy
from streams.records import MailFeatures, Reason


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
        if manifest.schema_hash != SCHEMA_HASH:
            raise ModelRejected(
                f"model {manifest.version} was trained on feature schema "
                f"{manifest.schema_hash}; this worker computes {SCHEMA_HASH}"
            )
        try:
            self._session = session(model_bytes)
        except ExportError as exc:
            raise ModelRejected(f"model {manifest.version}: {exc}") from exc
        shape = self._session.get_inputs()[0].shape
        if len(shape) != 2 or shape[1] != len(FEATURE_NAMES):
            raise ModelRejected(f"model {manifest.version} takes input of shape {shape}")
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
        chosen = version or registry.current()
        if chosen is None:
            raise NoModel(f"no model promoted in {registry.root}: run `warden train`")
        try:
            manifest = registry.manifest(chosen)
            model_bytes = registry.model_path(chosen).read_bytes()
            tokens = registry.tokens(chosen)
            booster = registry.booster(chosen)
        except (RegistryError, OSError) as exc:
            raise ModelRejected(str(exc)) from exc
        return cls(model_bytes, manifest, tokens, booster)

    def explain(self, rows: np.ndarray, top: int) -> list[list[Reason]]:
        """The ``top`` features that pushed each row most towards abuse.

        LightGBM's exact tree SHAP contributions from the booster the graph was
        exported from. Called for flagged rows only, so its cost stays off the
        bulk of the stream; without a booster (or ``top=0``) there are no reasons.
        """
        if self.booster is None or top == 0 or len(rows) == 0:
            return [[] for _ in range(len(rows))]
        contributions = np.asarray(
            self.booster.predict(rows.astype(np.float64), pred_contrib=True), dtype=np.float64
        )[:, : len(FEATURE_NAMES)]
        out = []
        for values, contrib in zip(rows, contributions, strict=True):
            order = np.argsort(-contrib)[:top]
            out.append(
                [
                    Reason(
                        feature=FEATURE_NAMES[i],
                        description=FEATURE_DOCS[FEATURE_NAMES[i]],
                        value=float(values[i]),
                        contribution=float(contrib[i]),
                    )
                    for i in order
                    if contrib[i] > 0
                ]
            )
        return out

    def rows(self, batch: Sequence[MailFeatures], aggregates: Sequence[Sequence[float]]) -> np.ndarray:
        """Model rows for a batch: content, this model's text evidence, aggregates."""
        return np.asarray(
            [
                row(f.content, self.tokens.evidence(f.tokens), a)
                for f, a in zip(batch, aggregates, strict=True)
            ],
            dtype=np.float32,
        ).reshape(len(batch), len(FEATURE_NAMES))

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
        if rows.ndim != 2 or rows.shape[1] != len(FEATURE_NAMES):
            raise ModelRejected(f"rows of shape {rows.shape} do not fit the schema")
        scores = onnx_scores(self._session, rows)
        if not np.all(np.isfinite(scores)):
            raise ModelRejected(f"model {self.version} produced a non-finite score")
        return scores
