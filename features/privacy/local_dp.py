"""Local differential privacy for junk reports: a count-mean sketch.

A user who marks a mail as junk reports the sender's registrable domain. The
client never sends the domain: it sends one row of a randomised sketch
(Apple's count-mean sketch, "Learning with Privacy at Scale", 2017), which
satisfies ε-local differential privacy on its own, so whoever reads the
report learns almost nothing about which domain this user reported. The
server adds up the randomised rows and estimates, for any candidate domain,
how many users reported it; the estimates are unbiased and their error falls
with the number of reporters.

Client (:class:`JunkReportRandomiser`), for a domain ``d`` and ε:

1. pick a row ``j`` uniformly from the ``k`` hash functions;
2. make ``v`` in {-1, +1}^m: +1 at ``h_j(d)``, -1 elsewhere;
3. flip each coordinate independently with probability 1 / (1 + e^(ε/2));
4. send ``(j, v)``. Two domains differ in two coordinates of ``v``, so any
   output is at most e^ε times likelier under one than the other.

Server (:class:`SketchAggregator`): with c = (e^(ε/2) + 1) / (e^(ε/2) - 1),
add ``k (c/2 · v + 1/2)`` to row ``j`` of a k x m matrix ``M``; after ``n``
reports the count of ``d`` is estimated as
``m / (m - 1) · (mean_l M[l, h_l(d)] - n / m)``.

The hash functions are public (words of one SHAKE-256 output): the
sketch's privacy comes from the randomisation, not from a secret. The server
ranks a candidate dictionary of domains (the simulation's universe; in
production the registrable domains seen at ingest, which never leave the
aggregation job); :func:`reputation_calls` turns the estimates into sender-
domain reputation updates under the domain *pseudonyms*.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from warden.features.exceptions import FeaturesError
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.aggregations import SENDER_DOMAIN
from warden.features.store.keys import Keys
from warden.features.store.operations import Call, report


class SketchError(FeaturesError):
    """A randomised report does not fit the sketch it is added to."""


@dataclass(frozen=True)
class Sketch:
    """The public shape of the sketch: ``rows`` hash functions (k) into ``width`` cells (m)."""

    rows: int = 256
    width: int = 1024

    def cells(self, domain: str) -> np.ndarray:
        """``h_l(domain)`` for every row ``l`` (the domain is normalised first).

        The k hash functions are consecutive 32-bit words of one SHAKE-256 output.
        """
        value = domain.strip().lower().rstrip(".").encode("utf-8")
        words = np.frombuffer(hashlib.shake_256(b"warden/cms/" + value).digest(4 * self.rows), dtype=">u4")
        return (words % self.width).astype(np.int64)


@dataclass(frozen=True)
class RandomisedReport:
    """What a client sends: a row index and m signs (no domain, no identity)."""

    row: int
    signs: np.ndarray  # int8, values -1 or +1


def flip_probability(epsilon: float) -> float:
    return 1.0 / (1.0 + math.exp(epsilon / 2))


class JunkReportRandomiser:
    """The client side: turns one reported domain into an ε-LDP randomised report."""

    def __init__(self, sketch: Sketch, epsilon: float, rng: np.random.Generator | None = None) -> None:
        if not epsilon > 0:
            raise ValueError("epsilon must be positive")
        self.sketch = sketch
        self.epsilon = epsilon
        self._rng = rng if rng is not None else np.random.default_rng()  # OS entropy

    def randomise(self, domain: str) -> RandomisedReport:
        row = int(self._rng.integers(self.sketch.rows))
        return self.randomise_cells(np.asarray([self.sketch.cells(domain)[row]]), np.asarray([row]))[0]

    def randomise_cells(self, cells: np.ndarray, rows: np.ndarray) -> list[RandomisedReport]:
        """Many reports at once, given each one's chosen row and its cell ``h_row(domain)``."""
        signs = self.encode_many(cells, rows)
        return [RandomisedReport(int(r), s) for r, s in zip(rows, signs, strict=True)]

    def encode_many(self, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
        n = len(cells)
        signs = np.full((n, self.sketch.width), -1, dtype=np.int8)
        signs[np.arange(n), cells] = 1
        flips = self._rng.random((n, self.sketch.width)) < flip_probability(self.epsilon)
        signs[flips] *= -1
        return signs


class SketchAggregator:
    """The server side: sums randomised reports and estimates per-domain counts."""

    def __init__(self, sketch: Sketch, epsilon: float) -> None:
        self.sketch = sketch
        self.epsilon = epsilon
        e = math.exp(epsilon / 2)
        self._c = (e + 1) / (e - 1)
        self.matrix = np.zeros((sketch.rows, sketch.width), dtype=np.float64)
        self.reports = 0

    def add(self, report: RandomisedReport) -> None:
        self.add_many(np.asarray([report.row]), report.signs.reshape(1, -1))

    def add_many(self, rows: np.ndarray, signs: np.ndarray) -> None:
        """Add reports (row indices and their sign vectors); raises SketchError on a misfit."""
        if signs.ndim != 2 or signs.shape[1] != self.sketch.width or len(rows) != len(signs):
            raise SketchError(f"reports must be (n, {self.sketch.width}) signs with n row indices")
        if len(rows) and (rows.min() < 0 or rows.max() >= self.sketch.rows):
            raise SketchError(f"row index outside 0..{self.sketch.rows - 1}")
        debiased = self.sketch.rows * (self._c / 2 * signs.astype(np.float64) + 0.5)
        np.add.at(self.matrix, rows, debiased)
        self.reports += len(rows)

    def estimate_many(self, domains: Sequence[str]) -> np.ndarray:
        if not domains:
            return np.zeros(0)
        m = self.sketch.width
        cells = np.stack([self.sketch.cells(d) for d in domains])
        picked = self.matrix[np.arange(self.sketch.rows), cells]  # (domains, rows)
        return np.asarray(m / (m - 1) * (picked.mean(axis=1) - self.reports / m))

    def top(self, candidates: Sequence[str], count: int) -> list[tuple[str, float]]:
        """The ``count`` candidates with the largest estimated counts, largest first."""
        estimates = self.estimate_many(candidates)
        order = np.argsort(-estimates, kind="stable")[:count]
        return [(candidates[i], float(estimates[i])) for i in order]


def reputation_calls(
    estimates: Sequence[tuple[str, float]],
    pseudonymiser: Pseudonymiser,
    keys: Keys,
    at: float,
    weight_per_report: float,
    batch_id: str,
    ttl_s: int,
    memo_ttl_s: int,
) -> list[Call]:
    """Abuse-report weight for each estimated domain's sender-domain reputation (by pseudonym).

    Called by the job that aggregates a period's randomised junk reports;
    negative or zero estimates add nothing. ``batch_id`` makes a rerun of the
    same period once-only (the store's memo).
    """
    return [
        report(
            SENDER_DOMAIN,
            pseudonymiser.domain(domain),
            "abuse",
            weight_per_report * count,
            at,
            f"ldp.{batch_id}.{index}",
            keys,
            ttl_s,
            memo_ttl_s,
        )
        for index, (domain, count) in enumerate(estimates)
        if count > 0
    ]
