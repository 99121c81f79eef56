"""``warden report``: aggregate statistics published with differential privacy (OpenDP).

One release answers two queries, each with half of the release's epsilon:

* **verdicts per kind, action and day** over the last ``days`` UTC days: a
  count for every (kind, action, day) in that public grid, with discrete
  Laplace noise (OpenDP ``make_count_by_categories`` then ``then_laplace``);
* **most-reported sender domains**: user junk reports (``user_report``
  training examples) counted by sender-domain pseudonym, released with
  Laplace noise and a threshold (OpenDP ``then_laplace_threshold``, which is
  (ε, δ)-DP over an unknown set of domains: a domain reported by few users
  never appears). Domains appear as pseudonyms; whoever holds the domain key
  can check a name against them.

Privacy unit: one event (its single verdict) and one report; a sender with
many mails, or a reporter with many reports, is protected in proportion to
how few they have. Every release is charged to the persisted
:class:`~features.privacy.ledger.BudgetLedger` before it is computed; a release
beyond the budget is refused. Negative noisy counts are shown as 0 (post-
processing, no privacy cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, get_args

import opendp.prelude as dp

from warden.features.privacy.ledger import BudgetLedger
from warden.streams.records import Action, EventKind, TrainingExample, Verdict

dp.enable_features("contrib")

#: The share of a release's delta (δ) given to the most-reported-domains query.
DEFAULT_DELTA = 1e-6


def _day(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d")


def _grid(now: float, days: int) -> list[str]:
    """The public categories: every (kind, action, day) of the last ``days`` days."""
    dates = [_day(now - 86400 * back) for back in range(days - 1, -1, -1)]
    return [
        f"{kind}|{action}|{day}"
        for day in dates
        for kind in get_args(EventKind)
        for action in get_args(Action)
    ]


def verdict_counts(
    verdicts: Sequence[Verdict], now: float, days: int, epsilon: float
) -> list[dict[str, Any]]:
    """Noisy verdict counts per (kind, action, day); each event counted once (duplicates dropped)."""
    categories = _grid(now, days)
    once = {v.event_id: v for v in verdicts}
    values = [f"{v.kind}|{v.action}|{_day(v.decided_at_ms / 1000)}" for v in once.values()]
    count = dp.t.make_count_by_categories(
        dp.vector_domain(dp.atom_domain(T=str)),
        dp.symmetric_distance(),
        categories=categories,
        null_category=False,
    )
    measurement = count >> dp.m.then_laplace(scale=1.0 / epsilon)
    if measurement.map(1) > epsilon * (1 + 1e-9):  # the library's own accounting must agree
        raise ValueError(f"verdict counts would cost {measurement.map(1)} > {epsilon}")
    noisy = measurement(values)
    out = []
    for category, value in zip(categories, noisy, strict=True):
        kind, action, day = category.split("|")
        out.append({"kind": kind, "action": action, "day": day, "count": max(0, int(value))})
    return out


def reported_domains(
    examples: Sequence[TrainingExample], epsilon: float, delta: float, top: int
) -> tuple[list[dict[str, Any]], int]:
    """The most-reported sender domains (pseudonyms) above a DP threshold, and that threshold."""
    domains = [e.row.sender_domain for e in examples if e.source == "user_report"]
    count = dp.t.make_count_by(dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance())

    def measurement_at(threshold: int) -> Any:
        return count >> dp.m.then_laplace_threshold(scale=1.0 / epsilon, threshold=threshold)

    low, high = 1, 1 << 30  # the smallest threshold whose delta (OpenDP's own map) fits
    while low < high:
        middle = (low + high) // 2
        if measurement_at(middle).map(1)[1] <= delta:
            high = middle
        else:
            low = middle + 1
    threshold = low
    measurement = measurement_at(threshold)
    spent_epsilon, spent_delta = measurement.map(1)
    if spent_epsilon > epsilon * (1 + 1e-9) or spent_delta > delta:
        raise ValueError(f"domain counts would cost ({spent_epsilon}, {spent_delta}) > ({epsilon}, {delta})")
    noisy: dict[str, int] = measurement(domains)
    ranked = sorted(noisy.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [{"domain": domain, "count": int(value)} for domain, value in ranked], threshold


def release(
    ledger: BudgetLedger,
    verdicts: Sequence[Verdict],
    examples: Sequence[TrainingExample],
    epsilon: float,
    now: float,
    days: int = 7,
    top: int = 10,
    delta: float = DEFAULT_DELTA,
) -> dict[str, Any]:
    """Charge the ledger, then compute and return one release.

    Raises :class:`~features.exceptions.PrivacyBudgetExhausted` (before touching
    the data) when ``epsilon`` does not fit in what is left of the budget.
    """
    if days < 1 or top < 1 or not 0 < delta < 1 or not math.isfinite(epsilon):
        raise ValueError("days and top must be positive, delta in (0, 1), epsilon finite")
    charged = ledger.charge(epsilon, delta, "verdicts per kind/action/day; most-reported sender domains", now)
    domains, threshold = reported_domains(examples, epsilon / 2, delta, top)
    spent, _ = ledger.spent()
    return {
        "release": charged.id,
        "published_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "epsilon": epsilon,
        "delta": delta,
        "budget_epsilon": ledger.budget_epsilon,
        "budget_left": round(max(0.0, ledger.budget_epsilon - spent), 6),
        "privacy_unit": "one event (verdicts); one user report (domains)",
        "mechanisms": {
            "verdicts_per_day": f"discrete Laplace, scale {2 / epsilon:g} (epsilon {epsilon / 2:g})",
            "most_reported_domains": (
                f"Laplace with threshold {threshold} (epsilon {epsilon / 2:g}, delta {delta:g})"
            ),
        },
        "verdicts_per_day": verdict_counts(verdicts, now, days, epsilon / 2),
        "most_reported_domains": domains,
    }
