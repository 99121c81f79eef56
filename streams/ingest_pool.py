"""Ingest in child processes: the CPU-heavy part of a worker, beside its event loop.

Ingest (parse, pseudonymise, content features) costs far more CPU per mail
than anything else a worker does, and it needs nothing but the raw record
and the pseudonymisation key. With ``WorkerSettings.ingest_processes`` > 0
the ingest agent hands each micro-batch of raw records to a pool of that
many child processes and awaits the encoded results, so the event loop
keeps consuming, scoring and producing meanwhile.

Privacy: raw records cross a local pipe to a child of the same worker and
come back pseudonymised; nothing raw is written anywhere, the children log
nothing but error type names, and they die with their parent.

If a child dies (killed, out of memory) the batch is ingested in the event
loop instead and the pool is rebuilt, so no record is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from features.pseudonym import KeyRing, Pseudonymiser
from infra.settings import WardenSettings
from streams.records import ActivityFeatures, DeadLetter, EventKind, MailFeatures, SourcePosition, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawRecord:
    """One input record as the ingest agent received it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    #: The broker's timestamp of the record.
    produced_at_ms: int
    #: A trusted producer's event time (streams.provenance; used only when the settings trust it).
    producer_ms: int | None = None


@dataclass(frozen=True)
class Outcome:
    """One ingested record, encoded: features keyed by sender, or a dead letter keyed by topic."""

    dead: bool
    key: bytes
    value: bytes
    #: Why a dead letter is one (empty for features).
    reason: str = ""


def ingest_records(
    records: Sequence[RawRecord],
    settings: WardenSettings,
    pseudonymiser: Pseudonymiser,
    now: float,
    kind: EventKind = "mail",
) -> list[MailFeatures | ActivityFeatures | DeadLetter]:
    """Each ``kind`` record as features, or as the dead letter saying why not (never raises)."""
    from streams.agents.ingest import ingest_activity_record, ingest_record

    out: list[MailFeatures | ActivityFeatures | DeadLetter] = []
    for record in records:
        position = SourcePosition(topic=record.topic, partition=record.partition, offset=record.offset)
        if kind == "mail":
            out.append(
                ingest_record(
                    record.value,
                    position,
                    record.produced_at_ms,
                    settings,
                    pseudonymiser,
                    now,
                    record.producer_ms,
                )
            )
        else:
            out.append(
                ingest_activity_record(
                    record.value,
                    kind,
                    position,
                    record.produced_at_ms,
                    settings,
                    pseudonymiser,
                    now,
                    record.producer_ms,
                )
            )
    return out


def ingest_batch(
    records: Sequence[RawRecord],
    settings: WardenSettings,
    pseudonymiser: Pseudonymiser,
    now: float,
    kind: EventKind = "mail",
) -> list[Outcome]:
    """Ingest and encode a batch of ``kind`` records (in a child process, or in the event loop)."""
    out = []
    for result in ingest_records(records, settings, pseudonymiser, now, kind):
        if isinstance(result, DeadLetter):
            out.append(Outcome(True, result.source.topic.encode(), encode(result), result.reason))
        else:
            out.append(Outcome(False, result.sender.encode(), encode(result)))
    return out


# One per child process, set by _start_child.
_CHILD: tuple[WardenSettings, Pseudonymiser] | None = None


def _start_child(settings: WardenSettings) -> None:
    from infra.devstack import die_with_parent

    global _CHILD
    die_with_parent()
    # The key ring's served pseudonymiser: rotation and linked pseudonyms work in children too.
    _CHILD = (settings, KeyRing.from_settings(settings.privacy).current())


def _child_batch(records: Sequence[RawRecord], now: float, kind: EventKind = "mail") -> list[Outcome]:
    if _CHILD is None:
        raise RuntimeError("ingest child process was not initialised")
    settings, pseudonymiser = _CHILD
    return ingest_batch(records, settings, pseudonymiser, now, kind)


class IngestPool:
    """A pool of ingest child processes, built by the worker's entry point."""

    def __init__(self, settings: WardenSettings, processes: int, pseudonymiser: Pseudonymiser) -> None:
        if processes < 1:
            raise ValueError("an ingest pool needs at least one process")
        self._settings = settings
        self._processes = processes
        self._pseudonymiser = pseudonymiser
        self._executor = self._new_executor()
        self.rebuilds = 0

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker runs threads (Faust's consumer thread) that fork would copy mid-state.
        return ProcessPoolExecutor(
            self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=(self._settings,),
        )

    def warm(self) -> None:
        """Start every child now (a spawned child imports Warden: seconds), not on the first batch."""
        futures = [self._executor.submit(_child_batch, [], 0.0) for _ in range(self._processes)]
        for future in futures:
            future.result()

    async def ingest(
        self, records: Sequence[RawRecord], now: float, kind: EventKind = "mail"
    ) -> list[Outcome]:
        """The batch ingested by a child; in the event loop if the pool has broken (then rebuilt)."""
        # Large batches are split so every child works on part of them.
        size = max(1, -(-len(records) // self._processes))
        parts = [records[i : i + size] for i in range(0, len(records), size)]
        loop = asyncio.get_running_loop()
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(self._executor, _child_batch, part, now, kind) for part in parts)
            )
        except BrokenProcessPool as exc:
            log.warning("ingest pool broke (%s); ingesting this batch in the worker and restarting it", exc)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            self.rebuilds += 1
            return ingest_batch(records, self._settings, self._pseudonymiser, now, kind)
        return [outcome for part in results for outcome in part]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
