"""LightGBM → ONNX export, and the parity check every model must pass.

:func:`to_onnx` builds the graph itself from the booster's dump: one
``TreeEnsembleRegressor`` node that sums every tree's leaf (no
post-transform: ONNX Runtime ignores ``LOGISTIC`` on single-target
regressors) and one ``Sigmoid`` node. That is ~15% faster to run than the
graph onnxmltools writes for the same booster (a two-class
``TreeEnsembleClassifier`` plus a label, an identity and a multiply) and
smaller on disk.

Exactness, where the booster and the graph could disagree:

* Thresholds. The booster compares in float64; the graph holds float32
  thresholds. Rows are fed as float32, so each threshold is rounded *down* to
  the largest float32 not above the booster's float64 value: then both sides
  take the same branch for every float32 input. (Rounding to nearest, as
  onnxmltools does, sends rows that sit exactly on a rounded-up threshold the
  wrong way.)
* Missing values. LightGBM reads NaN as 0 on splits whose ``missing_type``
  is ``None`` and sends it the ``default_left`` way on ``NaN`` splits; each
  node's ``missing_value_tracks_true`` says the same. ``Zero``-as-missing
  splits and categorical splits cannot be written as one ``<=`` and are
  refused.
* Tiny values: see :data:`ZERO_THRESHOLD`, applied to the input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from warden.models.exceptions import ExportError

#: Pinned so that a model exported today loads the same way tomorrow.
TARGET_OPSET = 15
ML_OPSET = 3
INPUT_NAME = "input"
#: The output of graphs this module writes: the abuse probability, shape [N, 1].
SCORE = "score"
#: The output of graphs written by onnxmltools (older registered versions): [N, 2].
PROBABILITIES = "probabilities"


def _floor32(value: float) -> np.float32:
    """The largest float32 not above ``value`` (+-inf beyond float32's range, as LightGBM splits can be)."""
    with np.errstate(over="ignore"):
        nearest = np.float32(value)
    if float(nearest) > value:
        return np.float32(np.nextafter(nearest, np.float32(-np.inf)))
    return nearest


@dataclass
class _Ensemble:
    """The attributes of one TreeEnsembleRegressor node, filled tree by tree."""

    tree_ids: list[int] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    features: list[int] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    leaf_tree_ids: list[int] = field(default_factory=list)
    leaf_node_ids: list[int] = field(default_factory=list)
    leaf_values: list[float] = field(default_factory=list)

    def add_tree(self, tree_id: int, root: dict[str, Any]) -> None:
        """Number the nodes of one tree depth first (iteratively: trees can be deep)."""
        next_id = 0
        # (node, index of the parent's entry, is the left child)
        stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, True)]
        while stack:
            node, parent, left = stack.pop()
            my_id = next_id
            next_id += 1
            if parent >= 0:
                (self.true_ids if left else self.false_ids)[parent] = my_id
            index = len(self.node_ids)
            self.tree_ids.append(tree_id)
            self.node_ids.append(my_id)
            self.true_ids.append(0)
            self.false_ids.append(0)
            if "split_index" not in node:
                self.features.append(0)
                self.modes.append("LEAF")
                self.thresholds.append(0.0)
                self.missing_true.append(0)
                self.leaf_tree_ids.append(tree_id)
                self.leaf_node_ids.append(my_id)
                self.leaf_values.append(float(node["leaf_value"]))
                continue
            if node["decision_type"] != "<=":
                kind = node["decision_type"]
                raise ExportError(f"tree {tree_id} has a {kind!r} split; only <= is exported")
            threshold = float(node["threshold"])
            missing = node["missing_type"]
            if missing == "None":
                nan_goes_left = threshold >= 0.0  # LightGBM reads NaN as 0 on these splits
            elif missing == "NaN":
                nan_goes_left = bool(node["default_left"])
            else:
                raise ExportError(f"tree {tree_id} treats zero as missing, which one <= cannot express")
            self.features.append(int(node["split_feature"]))
            self.modes.append("BRANCH_LEQ")
            self.thresholds.append(float(_floor32(threshold)))
            self.missing_true.append(int(nan_goes_left))
            # Right pushed first so the left child is numbered first.
            stack.append((node["right_child"], index, False))
            stack.append((node["left_child"], index, True))


