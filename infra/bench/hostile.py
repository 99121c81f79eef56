"""``warden bench --only hostile``: the worst CPU per 1 MB record, stage by stage, over hostile families.

For every stage of ingest (:data:`infra.bench.hostile_inputs.STAGES`) and every
adversarial family of that stage, a record is built at 4 KB and doubled up
to 1 MB; each size is timed in this process's CPU time (best of a few runs,
one thread, no broker). The figures per stage are the worst family's CPU
per MB at 1 MB, the throughput that worst case allows, and the CPU ratio of
the last doubling (about 2 for linear code, 4 for quadratic).

A family whose cost runs away (more than :data:`BUDGET_S` at some size) is
not run further: its 1 MB figure is extrapolated from the growth of its last
doubling and printed with ``~``. That is how the quadratic nesting check of
issue 17 shows here without the hour it would take at 1 MB.
"""

from __future__ import annotations

import functools
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from warden.infra.bench.hostile_inputs import STAGES, Family, Stage, size_of

#: Every stage must ingest its worst family at least this fast (issue 17).
TARGET_MB_S = 20.0
#: The record sizes each family is timed at (doubling), ending at the 1 MB of the figures.
SIZES = (4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000, 1_000_000)
#: CPU seconds one run may take before the family is stopped and extrapolated.
BUDGET_S = 2.0


@dataclass(frozen=True)
class Measured:
    """One family of one stage: its CPU per MB at 1 MB and the ratio of its last doubling."""

    stage: str
    family: str
    seconds_per_mb: float
    #: CPU at the last size over CPU at the size before it (sizes double).
    doubling_ratio: float
    extrapolated: bool


def cpu_seconds(call: Callable[[], object], repeats: int = 3) -> float:
    """The least process CPU time of ``repeats`` calls (other load barely changes CPU time)."""
    best = math.inf
    for _ in range(repeats):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
        if best > BUDGET_S / 4:
            break  # slow enough that noise no longer matters
    return best


def measure(stage: Stage, family: Family, sizes: Sequence[int] = SIZES) -> Measured:
    """Time ``family`` through ``stage`` at doubling sizes; extrapolate to the last size if it runs away."""
    points: list[tuple[int, float]] = []
    for size in sizes:
        value = family.make(min(size, family.grows_to))
        actual = max(1, size_of(value))
        if points and actual < points[-1][0] * 1.5:
            continue  # the record did not grow (a count grows in steps, or a limit stops it)
        seconds = cpu_seconds(functools.partial(stage.run, value))
        points.append((actual, seconds))
        if seconds > BUDGET_S and len(points) > 1 and size != sizes[-1]:
            return _extrapolated(stage, family, points, sizes[-1])
    size_b, time_b = points[-1]
    return Measured(stage.name, family.name, time_b / (size_b / 1e6), 2 ** _exponent(points), False)


def _exponent(points: Sequence[tuple[int, float]]) -> float:
    """How CPU grew with size over the last two points (1 linear, 2 quadratic; 0 if size did not grow)."""
    if len(points) < 2 or points[-1][0] <= points[-2][0]:
        return 0.0
    (size_a, time_a), (size_b, time_b) = points[-2], points[-1]
    return math.log(max(time_b, 1e-6) / max(time_a, 1e-6)) / math.log(size_b / size_a)


def _extrapolated(stage: Stage, family: Family, points: list[tuple[int, float]], target: int) -> Measured:
    size_b, time_b = points[-1]
    exponent = _exponent(points)
    at_target = time_b * (target / size_b) ** max(1.0, exponent)
    return Measured(stage.name, family.name, at_target / (target / 1e6), 2**exponent, extrapolated=True)


