"""The models a worker serves, swapped while traffic flows.

A :class:`ModelSlot` holds the champion (whose verdicts are acted on) and an
optional shadow (scored on the same rows, logged, never acted on). The
scoring agent reads the slot once per micro-batch, so a swap always lands on
a batch boundary: every event is scored once, by the old version or the new
one, and its verdict names which. :meth:`refresh` follows the registry's
pointers; a new version is loaded and warmed in a thread beside the one
serving, and only then put in the slot. A version that fails to load is
refused and the current one keeps serving.

Pointers are signed statements with a sequence number (:mod:`models.pointers`).
The slot follows one only after its signature verifies, and remembers the
highest sequence it followed for each pointer: a pointer with a lower sequence
(an older signed pointer put back, i.e. a rollback nobody signed), an unsigned
or edited one, one signed by another key, or a pointer file removed after one
was followed is refused, counted in ``warden_model_refusals_total`` and logged
once, and what is served stays. A legitimate ``warden models rollback`` signs a
new pointer with a higher sequence and is followed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from warden.models.exceptions import ModelRejected, NoModel, RegistryError
from warden.models.pointers import PointerName
from warden.models.registry import Registry
from warden.models.runs import read_last_run
from warden.models.scorer import Scorer, stored_version
from warden.serving.worker.metrics import WorkerStats
from warden.streams.records import ActivityKind

#: The event kinds served beside mail, each by its own champion (no shadow for these).
ACTIVITY_KINDS: tuple[ActivityKind, ...] = ("calendar", "contacts")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Swap:
    """One completed swap: what changed and what loading it cost."""

    role: str
    old: str | None
    new: str | None
    load_ms: float


#: Parity rows (held-out rows first) a version is checked on each time a worker loads it.
LOAD_CHECK_ROWS = 256


def load_warm(registry: Registry, version: str) -> Scorer:
    """Load ``version``, check it, and score one batch so the first real batch pays nothing extra.

    Raises :class:`ModelRejected` for an unsigned version, one signed by
    another key, a missing or changed file, another feature schema, a graph
    that scores NaN, or one that strays from its booster on a sample of its
    parity rows.
    """
    stored = stored_version(registry, version)  # the signature first: nothing unsigned is parsed
    scorer = Scorer.from_stored(stored)
    try:
        rows = stored.parity_rows(LOAD_CHECK_ROWS)
    except RegistryError as exc:
        raise ModelRejected(str(exc)) from exc
    scorer.check(rows)
    scorer.score(np.zeros((64, len(scorer.schema.feature_names)), dtype=np.float32))
    _ = scorer.contributions  # the reasons' table, built here rather than on the first flagged batch
    return scorer


class ModelSlot:
    """The champion and the shadow of one worker."""

    def __init__(self, registry: Registry, champion: Scorer, stats: WorkerStats) -> None:
        self.registry = registry
        self.champion = champion
        self.shadow: Scorer | None = None
        #: The champion of each other event kind, once one is promoted in its registry.
        self.kinds: dict[str, Scorer] = {}
        #: The champion before the last swap: put back if the new one fails on live rows.
        self.previous: Scorer | None = None
        self._stats = stats
        self._refused: set[str] = set()
        #: The highest sequence followed of each pointer, by (kind, pointer name).
        self._followed: dict[tuple[str, str], int] = {}
        #: Problems of each pointer already counted and logged (a bad pointer is read again every
        #: refresh); forgotten once that pointer verifies again, so the next attack counts anew.
        self._bad_pointers: dict[tuple[str, str], set[str]] = {}
        #: Why the registry's retrain record was last refused ("" once it reads again), to log it once.
        self._bad_retrain_record = ""
        stats.model_version = champion.version

    @classmethod
    def from_registry(cls, registry: Registry, stats: WorkerStats) -> ModelSlot:
        """A slot serving the registry's current version.

        Raises NoModel, ModelRejected, or RegistryError when ``CURRENT`` is not a
        version id inside the registry (a worker with nothing to serve does not start).
        """
        pointer = registry.pointer("CURRENT")
        if pointer is None or pointer.version is None:
            raise NoModel(f"no model promoted in {registry.root}: run `warden train`")
        current = pointer.version
        slot = cls(registry, load_warm(registry, current), stats)
        slot._followed[(registry.kind, "CURRENT")] = pointer.sequence
        for kind in ACTIVITY_KINDS:
            wanted = slot._pointer(registry.for_kind(kind), "CURRENT", None)
            if wanted is not None:
                try:
                    slot.kinds[kind] = load_warm(registry.for_kind(kind), wanted)
                except ModelRejected as exc:
                    slot._refused.add(wanted)
                    log.warning("%s model %s refused: %s", kind, wanted, exc)
        shadow = slot._pointer(registry, "SHADOW", None)
        if shadow is not None and shadow != current:
            try:
                slot.shadow = load_warm(registry, shadow)
                stats.shadow_version = shadow
            except ModelRejected as exc:
                stats.shadow_failing = True
                log.warning("shadow model %s refused: %s", shadow, exc)
        return slot

    def scorer_for(self, kind: str) -> Scorer | None:
        """The champion serving ``kind`` (None: no model of that kind promoted yet)."""
        return self.champion if kind == "mail" else self.kinds.get(kind)

    async def refresh(self) -> list[Swap]:
        """Follow the registry's pointers; returns the swaps made (usually none)."""
        swaps = []
        for kind in ACTIVITY_KINDS:
            registry = self.registry.for_kind(kind)
            serving = self.kinds.get(kind)
            serving_version = serving.version if serving is not None else None
            wanted_kind = self._pointer(registry, "CURRENT", serving_version)
            if (
                wanted_kind is not None
                and wanted_kind != serving_version
                and wanted_kind not in self._refused
            ):
                loaded_kind = await self._load(wanted_kind, registry)
                if loaded_kind is not None:
                    self.kinds[kind], load_ms = loaded_kind
                    swaps.append(Swap(kind, serving_version, wanted_kind, load_ms))
        wanted = self._pointer(self.registry, "CURRENT", self.champion.version)
        if wanted is not None and wanted != self.champion.version and wanted not in self._refused:
            loaded = await self._load(wanted)
            if loaded is not None:
                scorer, load_ms = loaded
                swaps.append(Swap("champion", self.champion.version, wanted, load_ms))
                self.previous, self.champion = self.champion, scorer
                self._stats.model_version = wanted
                self._stats.swaps += 1
                if self.shadow is not None and self.shadow.version == wanted:
                    # Promoted from shadow: stop shadowing it in the same step, before any batch
                    # could be scored by one version twice.
                    swaps.append(Swap("shadow", wanted, None, 0.0))
                    self.shadow = None
                    self._stats.shadow_version = ""
        shadow = self._pointer(self.registry, "SHADOW", self.shadow.version if self.shadow else None)
        if shadow == self.champion.version:
            shadow = None  # a version is never its own shadow (e.g. just promoted, pointer not moved yet)
        current_shadow = self.shadow.version if self.shadow else None
        if shadow != current_shadow and (shadow is None or shadow not in self._refused):
            if shadow is None:
                self.shadow = None
                self._stats.shadow_version = ""
                swaps.append(Swap("shadow", current_shadow, None, 0.0))
            else:
                loaded = await self._load(shadow)
                if loaded is not None:
                    self.shadow, load_ms = loaded
                    self._stats.shadow_version = shadow
                    swaps.append(Swap("shadow", current_shadow, shadow, load_ms))
        # Health reports a shadow the registry asks for but this worker refused.
        self._stats.shadow_failing = shadow is not None and shadow in self._refused
        self._read_last_retrain()
        for swap in swaps:
            log.warning("%s model %s -> %s (loaded in %.0f ms)", swap.role, swap.old, swap.new, swap.load_ms)
        return swaps

    def _read_last_retrain(self) -> None:
        """Put the last ``warden retrain`` run the registry records in the stats (for ``/metrics``).

        A record refused (:func:`models.runs.read_last_run`) shows as no run, logged once per reason.
        """
        try:
            last = read_last_run(self.registry.root)
        except RegistryError as exc:
            if str(exc) != self._bad_retrain_record:
                log.warning("%s", exc)
            self._bad_retrain_record = str(exc)
            last = None
        else:
            self._bad_retrain_record = ""
        self._stats.retrain_outcome = last.outcome if last is not None else ""
        self._stats.retrain_finished_at = last.finished_at if last is not None else 0.0

    def _pointer(self, registry: Registry, name: PointerName, serving: str | None) -> str | None:
        """The version ``name`` of ``registry`` points at, or ``serving`` when the pointer is refused.

        Refused: not signed by the registry's key for this kind and pointer, naming
        anything but a version id inside the registry, a sequence lower than one
        already followed (a replay), or a file removed after one was followed. What
        is served stays; each refusal is counted and logged once.
        """
        where = (registry.kind, name)
        followed = self._followed.get(where)
        try:
            pointer = registry.pointer(name)
            if pointer is None and followed is not None:
                raise RegistryError(
                    f"{name} of the {registry.kind} registry was removed "
                    f"after sequence {followed} was followed"
                )
            if pointer is not None and followed is not None and pointer.sequence < followed:
                raise RegistryError(
                    f"{name} of the {registry.kind} registry is an older signed pointer put back "
                    f"(sequence {pointer.sequence} < {followed} already followed; it names {pointer.version})"
                )
        except RegistryError as exc:
            seen = self._bad_pointers.setdefault(where, set())
            if str(exc) not in seen:
                seen.add(str(exc))
                self._stats.model_refusals += 1
                log.warning("registry pointer refused, keeping %s: %s", serving, exc)
            return serving
        self._bad_pointers.pop(where, None)
        if pointer is None:
            return None
        self._followed[where] = pointer.sequence
        return pointer.version

    def fall_back(self, failed: Scorer, reason: str) -> bool:
        """Refuse a model that failed on live rows; True when another champion now serves.

        Called by the scoring agent when a model raised :class:`ModelRejected`
        while scoring a batch (a non-finite score). The version is never
        loaded again. A failed champion is replaced by the champion it
        replaced; a failed shadow is dropped. Returns False when the failed
        model is the champion and there is nothing earlier to go back to.
        """
        self._refused.add(failed.version)
        self._stats.model_refusals += 1
        if self.shadow is failed:
            log.warning("shadow model %s dropped: %s", failed.version, reason)
            self.shadow = None
            self._stats.shadow_version = ""
            return True
        if self.champion is not failed:
            return True  # already replaced by a swap
        if self.previous is None:
            log.error("champion %s failed and there is no earlier one: %s", failed.version, reason)
            return False
        log.warning("champion %s failed, back to %s: %s", failed.version, self.previous.version, reason)
        self.champion, self.previous = self.previous, None
        self._stats.model_version = self.champion.version
        return True

    async def _load(self, version: str, registry: Registry | None = None) -> tuple[Scorer, float] | None:
        started = time.perf_counter()
        try:
            scorer = await asyncio.get_running_loop().run_in_executor(
                None, load_warm, registry or self.registry, version
            )
        except ModelRejected as exc:
            self._refused.add(version)
            self._stats.model_refusals += 1
            log.warning("model %s refused, keeping %s: %s", version, self.champion.version, exc)
            return None
        load_ms = (time.perf_counter() - started) * 1000
        self._stats.last_swap_load_ms = load_ms
        return scorer, load_ms
