"""Local DP for junk reports: the count-mean sketch is ε-LDP, unbiased, and feeds reputation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from pydantic import SecretStr

from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.privacy.ldp_simulation import run
from warden.features.privacy.local_dp import (
    JunkReportRandomiser,
    Sketch,
    SketchAggregator,
    SketchError,
    flip_probability,
    reputation_calls,
)
from warden.features.store.aggregations import AGGREGATES, SENDER_DOMAIN, AbuseReports
from warden.features.store.keys import Keys
from warden.features.testing import InMemoryStore, features_for


@pytest.mark.parametrize("epsilon", [0.5, 2.0, 4.0, 8.0])
def test_two_domains_differ_in_two_cells_so_any_report_is_at_most_e_eps_likelier(epsilon: float) -> None:
    p = flip_probability(epsilon)
    assert ((1 - p) / p) ** 2 == pytest.approx(math.exp(epsilon))


def test_a_report_is_a_row_and_signs_only() -> None:
    client = JunkReportRandomiser(Sketch(rows=8, width=64), epsilon=2.0, rng=np.random.default_rng(1))
    report = client.randomise("spam.example")
    assert 0 <= report.row < 8
    assert report.signs.shape == (64,)
    assert set(np.unique(report.signs)) <= {-1, 1}


def test_estimates_recover_counts_from_randomised_reports_alone() -> None:
    sketch = Sketch(rows=64, width=256)
    rng = np.random.default_rng(3)
    client = JunkReportRandomiser(sketch, epsilon=4.0, rng=rng)
    server = SketchAggregator(sketch, epsilon=4.0)
    truth = {"spam.example": 8000, "phish.example": 5000, "promo.example": 2000}
    for domain, count in truth.items():
        for _ in range(count // 500):
            rows = rng.integers(sketch.rows, size=500)
            server.add_many(rows, client.encode_many(sketch.cells(domain)[rows], rows))
    estimates = dict(server.top([*truth, "never.example"], 4))
    for domain, count in truth.items():
        assert estimates[domain] == pytest.approx(count, rel=0.1)
    assert abs(estimates["never.example"]) < 800
    assert [d for d, _ in server.top([*truth, "never.example"], 3)] == list(truth)


def test_misfit_reports_are_refused() -> None:
    server = SketchAggregator(Sketch(rows=4, width=16), epsilon=1.0)
    with pytest.raises(SketchError):
        server.add_many(np.asarray([0]), np.ones((1, 8), dtype=np.int8))
    with pytest.raises(SketchError):
        server.add_many(np.asarray([9]), np.ones((1, 16), dtype=np.int8))


def test_estimates_feed_sender_domain_reputation_by_pseudonym() -> None:
    pseudonymiser = Pseudonymiser(SecretStr("test-key"), "k1")
    store = InMemoryStore(Keys("ldp"))
    now = 1_700_000_000.0
    calls = reputation_calls(
        [("spam.example", 120.0), ("noise.example", -4.0)],
        pseudonymiser,
        store.keys,
        now,
        0.2,
        "day1",
        3600,
        3600,
    )
    assert len(calls) == 1  # a negative estimate adds nothing
    assert "spam.example" not in " ".join(calls[0].keys + calls[0].args)
    store.interpreter.run(calls[0])
    store.interpreter.run(calls[0])  # a rerun of the same batch is once-only
    position = AGGREGATES.index(
        next(a for a in AGGREGATES if isinstance(a, AbuseReports) and a.entity is SENDER_DOMAIN)
    )
    reported = features_for("e1", now + 60, "k1.s", ["k1.r"]).model_copy(
        update={"sender_domain": pseudonymiser.domain("spam.example")}
    )
    other = features_for("e2", now + 60, "k1.s2", ["k1.r"])
    rows = store.apply_and_read_now([reported, other])
    assert rows[0][position] == pytest.approx(0.2 * 120.0, rel=0.01)
    assert rows[1][position] == 0.0


def test_simulation_prints_recall_and_error_per_epsilon() -> None:
    out = io.StringIO()
    results = run(out, reporters=20_000, epsilons=[1.0, 8.0], universe=500, top=5, trials=2)
    assert [r.epsilon for r in results] == [1.0, 8.0]
    assert results[1].recall >= results[0].recall
    assert results[1].median_relative_error < results[0].median_relative_error
    assert "recall@5" in out.getvalue()