def _sigmoid_scale(booster: lgb.Booster) -> float:
    """The ``k`` of ``objective=binary sigmoid:k``; other objectives are refused."""
    objective = str(booster.dump_model().get("objective", ""))
    found = re.fullmatch(r"binary sigmoid:([0-9.eE+-]+)", objective.strip())
    if found is None:
        raise ExportError(f"only binary LightGBM models are exported, not {objective!r}")
    return float(found.group(1))


def to_onnx(booster: lgb.Booster) -> bytes:
    """The booster as one TreeEnsembleRegressor node and a Sigmoid, matching it exactly."""
    dump = booster.dump_model()
    if int(dump.get("num_class", 1)) != 1:
        raise ExportError("only single-output (binary) boosters are exported")
    scale = _sigmoid_scale(booster)
    ensemble = _Ensemble()
    for tree in dump["tree_info"]:
        ensemble.add_tree(int(tree["tree_index"]), tree["tree_structure"])
    trees = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT_NAME],
        ["raw_score"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=ensemble.tree_ids,
        nodes_nodeids=ensemble.node_ids,
        nodes_featureids=ensemble.features,
        nodes_modes=ensemble.modes,
        nodes_values=ensemble.thresholds,
        nodes_truenodeids=ensemble.true_ids,
        nodes_falsenodeids=ensemble.false_ids,
        nodes_missing_value_tracks_true=ensemble.missing_true,
        target_treeids=ensemble.leaf_tree_ids,
        target_nodeids=ensemble.leaf_node_ids,
        target_ids=[0] * len(ensemble.leaf_values),
        target_weights=ensemble.leaf_values,
    )
    nodes = [trees]
    logit = "raw_score"
    initializers = []
    if scale != 1.0:
        initializers.append(helper.make_tensor("sigmoid_scale", TensorProto.FLOAT, [], [scale]))
        nodes.append(helper.make_node("Mul", ["raw_score", "sigmoid_scale"], ["scaled_score"]))
        logit = "scaled_score"
    nodes.append(helper.make_node("Sigmoid", [logit], [SCORE]))
    graph = helper.make_graph(
        nodes,
        "warden_lightgbm",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, booster.num_feature()])],
        [helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, [None, 1])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", TARGET_OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="warden",
    )
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


def apply_zero_rule(values: np.ndarray) -> None:
    """Set every |value| <= :data:`ZERO_THRESHOLD` of a float32 matrix to 0, in place."""
    tiny = np.abs(values) <= ZERO_THRESHOLD  # NaN compares false and stays missing
    if tiny.any():
        values[tiny] = 0.0


def score_output(sess: ort.InferenceSession) -> tuple[str, int]:
    """The name of a graph's probability output and the column holding the abuse class.

    Graphs written by :func:`to_onnx` have ``score`` [N, 1]; versions exported
    earlier by onnxmltools have ``probabilities`` [N, 2].
    """
    names = {output.name for output in sess.get_outputs()}
    if SCORE in names:
        return SCORE, 0
    if PROBABILITIES in names:
        return PROBABILITIES, 1
    raise ExportError(f"the graph has no {SCORE!r} or {PROBABILITIES!r} output: {sorted(names)}")


def onnx_scores(sess: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    """Spam probabilities for rows (as float32, with LightGBM's zero rule applied)."""
    values = rows.astype(np.float32, copy=True)
    apply_zero_rule(values)
    name, column = score_output(sess)
    outputs = sess.run([name], {INPUT_NAME: values})
    return np.asarray(outputs[0][:, column], dtype=np.float64)


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
        with np.errstate(over="ignore"):
            values = (below, np.float32(threshold), np.nextafter(below, np.float32(np.inf)))
        for value in values:
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