def run(out: TextIO, stages: Sequence[Stage] = STAGES, every: bool = False) -> dict[str, dict[str, Any]]:
    """Measure every family of every stage and print the worst per stage (``every``: each family too)."""
    out.write(
        "== hostile input: worst CPU per 1 MB record, per ingest stage "
        f"(target >= {TARGET_MB_S:.0f} MB/s; one thread; ratio = CPU growth of the last doubling) ==\n"
    )
    # As a worker does at start (serving.worker.run.freeze_startup_objects): the collector then walks
    # only what a record makes, and its full collections do not land in one family's figures.
    gc.collect()
    gc.freeze()
    results: dict[str, dict[str, Any]] = {}
    for stage in stages:
        measured = [measure(stage, family) for family in stage.families]
        for m in measured if every else ():
            out.write(
                f"  {stage.name:10s} {'~' if m.extrapolated else ' '}{m.seconds_per_mb * 1000:10.1f} ms/MB "
                f"x{m.doubling_ratio:5.2f}  {m.family}\n"
            )
        worst = max(measured, key=lambda m: m.seconds_per_mb)
        steepest = max(measured, key=lambda m: m.doubling_ratio)
        rate = 1.0 / worst.seconds_per_mb if worst.seconds_per_mb > 0 else math.inf
        results[stage.name] = {
            "worst_family": worst.family,
            "worst_ms_per_mb": worst.seconds_per_mb * 1000,
            "worst_mb_per_s": rate,
            "extrapolated": worst.extrapolated,
            "steepest_family": steepest.family,
            "steepest_ratio": steepest.doubling_ratio,
            "families": len(measured),
            "meets_target": rate >= TARGET_MB_S,
        }
        mark = "~" if worst.extrapolated else " "
        out.write(
            f"{stage.name:10s} {mark}{worst.seconds_per_mb * 1000:10.1f} ms/MB {rate:9.1f} MB/s "
            f"{'ok ' if rate >= TARGET_MB_S else 'LOW'}  worst: {worst.family:34s} "
            f"(of {len(measured)}; steepest doubling x{steepest.doubling_ratio:.2f}: {steepest.family})\n"
        )
    slowest = min(results, key=lambda name: results[name]["worst_mb_per_s"])
    out.write(
        f"slowest stage: {slowest} ({results[slowest]['worst_mb_per_s']:.1f} MB/s on "
        f"{results[slowest]['worst_family']}); target {TARGET_MB_S:.0f} MB/s "
        f"{'met by every stage' if all(r['meets_target'] for r in results.values()) else 'NOT met'}\n"
        "(~: extrapolated from the last doubling; the run was stopped above "
        f"{BUDGET_S:.0f} s of CPU)\n"
    )
    return results


def page(record: dict[str, Any], command: str) -> str:
    """The docs page of one recorded run of this section (Markdown), rendered by the docs site.

    ``record`` is a section record of :mod:`infra.bench.results` (its ``details`` are
    what :func:`run` returned); ``command`` is the command that measures it again.
    """
    results: dict[str, dict[str, Any]] = record["details"]
    target = float(record["parameters"].get("target_mb_per_s", TARGET_MB_S))
    budget = float(record["parameters"].get("budget_s", BUDGET_S))
    rows = "\n".join(
        f"| {stage} | {'~' if r['extrapolated'] else ''}{r['worst_ms_per_mb']:.1f} | "
        f"{r['worst_mb_per_s']:.1f} | {'yes' if r['meets_target'] else '**no**'} | `{r['worst_family']}` | "
        f"{r['families']} | x{r['steepest_ratio']:.2f} (`{r['steepest_family']}`) |"
        for stage, r in results.items()
    )
    slowest = min(results, key=lambda name: results[name]["worst_mb_per_s"])
    met = all(r["meets_target"] for r in results.values())
    machine = record["machine"]
    return f"""# Hostile input: CPU per record, stage by stage

Measured by `{command}` on {record["date"]} ({machine["python"]}, {machine["cpu_model"]},
{machine["cores"]} cores, load average {machine["load_average"][0]:.1f} at the end: CPU time grows on a
loaded machine, so compare rows of one run). Rendered from `{record["file"]}`: run the command
again to replace it.{_note(record)}

For every ingest stage (`infra/bench/hostile_inputs.py`: framing, JSON, nesting,
validation, header and body parsing, each regex over message text, and the
whole of ingest) and every adversarial family of that stage, a record is
built at 4 KB and doubled up to 1 MB and timed in process CPU time (best of a
few runs, one thread). A row shows the stage's worst family: its CPU per 1 MB
record, the throughput that worst case allows (target: at least
{target:.0f} MB/s), and the steepest CPU growth of a last doubling over
all its families (about x2 for linear work, x4 for quadratic). `~` marks a
figure extrapolated from a family stopped above {budget:.0f} s of CPU.

| stage | worst ms/MB | worst MB/s | >= {target:.0f} MB/s | worst family | families | steepest doubling |
|---|---|---|---|---|---|---|
{rows}

Slowest stage: **{slowest}**, {results[slowest]["worst_mb_per_s"]:.1f} MB/s on
`{results[slowest]["worst_family"]}`; the target is {"met by every stage" if met else "**not met**"}.

The same families are doubling tests in `tests/unit/test_linear_time.py`
(each stage's CPU may at most ~2.5x when its input doubles), and every regex
over sender text is checked there by `regexploit`. In a worker, records above
`WARDEN_INGEST__ISOLATE_ABOVE_BYTES` are ingested in a child process under a
deadline (see [Security](../security.md), section 1).
"""


def _note(record: dict[str, Any]) -> str:
    """The record's own note (how it was obtained, when not by ``--json``), as a paragraph."""
    note = record.get("note")
    return f"\n\n{note}" if note else ""
