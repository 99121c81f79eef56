"""The decision policy: a score becomes ``allow``, ``junk`` or ``block``.

Thresholds come from the model's manifest (set on its validation window at
target false-positive rates), so a new model brings its own calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

from warden.models.exceptions import ModelRejected
from warden.streams.records import Action


@dataclass(frozen=True)
class Policy:
    """``score >= block`` blocks, ``score >= junk`` sends to junk, anything else is allowed."""

    junk: float
    block: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.junk <= self.block <= 1.0 + 1e-9):
            raise ModelRejected(
                f"policy thresholds must satisfy 0 <= junk <= block <= 1, "
                f"got junk={self.junk} block={self.block}"
            )

    def decide(self, score: float) -> Action:
        if score >= self.block:
            return "block"
        if score >= self.junk:
            return "junk"
        return "allow"
