"""Calendar and contacts models: trained, checked and evaluated on simulated streams.

Rows are built exactly as the stream builds them: every simulated event, of
both kinds and in time order, goes through the ingest transform
(:func:`features.ingest.extraction.to_activity_features`) and the in-memory feature
store that runs the Redis store's own calls (a created card feeds the
known-contact set an invite is later judged against). Training then goes
through :func:`models.train.train` (token table, LightGBM, ONNX export,
parity) and the kind's own registry (:meth:`models.registry.Registry.for_kind`).

Evaluation trains on one seed and scores a stream simulated with another, and
reports, per campaign type, recall and a precision against all legitimate
traffic; the generalisation check trains with one campaign type left out of
the training stream entirely and measures recall on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from warden.features.definitions import SCHEMAS
from warden.features.ingest.extraction import to_activity_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.testing import InMemoryStore
from warden.models.dataset import Dataset
from warden.models.export import onnx_scores, session
from warden.models.registry import Candidate, Manifest, Registry
from warden.models.train import train
from warden.streams.records import ActivityKind, SourcePosition
from warden.streams.settings import WardenSettings
from warden.streams.sources.simulated_world import CAMPAIGN_TYPES, LEGIT, Simulated, SimulationParams
from warden.streams.sources.simulator import simulate


def build(events: Sequence[Simulated], kind: ActivityKind, pseudonymiser: Pseudonymiser) -> Dataset:
    """The rows of ``kind``'s events; both kinds pass through one store, in time order.

    Account history (:attr:`Simulated.history`) goes through the store but gives no row.
    """
    schema = SCHEMAS[kind]
    store = InMemoryStore()
    content: list[list[float]] = []
    aggregates: list[list[float]] = []
    tokens: list[tuple[int, ...]] = []
    chosen: list[Simulated] = []
    for offset, item in enumerate(sorted(events, key=lambda s: (s.event.timestamp, s.event.event_id))):
        source = SourcePosition(topic="simulator", partition=0, offset=offset)
        # The simulator records its traffic: its time is the trusted one (streams.sources.simulator.produce).
        features = to_activity_features(
            item.event, pseudonymiser, source, produced_at_ms=0, event_time=item.event.timestamp
        )
        (values,) = store.apply_and_read_now([features])
        if item.event.kind == kind and not item.history:
            content.append(features.content)
            aggregates.append(values)
            tokens.append(tuple(features.tokens))
            chosen.append(item)
    n = len(chosen)
    return Dataset(
        content=np.asarray(content, dtype=np.float64).reshape(n, len(schema.content_names)),
        aggregates=np.asarray(aggregates, dtype=np.float64).reshape(n, len(schema.aggregates)),
        tokens=tuple(tokens),
        labels=np.asarray([s.label for s in chosen], dtype=np.int8),
        timestamps=np.asarray([s.event.timestamp for s in chosen], dtype=np.float64),
        event_ids=tuple(s.event.event_id for s in chosen),
        folders=tuple(s.campaign for s in chosen),
        kind=kind,
    )


def _source(params: SimulationParams) -> str:
    mix = ",".join(f"{k}={w:g}" for k, w in sorted(params.mix.items()))
    return f"simulator:seed={params.seed},accounts={params.accounts},days={params.days:g},mix={mix}"


def candidate(settings: WardenSettings, kind: ActivityKind, params: SimulationParams) -> Candidate:
    """A trained, exported and parity-checked candidate on a simulated stream (not registered)."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    data = build(simulate(params), kind, pseudonymiser)
    return train(data, settings.models, source=_source(params), widen_thresholds=True)


def train_simulated(
    settings: WardenSettings, kind: ActivityKind, params: SimulationParams, *, promote: bool = True
) -> Manifest:
    """Train ``kind``'s model from the simulator, register it in its registry and (by default) promote it."""
    trained = candidate(settings, kind, params)
    registry = Registry.from_settings(settings, signing=True).for_kind(kind)
    version = registry.register(trained)
    if promote:
        registry.promote(version)
    return trained.manifest


@dataclass(frozen=True)
class TypeResult:
    """How one campaign type (or legitimate traffic) fared on the test stream."""

    campaign: str
    events: int
    flagged: int
    #: Flagged at a score of 0.5 instead of the model's junk threshold.
    flagged_at_half: int = 0

    @property
    def rate(self) -> float:
        """Recall for a campaign type; the false-positive rate for legit traffic."""
        return self.flagged / self.events if self.events else float("nan")


