"""``warden bench`` scorer section: one model, three ways to score it, same rows, same run."""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from warden.features.ingest.pseudonym import Pseudonymiser
from warden.infra.bench import stages as bench_stages
from warden.models.dataset import build
from warden.models.export import INPUT_NAME, TARGET_OPSET, onnx_scores, session
from warden.models.scorer import Scorer
from warden.models.train import train
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus

BATCHES = (1, 64, 512)
#: Mails the per-stage costs are measured on.
STAGE_MAILS = 1000


def _time(calls: dict[str, Callable[[], Any]], rows: int) -> dict[str, dict[str, float]]:
    """p50/p99 of each call, the calls interleaved round by round so load spikes hit all alike."""
    for call in calls.values():
        call()
    repeats = max(30, 30_000 // rows)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - started)
    timings = {}
    for name, taken in samples.items():
        p50, p99 = np.percentile(np.asarray(taken) * 1e6, [50, 99])
        timings[name] = {"p50_us": float(p50), "p99_us": float(p99), "rows_per_s": rows / float(p50) * 1e6}
    return timings


def _onnxmltools_graph(booster: Any) -> bytes:
    """The graph onnxmltools writes for the booster: the speed reference the hand-built graph replaces.

    (Its thresholds are rounded to nearest, so it is not exact; only its speed is compared.)
    """
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[(INPUT_NAME, FloatTensorType([None, booster.num_feature()]))],
        zipmap=False,
        target_opset=TARGET_OPSET,
    )
    return bytes(model.SerializeToString())


def run(settings: WardenSettings, out: TextIO) -> dict[str, float]:
    """Train a model on the corpus's first half and time it on the second half."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    older = build(corpus.load(settings.corpus, corpus.FIRST_HALF), pseudonymiser)
    newer_mails = corpus.load(settings.corpus, corpus.SECOND_HALF)
    newer = build(newer_mails, pseudonymiser)
    candidate = train(older, settings.models, source="bench")
    scorer = Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens)
    rows = newer.rows(newer.evidence(candidate.tokens))
    booster = candidate.booster
    reference = session(_onnxmltools_graph(booster))
    engines: dict[str, Callable[[np.ndarray], Any]] = {
        "lightgbm": lambda x: booster.predict(x.astype(np.float64), num_threads=1),
        "onnxmltools": lambda x: onnx_scores(reference, x),
        "warden": scorer.score,
    }
    if importlib.util.find_spec("lleaves") is not None:  # optional, for comparison only
        import lleaves  # type: ignore[import-not-found]

        path = f"/tmp/warden-bench-{candidate.manifest.version}.txt"  # noqa: S108 (scratch file)
        booster.save_model(path)
        compiled = lleaves.Model(model_file=path)
        compiled.compile()
        engines["lleaves"] = lambda x: compiled.predict(x.astype(np.float64), n_jobs=1)
    figures: dict[str, float] = {"trees": float(booster.num_trees()), "features": float(rows.shape[1])}
    out.write(f"== scorer ({booster.num_trees()} trees, {rows.shape[1]} features, one thread) ==\n")
    out.write(f"{'batch':>6} " + " ".join(f"{name:>28}" for name in engines) + "\n")
    for size in BATCHES:
        batch = rows[:size]
        calls: dict[str, Callable[[], Any]] = {
            name: functools.partial(engine, batch) for name, engine in engines.items()
        }
        timings = _time(calls, size)
        cells = []
        for name, timing in timings.items():
            for key, value in timing.items():
                figures[f"{name}_b{size}_{key}"] = value
            cells.append(f"{timing['p50_us']:7.0f}/{timing['p99_us']:6.0f} us {timing['rows_per_s']:8.0f}/s")
        out.write(f"{size:>6} " + " ".join(f"{c:>28}" for c in cells) + "\n")
    ratio = figures["warden_b64_rows_per_s"] / figures["lightgbm_b64_rows_per_s"]
    figures["warden_over_lightgbm_b64"] = ratio
    graph_ratio = figures["warden_b64_rows_per_s"] / figures["onnxmltools_b64_rows_per_s"]
    figures["warden_over_onnxmltools_b64"] = graph_ratio
    out.write(
        f"warden / lightgbm rows/s at batch 64: {ratio:.2f}x; warden / onnxmltools' graph: {graph_ratio:.2f}x"
    )
    if "lleaves" in engines:
        lleaves_ratio = figures["warden_b64_rows_per_s"] / figures["lleaves_b64_rows_per_s"]
        figures["warden_over_lleaves_b64"] = lleaves_ratio
        out.write(f"; warden / lleaves: {lleaves_ratio:.2f}x")
    else:
        out.write(" (lleaves not installed: `pip install lleaves` to compare)")
    out.write("\n")
    explaining = Scorer(candidate.model_bytes, candidate.manifest, candidate.tokens, candidate.booster)
    stages = bench_stages.run(
        settings, out, explaining, newer_mails[:STAGE_MAILS], newer_mails[STAGE_MAILS : 2 * STAGE_MAILS]
    )
    figures.update({f"stage_{name}": value for name, value in stages.items()})
    return figures
