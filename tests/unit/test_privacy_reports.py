"""Differentially private reports: OpenDP releases and the budget ledger that refuses overspending."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warden.features.exceptions import PrivacyBudgetExhausted
from warden.features.privacy.ledger import BudgetLedger
from warden.features.privacy.report import release, reported_domains, verdict_counts
from warden.features.testing import features_for
from warden.infra.cli.main import main
from warden.streams.exceptions import ExitCode
from warden.streams.records import ServedRow, SourcePosition, TrainingExample, Verdict

NOW = 1_764_400_000.0
POSITION = SourcePosition(topic="t", partition=0, offset=0)


def verdict(i: int, action: str, days_ago: int = 0) -> Verdict:
    at_ms = int((NOW - 86400 * days_ago) * 1000)
    return Verdict(
        event_id=f"e{i}",
        action=action,  # type: ignore[arg-type]
        score=0.5,
        model_version="m",
        source=POSITION,
        produced_at_ms=at_ms,
        decided_at_ms=at_ms,
    )


def user_report(i: int, domain: str) -> TrainingExample:
    f = features_for(f"e{i}", NOW, "k1.sender", ["k1.r"])
    row = ServedRow(
        event_id=f.event_id,
        timestamp=f.timestamp,
        model_version="m",
        sender=f.sender,
        sender_domain=domain,
        url_domains=[],
        content=f.content,
        tokens=f.tokens,
        aggregates=[],
    )
    return TrainingExample(
        event_id=row.event_id, label=1, weight=0.2, source="user_report", labelled_at=NOW, row=row
    )


def test_ledger_refuses_an_over_budget_release_and_records_nothing(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.json", budget_epsilon=2.0)
    verdicts = [verdict(i, "allow") for i in range(50)]
    first = release(ledger, verdicts, [], epsilon=1.5, now=NOW)
    assert first["release"] == "r0001"
    assert first["budget_left"] == pytest.approx(0.5)
    with pytest.raises(PrivacyBudgetExhausted, match=r"1\.5 of 2 epsilon spent .* needs 1 \(left 0\.5\)"):
        release(ledger, verdicts, [], epsilon=1.0, now=NOW + 1)
    # Refused: nothing charged, and the ledger survives a restart (it is a file).
    again = BudgetLedger(tmp_path / "ledger.json", budget_epsilon=2.0)
    assert again.spent()[0] == pytest.approx(1.5)
    assert [r.id for r in again.releases()] == ["r0001"]
    last = release(again, verdicts, [], epsilon=0.5, now=NOW + 2)  # exactly what is left still fits
    assert last["budget_left"] == pytest.approx(0.0)
    with pytest.raises(PrivacyBudgetExhausted):
        again.check(0.01)


def test_cli_refuses_an_over_budget_release_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_path = tmp_path / "ledger.json"
    BudgetLedger(ledger_path, 3.0).charge(2.5, 1e-6, "earlier release", NOW)
    monkeypatch.setenv("WARDEN_PRIVACY__REPORT_LEDGER", str(ledger_path))
    monkeypatch.setenv("WARDEN_PRIVACY__REPORT_BUDGET_EPSILON", "3")
    code = main(["report", "--epsilon", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == ExitCode.FAILURE
    assert err.count("\n") == 1
    assert err.startswith("warden: error: privacy budget exhausted: 2.5 of 3 epsilon spent")
    assert json.loads(ledger_path.read_text())["releases"][-1]["what"] == "earlier release"
    assert not (tmp_path / "out").exists()


def test_verdict_counts_cover_the_public_grid_with_noise_around_the_truth() -> None:
    verdicts = [verdict(i, "junk", days_ago=1) for i in range(400)] + [
        verdict(400 + i, "allow") for i in range(900)
    ]
    verdicts += verdicts[:100]  # duplicate verdicts count once
    counts = verdict_counts(verdicts, NOW, days=3, epsilon=1.0)
    assert len(counts) == 3 * 3 * 3  # days x actions x kinds: the whole public grid, empty cells too
    by = {(c["action"], c["day"]): c["count"] for c in counts if c["kind"] == "mail"}
    days = sorted({c["day"] for c in counts})
    assert abs(by[("junk", days[1])] - 400) < 30  # Laplace scale 1: |noise| < 30 with overwhelming odds
    assert abs(by[("allow", days[2])] - 900) < 30
    assert all(c["count"] >= 0 for c in counts)
    noisy = [verdict_counts(verdicts, NOW, 3, 1.0)[0]["count"] for _ in range(30)]
    assert len(set(noisy)) > 1  # noise, not a fixed answer


def test_most_reported_domains_hide_rare_domains_behind_the_threshold() -> None:
    examples = [user_report(i, "d1.popular") for i in range(300)]
    examples += [user_report(1000 + i, "d1.rare") for i in range(2)]
    domains, threshold = reported_domains(examples, epsilon=0.5, delta=1e-6, top=5)
    assert threshold > 2
    assert [d["domain"] for d in domains] == ["d1.popular"]
    assert abs(domains[0]["count"] - 300) < 60
