"""How well the local-DP junk-report aggregator recovers the most-reported domains.

``warden privacy simulate`` runs it. Reporters each report one domain drawn
from a Zipf distribution over a universe of domains (rank r has weight
r^-s): a few junk senders draw most reports and a long tail draws a few
each, as in real abuse reports and domain popularity. Every report goes
through the client randomiser (:class:`features.privacy.local_dp.JunkReportRandomiser`)
and only the randomised reports reach the aggregator, which ranks the whole
universe. Figures: recall of the true top ``top`` domains among the
estimated top ``top``, and the relative error |estimate - true| / true of
the true top domains' counts (median and maximum over the top ``top``),
each averaged over independent trials (new population, new randomness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from warden.features.privacy.local_dp import JunkReportRandomiser, Sketch, SketchAggregator


@dataclass(frozen=True)
class Population:
    """Who reports what: ``domains`` names, each reporter's domain index."""

    domains: list[str]
    choices: np.ndarray

    @classmethod
    def zipf(cls, reporters: int, universe: int, exponent: float, seed: int) -> Population:
        rng = np.random.default_rng(seed)
        weights = np.arange(1, universe + 1, dtype=np.float64) ** -exponent
        choices = rng.choice(universe, size=reporters, p=weights / weights.sum())
        return cls([f"junk-sender-{i}.example" for i in range(universe)], choices)

    def counts(self) -> np.ndarray:
        return np.bincount(self.choices, minlength=len(self.domains))


@dataclass(frozen=True)
class Result:
    epsilon: float
    recall: float
    median_relative_error: float
    max_relative_error: float


def run_one(population: Population, sketch: Sketch, epsilon: float, top: int, seed: int) -> Result:
    rng = np.random.default_rng(seed)
    client = JunkReportRandomiser(sketch, epsilon, rng)
    server = SketchAggregator(sketch, epsilon)
    cells = np.stack([sketch.cells(d) for d in population.domains])  # (universe, rows)
    for start in range(0, len(population.choices), 5_000):  # each reporter randomises alone
        chosen = population.choices[start : start + 5_000]
        rows = rng.integers(sketch.rows, size=len(chosen))
        server.add_many(rows, client.encode_many(cells[chosen, rows], rows))
    truth = population.counts()
    true_top = np.argsort(-truth, kind="stable")[:top]
    estimates = server.estimate_many(population.domains)
    found_top = np.argsort(-estimates, kind="stable")[:top]
    errors = np.abs(estimates[true_top] - truth[true_top]) / truth[true_top]
    return Result(
        epsilon=epsilon,
        recall=len(set(true_top) & set(found_top)) / top,
        median_relative_error=float(np.median(errors)),
        max_relative_error=float(errors.max()),
    )


def run(
    out: TextIO,
    reporters: int,
    epsilons: Sequence[float],
    universe: int = 10_000,
    exponent: float = 1.1,
    top: int = 20,
    trials: int = 5,
    sketch: Sketch | None = None,
    seed: int = 11,
) -> list[Result]:
    """Simulate ``trials`` populations per epsilon and print the mean figures (and each trial's recall)."""
    sketch = sketch or Sketch()
    populations = [Population.zipf(reporters, universe, exponent, seed + t) for t in range(trials)]
    counts = np.sort(populations[0].counts())[::-1]
    out.write(
        f"{reporters:,} reporters, one report each; Zipf s={exponent:g} over {universe:,} domains "
        f"(top-1 {counts[0]:,} reports, #{top} {counts[top - 1]:,}); "
        f"sketch k={sketch.rows} x m={sketch.width}; mean of {trials} trials\n"
    )
    out.write(
        f"{'epsilon':>8}  {'recall@' + str(top):>10}  {'median rel err':>14}  {'max rel err':>11}  "
        "per trial\n"
    )
    results = []
    for index, epsilon in enumerate(epsilons):
        runs = [
            run_one(population, sketch, epsilon, top, seed + 1000 * (index + 1) + t)
            for t, population in enumerate(populations)
        ]
        result = Result(
            epsilon=epsilon,
            recall=float(np.mean([r.recall for r in runs])),
            median_relative_error=float(np.mean([r.median_relative_error for r in runs])),
            max_relative_error=float(np.mean([r.max_relative_error for r in runs])),
        )
        results.append(result)
        out.write(
            f"{epsilon:>8g}  {result.recall:>10.2f}  {result.median_relative_error:>14.3f}  "
            f"{result.max_relative_error:>11.3f}  recall {' '.join(f'{r.recall:.2f}' for r in runs)}\n"
        )
    out.flush()
    return results
