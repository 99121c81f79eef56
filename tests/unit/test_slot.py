"""Swaps in the model slot: a version promoted from shadow is never shadowed by itself."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from tests.unit.test_models import KEYS, synthetic
from warden.models.registry import Registry
from warden.models.train import train
from warden.serving.slot import ModelSlot
from warden.serving.worker.metrics import WorkerStats
from warden.streams.settings import ModelSettings


def test_promoting_the_shadow_drops_it_in_the_same_swap(tmp_path: Path) -> None:
    candidate = train(synthetic(), ModelSettings(num_trees=20, num_leaves=7), source="synthetic")
    registry = Registry(tmp_path, KEYS)
    old, new = (
        registry.register(replace(candidate, manifest=candidate.manifest.model_copy(update={"version": v})))
        for v in ("v-old", "v-new")
    )
    registry.promote(old)
    registry.set_shadow(new)
    stats = WorkerStats()
    slot = ModelSlot.from_registry(registry, stats)
    assert (slot.champion.version, slot.shadow and slot.shadow.version) == (old, new)

    registry.promote(new)  # the shadow pointer still names the new champion
    swaps = asyncio.run(slot.refresh())
    assert [(s.role, s.old, s.new) for s in swaps] == [("champion", old, new), ("shadow", new, None)]
    assert (slot.champion.version, slot.shadow) == (new, None)
    assert stats.shadow_version == ""

    registry.set_shadow(old)
    swaps = asyncio.run(slot.refresh())
    assert [(s.role, s.old, s.new) for s in swaps] == [("shadow", None, old)]
    assert slot.shadow is not None
    assert slot.shadow.version == old
