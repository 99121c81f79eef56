"""``warden models compare``: the champion against its shadow, on logged traffic.

Reads the ``feature-log`` entries that carry a shadow score and summarises
how the two models' decisions differ, each under its own policy thresholds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from warden.models.policy import Policy
from warden.models.registry import Registry
from warden.streams.records import FeatureLogEntry


@dataclass(frozen=True)
class Comparison:
    """Champion versus shadow over the same events."""

    champion: str
    shadow: str
    events: int
    agreement: float
    mean_abs_score_diff: float
    score_correlation: float
    actions: dict[tuple[str, str], int]

    def lines(self) -> list[str]:
        out = [
            f"champion {self.champion} vs shadow {self.shadow} on {self.events:,} events",
            f"same action: {self.agreement:.2%}; mean |score difference| {self.mean_abs_score_diff:.4f}; "
            f"score correlation {self.score_correlation:.4f}",
            "champion action -> shadow action: count",
        ]
        out += [f"  {a:5s} -> {b:5s}: {n:,}" for (a, b), n in sorted(self.actions.items())]
        return out


def compare(entries: Iterable[FeatureLogEntry], registry: Registry) -> list[Comparison]:
    """One comparison per (champion, shadow) pair found in ``entries``."""
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for entry in entries:
        if entry.shadow_version is None or entry.score is None or entry.shadow_score is None:
            continue
        pairs.setdefault((entry.model_version, entry.shadow_version), []).append(
            (entry.score, entry.shadow_score)
        )
    out = []
    for (champion, shadow), scores in sorted(pairs.items()):
        ours = _policy(registry, champion)
        theirs = _policy(registry, shadow)
        values = np.asarray(scores, dtype=np.float64)
        actions: Counter[tuple[str, str]] = Counter((ours.decide(a), theirs.decide(b)) for a, b in scores)
        same = sum(n for (a, b), n in actions.items() if a == b)
        correlation = float(np.corrcoef(values[:, 0], values[:, 1])[0, 1]) if len(values) > 1 else 1.0
        out.append(
            Comparison(
                champion=champion,
                shadow=shadow,
                events=len(scores),
                agreement=same / len(scores),
                mean_abs_score_diff=float(np.mean(np.abs(values[:, 0] - values[:, 1]))),
                score_correlation=correlation,
                actions=dict(actions),
            )
        )
    return out


def _policy(registry: Registry, version: str) -> Policy:
    thresholds = registry.manifest(version).thresholds
    return Policy(thresholds.junk, thresholds.block)
