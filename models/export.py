"""LightGBM → ONNX export, and the parity check every model must pass.

onnxmltools writes split thresholds as float32 rounded to nearest; when a
threshold rounds *up*, a float32 feature equal to the rounded value goes left
in ONNX but right in the booster (which compares in float64). Rows are fed as
float32, so rounding each threshold *down* to the largest float32 not above
the booster's float64 threshold makes both sides take the same branch for
every float32 input. :func:`to_onnx` applies that correction.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def onnx_scores(sess: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    """Spam probabilities for float32 rows."""
    outputs = sess.run([PROBABILITIES], {INPUT_NAME: rows.astype(np.float32, copy=False)})
    return np.asarray(outputs[0][:, 1], dtype=np.float64)


def parity_rows(booster: lgb.Booster, held_out: np.ndarray, seed: int = 0) -> np.ndarray:
    """Held-out rows plus rows on every split threshold and rows with missing values.

    The edge rows take held-out rows and set one feature to a split threshold
    (as float32, rounded down and up) so that both branches are exercised.
    """
    rng = np.random.default_rng(seed)
    base = held_out.astype(np.float32)
    if len(base) == 0:
        raise ExportError("parity needs at least one held-out row")
    edges = []
    for tree in booster.dump_model()["tree_info"][:50]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_index" not in node:
                continue
            stack.extend((node["left_child"], node["right_child"]))
            for value in (_floor32(float(node["threshold"])), np.float32(node["threshold"])):
                edge = base[rng.integers(len(base))].copy()
                edge[int(node["split_feature"])] = value
                edges.append(edge)
    missing = base[rng.integers(len(base), size=min(200, len(base)))].copy()
    mask = rng.random(missing.shape) < 0.3
    missing[mask] = np.nan
    extreme = base[rng.integers(len(base), size=min(50, len(base)))].copy()
    extreme[:, rng.integers(base.shape[1], size=len(extreme))] = np.float32(3e38)
    parts = [base, missing, extreme]
    if edges:
        parts.append(np.stack(edges))
    return np.concatenate(parts).astype(np.float32)


def parity(model_bytes: bytes, booster: lgb.Booster, rows: np.ndarray) -> float:
    """Largest |ONNX score - booster score| over ``rows`` (fed to both as float32)."""
    rows32 = rows.astype(np.float32)
    expected = np.asarray(booster.predict(rows32.astype(np.float64)), dtype=np.float64)
    actual = onnx_scores(session(model_bytes), rows32)
    if not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(expected - actual)))
