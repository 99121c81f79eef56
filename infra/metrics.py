"""Worker counters and gauges, rendered for ``GET /metrics`` and ``GET /health``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["starting", "ok", "degraded"]


@dataclass
class WorkerStats:
    """What one worker process has done; mutated only by its own event loop."""

    ingested: int = 0
    dead_lettered: int = 0
    scored: int = 0
    batches: int = 0
    store_failures: int = 0
    store_degraded: bool = False
    model_version: str = ""
    shadow_version: str = ""
    swaps: int = 0
    model_refusals: int = 0
    last_swap_load_ms: float = 0.0
    shadow_scored: int = 0
    feedback_accepted: int = 0
    feedback_unknown: int = 0
    feedback_duplicates: int = 0
    feedback_capped: int = 0
    served_rows_lost: int = 0
    shadow_disagreements: int = 0
    assigned_partitions: int = 0
    started: bool = False
    actions: dict[str, int] = field(default_factory=lambda: {"allow": 0, "junk": 0, "block": 0})

    @property
    def status(self) -> Status:
        if self.store_degraded:
            return "degraded"
        return "ok" if self.started else "starting"

    def health(self) -> dict[str, object]:
        return {
            "status": self.status,
            "model_version": self.model_version,
            "shadow_version": self.shadow_version,
            "assigned_partitions": self.assigned_partitions,
            "ingested": self.ingested,
            "scored": self.scored,
            "dead_lettered": self.dead_lettered,
        }

    def prometheus(self) -> str:
        """The counters in the Prometheus text exposition format."""
        lines = [
            "# TYPE warden_events_ingested_total counter",
            f"warden_events_ingested_total {self.ingested}",
            "# TYPE warden_dead_letters_total counter",
            f"warden_dead_letters_total {self.dead_lettered}",
            "# TYPE warden_events_scored_total counter",
            f"warden_events_scored_total {self.scored}",
            "# TYPE warden_score_batches_total counter",
            f"warden_score_batches_total {self.batches}",
            "# TYPE warden_store_failures_total counter",
            f"warden_store_failures_total {self.store_failures}",
            "# TYPE warden_store_degraded gauge",
            f"warden_store_degraded {int(self.store_degraded)}",
            "# TYPE warden_verdicts_total counter",
        ]
        lines += [f'warden_verdicts_total{{action="{a}"}} {n}' for a, n in self.actions.items()]
        lines += [
            "# TYPE warden_feedback_total counter",
            f'warden_feedback_total{{outcome="accepted"}} {self.feedback_accepted}',
            f'warden_feedback_total{{outcome="unknown_event"}} {self.feedback_unknown}',
            f'warden_feedback_total{{outcome="duplicate"}} {self.feedback_duplicates}',
            f'warden_feedback_total{{outcome="capped"}} {self.feedback_capped}',
            "# TYPE warden_model_swaps_total counter",
            f"warden_model_swaps_total {self.swaps}",
            "# TYPE warden_model_refusals_total counter",
            f"warden_model_refusals_total {self.model_refusals}",
            "# TYPE warden_model_swap_load_ms gauge",
            f"warden_model_swap_load_ms {self.last_swap_load_ms:.1f}",
            "# TYPE warden_shadow_scored_total counter",
            f"warden_shadow_scored_total {self.shadow_scored}",
            "# TYPE warden_shadow_disagreements_total counter",
            f"warden_shadow_disagreements_total {self.shadow_disagreements}",
            "# TYPE warden_model_info gauge",
            f'warden_model_info{{version="{self.model_version}"}} 1',
        ]
        return "\n".join(lines) + "\n"