def score_stream(
    trained: Candidate, kind: ActivityKind, events: Sequence[Simulated], settings: WardenSettings
) -> dict[str, TypeResult]:
    """Flag (score >= the model's ``junk`` threshold) every ``kind`` event; counts by campaign type."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    data = build(events, kind, pseudonymiser)
    scores = onnx_scores(session(trained.model_bytes), data.rows(data.evidence(trained.tokens)))
    flagged = scores >= trained.manifest.thresholds.junk
    half = scores >= 0.5
    campaigns = np.asarray(data.folders)
    return {
        name: TypeResult(
            name,
            int((campaigns == name).sum()),
            int(flagged[campaigns == name].sum()),
            int(half[campaigns == name].sum()),
        )
        for name in (LEGIT, *CAMPAIGN_TYPES)
    }


def precision_against_legit(results: dict[str, TypeResult], campaign: str) -> float:
    """Flagged events of ``campaign`` / (those + every flagged legitimate event)."""
    hits, false = results[campaign].flagged, results[LEGIT].flagged
    return hits / (hits + false) if hits + false else float("nan")


@dataclass(frozen=True)
class Evaluation:
    kind: ActivityKind
    train: SimulationParams
    test: SimulationParams
    results: dict[str, TypeResult]
    junk: float
    #: Campaign type -> recall on it of a model trained without it, at its junk threshold and at
    #: 0.5 (empty unless asked for).
    held_out: dict[str, tuple[float, float]]

    def lines(self) -> list[str]:
        legit = self.results[LEGIT]
        out = [
            f"== {self.kind} model: trained on seed {self.train.seed}, tested on seed {self.test.seed} "
            f"({self.test.accounts} accounts, {self.test.days:g} days) ==",
            f"{'campaign type':20s} {'events':>7s} {'flagged':>8s} {'recall':>7s} {'precision*':>10s}"
            f" {'recall@0.5':>10s}" + ("  recall held out" if self.held_out else ""),
        ]
        abuse_events = abuse_flagged = 0
        for name in CAMPAIGN_TYPES:
            result = self.results[name]
            if not result.events:
                continue
            abuse_events += result.events
            abuse_flagged += result.flagged
            held = ""
            if name in self.held_out:
                at_junk, at_half_held = self.held_out[name]
                held = f"  {at_junk:7.3f} / {at_half_held:5.3f}"
            at_half = result.flagged_at_half / result.events
            out.append(
                f"{name:20s} {result.events:7d} {result.flagged:8d} {result.rate:7.3f} "
                f"{precision_against_legit(self.results, name):10.3f} {at_half:10.3f}{held}"
            )
        overall = abuse_flagged / (abuse_flagged + legit.flagged) if abuse_flagged + legit.flagged else 0.0
        recall = abuse_flagged / abuse_events if abuse_events else float("nan")
        out.append(f"{'all abuse':20s} {abuse_events:7d} {abuse_flagged:8d} {recall:7.3f} {overall:10.3f}")
        out.append(
            f"{'legit':20s} {legit.events:7d} {legit.flagged:8d}   false-positive rate {legit.rate:.4f} "
            f"(at 0.5: {legit.flagged_at_half / max(1, legit.events):.4f})"
        )
        out.append(
            f"flagged: score >= the model's junk threshold {self.junk:.3g} (the training stream's "
            "validation window: its false-positive target, widened at the same recall)"
        )
        out.append("precision* = flagged events of the type / (those + all flagged legit events)")
        if self.held_out:
            out.append("recall held out: at the junk threshold / at 0.5, of a model trained without the type")
        return out


def evaluate_simulated(
    settings: WardenSettings,
    kind: ActivityKind,
    train_params: SimulationParams,
    test_seed: int,
    *,
    hold_out_each: bool = False,
) -> Evaluation:
    """Train on ``train_params``, test on the same parameters with ``test_seed``; optionally hold out."""
    if test_seed == train_params.seed:
        raise ValueError("the test stream needs a seed other than the training stream's")
    test_params = replace(train_params, seed=test_seed)
    test_events = simulate(test_params)
    trained = candidate(settings, kind, train_params)
    results = score_stream(trained, kind, test_events, settings)
    held_out: dict[str, tuple[float, float]] = {}
    if hold_out_each:
        for name in CAMPAIGN_TYPES:
            if not results[name].events:
                continue
            mix = {**train_params.mix, name: 0.0}
            without = candidate(settings, kind, replace(train_params, mix=mix))
            result = score_stream(without, kind, test_events, settings)[name]
            held_out[name] = (result.rate, result.flagged_at_half / result.events)
    return Evaluation(kind, train_params, test_params, results, trained.manifest.thresholds.junk, held_out)
