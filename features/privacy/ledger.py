"""The privacy budget ledger: every differentially private release, persisted, and a hard cap.

``warden report`` charges the ledger *before* it computes a release, so a
release that fails halfway still counts (its noise may have been seen). The
ledger is a JSON file written atomically (temporary file, then rename) under
an exclusive lock, so two reports run at once cannot both spend the last of
the budget. Epsilons add up (basic sequential composition), and so do deltas.

File layout::

    {"budget_epsilon": 10.0,
     "releases": [{"id": "r0001", "at": 1764380000.0, "epsilon": 1.0, "delta": 1e-06,
                   "what": "verdicts per kind/action/day; most-reported sender domains"}]}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from warden.features.exceptions import FeaturesError, PrivacyBudgetExhausted


@dataclass(frozen=True)
class Release:
    id: str
    at: float
    epsilon: float
    delta: float
    what: str


class BudgetLedger:
    """Releases so far and the total budget; built by the entry point from the privacy settings."""

    def __init__(self, path: Path, budget_epsilon: float) -> None:
        self.path = path
        self.budget_epsilon = budget_epsilon

    def releases(self) -> list[Release]:
        """Every release recorded so far (none when the file does not exist yet)."""
        if not self.path.exists():
            return []
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            return [Release(**entry) for entry in document["releases"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FeaturesError(f"privacy ledger {self.path} is unreadable ({type(exc).__name__})") from None

    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) spent so far."""
        releases = self.releases()
        return sum(r.epsilon for r in releases), sum(r.delta for r in releases)

    def check(self, epsilon: float) -> None:
        """Raise :class:`PrivacyBudgetExhausted` if a release of ``epsilon`` would not fit now."""
        spent, _ = self.spent()
        if spent + epsilon > self.budget_epsilon + 1e-12:
            raise PrivacyBudgetExhausted(self._refusal(spent, len(self.releases()), epsilon))

    def _refusal(self, spent: float, releases: int, epsilon: float) -> str:
        return (
            f"privacy budget exhausted: {spent:g} of {self.budget_epsilon:g} epsilon spent in "
            f"{releases} release(s); this release needs {epsilon:g} "
            f"(left {max(0.0, self.budget_epsilon - spent):g})"
        )

    def charge(self, epsilon: float, delta: float, what: str, at: float) -> Release:
        """Record a release of ``epsilon`` (and ``delta``) or refuse it.

        Raises :class:`PrivacyBudgetExhausted` (nothing recorded) when the total
        would exceed the budget. Called before the release is computed.
        """
        if not epsilon > 0:
            raise FeaturesError("a release needs a positive epsilon")
        with self._locked():
            releases = self.releases()
            spent = sum(r.epsilon for r in releases)
            if spent + epsilon > self.budget_epsilon + 1e-12:
                raise PrivacyBudgetExhausted(self._refusal(spent, len(releases), epsilon))
            release = Release(f"r{len(releases) + 1:04d}", at, epsilon, delta, what)
            self._write([*releases, release])
        return release

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, releases: list[Release]) -> None:
        document = {"budget_epsilon": self.budget_epsilon, "releases": [asdict(r) for r in releases]}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2), encoding="utf-8")
        os.replace(temporary, self.path)
