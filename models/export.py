"""LightGBM → ONNX export, and the parity check every model must pass.

onnxmltools writes split thresholds as float32 rounded to nearest; when a
threshold rounds *up*, a float32 feature equal to the rounded value goes left
in ONNX but right in the booster (which compares in float64). Rows are fed as
float32, so rounding each threshold *down* to the largest float32 not above
the booster's float64 threshold makes both sides take the same branch for
every float32 input. :func:`to_onnx` applies that correction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
from onnxmltools.convert.common.data_types import FloatTensorType

from models.exceptions import ExportError

#: Pinned so that a model exported today loads the same way tomorrow.
TARGET_OPSET = 15
INPUT_NAME = "input"
PROBABILITIES = "probabilities"


def _thresholds(tree: dict[str, Any]) -> Iterator[float]:
    stack = [tree["tree_structure"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            yield float(node["threshold"])
            stack.extend((node["left_child"], node["right_child"]))


def _floor32(value: float) -> np.float32:
    nearest = np.float32(value)
    if float(nearest) > value:
        return np.float32(np.nextafter(nearest, np.float32(-np.inf)))
    return nearest


def to_onnx(booster: lgb.Booster) -> bytes:
    """The booster as an ONNX graph (``zipmap=False``) whose branches match it exactly."""
    n_features = booster.num_feature()
    model = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        zipmap=False,
        target_opset=TARGET_OPSET,
    )
    trees = booster.dump_model()["tree_info"]
    corrections = []
    for tree in trees:
        table: dict[float, float] = {}
        for threshold in _thresholds(tree):
            nearest = float(np.float32(threshold))
            floored = float(_floor32(threshold))
            if table.setdefault(nearest, floored) != floored:
                raise ExportError("two thresholds of one tree round to one float32 differently")
        corrections.append(table)
    fixed = 0
    for node in model.graph.node:
        if node.op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            continue
        attrs = {a.name: a for a in node.attribute}
        tree_ids = list(attrs["nodes_treeids"].ints)
        modes = [m.decode() for m in attrs["nodes_modes"].strings]
        values = list(attrs["nodes_values"].floats)
        for i, (tree_id, mode) in enumerate(zip(tree_ids, modes, strict=True)):
            if mode == "LEAF":
                continue
            table = corrections[tree_id]
            key = float(np.float32(values[i]))
            if key not in table:
                raise ExportError(f"tree {tree_id} has a split the booster dump does not know")
            if table[key] != key:
                values[i] = table[key]
                fixed += 1
        del attrs["nodes_values"].floats[:]
        attrs["nodes_values"].floats.extend(values)
        if any(mode not in ("LEAF", "BRANCH_LEQ") for mode in modes):
            raise ExportError("the exported graph uses a comparison other than <=")
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def session(model_bytes: bytes) -> ort.InferenceSession:
    """An ONNX Runtime session on one CPU thread (the worker scales by processes)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises bare Fail/InvalidGraph types
        raise ExportError(f"ONNX Runtime cannot load the model: {exc}") from exc


#: LightGBM's predictor reads any |value| <= 1e-35 as zero (it builds sparse rows and drops
#: such entries); split thresholds of +-1e-35 exist, so the graph's input must match.
ZERO_THRESHOLD = 1e-35


def onnx_scores(sess: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    """Spam probabilities for rows (as float32, with LightGBM's zero rule applied)."""
    values = rows.astype(np.float32, copy=True)
    values[np.abs(values) <= ZERO_THRESHOLD] = 0.0  # NaN compares false and stays missing
    outputs = sess.run([PROBABILITIES], {INPUT_NAME: values})
    return np.asarray(outputs[0][:, 1], dtype=np.float64)


def _splits(booster: lgb.Booster) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(feature, threshold) of every root split, and of every deeper split."""
    roots: list[tuple[int, float]] = []
    deeper: list[tuple[int, float]] = []
    for tree in booster.dump_model()["tree_info"]:
        stack = [(tree["tree_structure"], True)]
        while stack:
            node, is_root = stack.pop()
            if "split_index" not in node:
                continue
            split = (int(node["split_feature"]), float(node["threshold"]))
            (roots if is_root else deeper).append(split)
            stack.extend(((node["left_child"], False), (node["right_child"], False)))
    return roots, deeper


def parity_rows(
    booster: lgb.Booster, held_out: np.ndarray, seed: int = 0, deeper_sample: int = 1000
) -> np.ndarray:
    """Held-out rows, rows on split thresholds, rows with missing and extreme values.

    Edge rows take a held-out row and set one feature exactly on a split
    threshold, as float32 rounded down, rounded to nearest and one step above,
    for the root split of every tree and a sample of deeper splits.
    """
    rng = np.random.default_rng(seed)
    base = held_out.astype(np.float32)
    if len(base) == 0:
        raise ExportError("parity needs at least one held-out row")
    roots, deeper = _splits(booster)
    if len(deeper) > deeper_sample:
        deeper = [deeper[i] for i in rng.choice(len(deeper), deeper_sample, replace=False)]
    edges = []
    for feature, threshold in [*roots, *deeper]:
        below = _floor32(threshold)
        for value in (below, np.float32(threshold), np.nextafter(below, np.float32(np.inf))):
            edge = base[rng.integers(len(base))].copy()
            edge[feature] = value
            edges.append(edge)
    missing = base[rng.integers(len(base), size=min(200, len(base)))].copy()
    missing[rng.random(missing.shape) < 0.3] = np.nan
    extreme = base[rng.integers(len(base), size=min(100, len(base)))].copy()
    columns = rng.integers(base.shape[1], size=len(extreme))
    extreme[np.arange(len(extreme)), columns] = np.where(
        rng.random(len(extreme)) < 0.5, np.float32(3e38), np.float32(-3e38)
    )
    parts = [base, missing, extreme]
    if edges:
        parts.append(np.stack(edges))
    return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True)
class ParityCheck:
    """How far the ONNX graph is from its booster on a set of rows."""

    max_abs_diff: float
    #: Rows on which the two disagree about a decision (score >= threshold) at any
    #: threshold, among rows whose booster score is farther than ``margin`` from it.
    label_flips: int
    #: Rows within ``margin`` of a threshold: a float32 tie, not a flip.
    ties: int
    rows: int


def parity(
    model_bytes: bytes,
    booster: lgb.Booster,
    rows: np.ndarray,
    thresholds: Sequence[float] = (0.5,),
    margin: float = 1e-6,
) -> ParityCheck:
    """Compare ONNX and booster scores over ``rows`` (fed to both as float32).

    A score within ``margin`` of a threshold is a tie at float32 precision
    (the graph computes in float32, the booster in float64): counted, not a flip.
    """
    rows32 = rows.astype(np.float32)
    expected = np.asarray(booster.predict(rows32.astype(np.float64)), dtype=np.float64)
    actual = onnx_scores(session(model_bytes), rows32)
    if not np.all(np.isfinite(actual)):
        return ParityCheck(float("inf"), len(rows), 0, len(rows))
    flips = np.zeros(len(rows), dtype=bool)
    ties = np.zeros(len(rows), dtype=bool)
    for threshold in thresholds:
        near = np.abs(expected - threshold) <= margin
        ties |= near
        flips |= ~near & ((expected >= threshold) != (actual >= threshold))
    return ParityCheck(float(np.max(np.abs(expected - actual))), int(flips.sum()), int(ties.sum()), len(rows))
