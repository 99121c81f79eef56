"""Where a micro-batch is ingested: in the event loop by turns, in a pool, or in an isolated child.

Ingest (parse, pseudonymise, content features) costs far more CPU per mail
than anything else a worker does, and it needs nothing but the raw record
and the pseudonymisation key. :func:`ingest_in_turns` routes each record of
a micro-batch:

* a record larger than ``IngestSettings.isolate_above_bytes`` goes to an
  :class:`IsolatedIngest`: one child process, one record at a time, under
  ``IngestSettings.isolation_deadline_s``. A record that overruns is stopped
  (the child is killed and replaced) and becomes a dead letter naming the
  deadline; the records around it are ingested normally;
* the others go to the :class:`IngestPool` when the worker has one
  (``WorkerSettings.ingest_processes`` > 0), so the event loop keeps
  consuming, scoring and producing meanwhile;
* otherwise they are ingested in the event loop, which is given back
  (``await asyncio.sleep(0)``) whenever ``IngestSettings.yield_after_s`` of
  ingest has passed, so a micro-batch never starves ``/health``, the
  consumer's heartbeats or the other agents. Every stage is linear in the
  record (``warden bench --only hostile``), so a record below the isolation
  threshold holds the loop for milliseconds at most.

Privacy: raw records cross a local pipe to a child of the same worker and
come back pseudonymised; nothing raw is written anywhere, the children log
nothing but error type names, and they die with their parent. Settings
(with the key) reach a child through the pipe, never its environment.

If a pool child dies (killed, out of memory) the batch is ingested in the
event loop instead (by turns) and the pool is rebuilt, so no record is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TypeVar

from warden.features.ingest import validation
from warden.features.ingest.pseudonym import KeyRing, Pseudonymiser
from warden.streams.records import (
    ActivityFeatures,
    DeadLetter,
    EventKind,
    MailEvent,
    MailFeatures,
    SourcePosition,
    decode,
    encode,
)
from warden.streams.settings import WardenSettings

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
    from warden.features.ingest.record import ingest_activity_record, ingest_record

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
    from warden.streams.children import die_with_parent

    global _CHILD
    die_with_parent()
    validation.warm()
    # The key ring's served pseudonymiser: rotation and linked pseudonyms work in children too.
    _CHILD = (settings, KeyRing.from_settings(settings.privacy).current())
    # One mail ingested now, so the imports and tables that ingest loads on first use load here, not
    # within the first real record's deadline (several seconds in a fresh process).
    now = time.time()
    warm_up = MailEvent(
        event_id="warm-up",
        timestamp=now,
        sender="warm@example.com",
        recipients=["up@example.org"],
        subject="warm up",
        text="warm up http://www.example.com/",
        headers=[("Received", "from a (b [192.0.2.1]) by c; Mon, 1 Jan 2001 00:00:00 +0000")],
    )
    ingest_batch([RawRecord(encode(warm_up), "warm-up", 0, 0, 0)], *_CHILD, now)


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
            return await _by_turns(
                records,
                lambda record: ingest_batch([record], self._settings, self._pseudonymiser, now, kind)[0],
                self._settings.ingest.yield_after_s,
            )
        return [outcome for part in results for outcome in part]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


_Result = TypeVar("_Result")


async def _by_turns(
    records: Sequence[RawRecord], ingest_one: Callable[[RawRecord], _Result], yield_after_s: float
) -> list[_Result]:
    """``ingest_one`` of each record in the event loop, giving the loop back every ``yield_after_s``."""
    results = []
    turn = time.perf_counter()
    for record in records:
        results.append(ingest_one(record))
        if time.perf_counter() - turn >= yield_after_s:
            await asyncio.sleep(0)
            turn = time.perf_counter()
    return results


async def ingest_in_turns(
    records: Sequence[RawRecord],
    in_loop: Callable[[RawRecord], _Result],
    from_child: Callable[[Outcome], _Result],
    isolated: IsolatedIngest,
    pool: IngestPool | None,
    now: float,
    kind: EventKind,
) -> list[_Result]:
    """Ingest a micro-batch, each record where it belongs (see the module); results in record order.

    ``in_loop`` ingests one record in the event loop; ``from_child`` turns a
    child's encoded outcome into the caller's result. Called by the ingest
    agent for every micro-batch; never raises for a record's sake.
    """
    large = {i for i, record in enumerate(records) if isolated.wants(record)}
    small_records = [record for i, record in enumerate(records) if i not in large]
    if pool is not None and small_records:
        small = [from_child(outcome) for outcome in await pool.ingest(small_records, now, kind)]
    else:
        small = await _by_turns(small_records, in_loop, isolated.settings.ingest.yield_after_s)
    if not large:
        return small
    results: list[_Result] = []
    from_small = iter(small)
    for i, record in enumerate(records):
        if i in large:
            outcome = await isolated.ingest(record, now, kind)
            results.append(in_loop(record) if outcome is None else from_child(outcome))
        else:
            results.append(next(from_small))
    return results


def decoded(outcome: Outcome, kind: EventKind) -> MailFeatures | ActivityFeatures | DeadLetter:
    """The record an encoded outcome holds (what the one-hop agent scores, or dead-letters)."""
    if outcome.dead:
        return decode(DeadLetter, outcome.value)
    if kind == "mail":
        return decode(MailFeatures, outcome.value)
    return decode(ActivityFeatures, outcome.value)


#: Seconds a new isolated child may take to start (a spawned child imports Warden: seconds).
_CHILD_START_S = 120.0
#: After a child failed to start, large records are ingested in the loop for this long before a retry.
_START_RETRY_S = 30.0


@dataclass
class _Child:
    process: BaseProcess
    connection: Connection


def _isolated_main(connection: Connection, settings: WardenSettings) -> None:
    """The isolated child: ingest one record per message until the pipe closes (or it is killed)."""
    _start_child(settings)
    connection.send(b"ready")
    while True:
        try:
            record, now, kind = connection.recv()
        except EOFError:
            return
        connection.send(_child_batch([record], now, kind)[0])


class IsolatedIngest:
    """One child process that ingests large records one at a time, each under a deadline.

    One per worker, built by :func:`serving.worker.app.create_app` and shared by
    every ingest agent and ``POST /score`` (records wait for it in turn); the
    app closes it when it stops, after its agents. The child is started on the
    first large record and replaced whenever a record overruns the deadline
    (it is killed) or kills it. While no child can be started, large records
    are ingested in the event loop, as small ones are (every stage is linear;
    isolation bounds what the benchmarks cannot foresee).
    """

    def __init__(self, settings: WardenSettings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._child: _Child | None = None
        self._lock: asyncio.Lock | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isolated-ingest")
        self._unavailable_until = 0.0
        #: Records ingested in a child, records stopped at the deadline, children started.
        self.isolated = 0
        self.overruns = 0
        self.starts = 0

    def wants(self, record: RawRecord) -> bool:
        """True for a record this ingests: above the threshold (and within the size limit, since a
        larger record is refused on its length alone, at no cost)."""
        size = len(record.value or b"")
        limits = self.settings.ingest
        return limits.isolate_above_bytes < size <= limits.max_payload_bytes

    async def ingest(self, record: RawRecord, now: float, kind: EventKind) -> Outcome | None:
        """The record ingested in the child, or its dead letter if it overran the deadline or killed
        the child; None when no child can run now (the caller ingests it in the loop)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            child = await self._ready_child()
            if child is None:
                return None
            loop = asyncio.get_running_loop()
            deadline = self.settings.ingest.isolation_deadline_s
            self.isolated += 1
            try:
                child.connection.send((record, now, kind))
                outcome: Outcome = await asyncio.wait_for(
                    loop.run_in_executor(self._reader, child.connection.recv), deadline
                )
            except TimeoutError:
                self.overruns += 1
                await self._stop()
                reason = (
                    f"ingest took longer than the deadline of {deadline:g} s (record of "
                    f"{len(record.value or b'')} bytes); its isolated process was stopped"
                )
            except (EOFError, OSError):
                code = child.process.exitcode
                await self._stop()
                reason = (
                    f"internal error while ingesting: the isolated ingest process died (exit code {code})"
                )
            else:
                return outcome
        position = SourcePosition(topic=record.topic, partition=record.partition, offset=record.offset)
        letter = DeadLetter.of(position, reason, record.value or b"", int(now * 1000))
        return Outcome(True, record.topic.encode(), encode(letter), reason)

    async def _ready_child(self) -> _Child | None:
        if self._child is not None and self._child.process.is_alive():
            return self._child
        if self._child is not None:
            await self._stop()
        if time.monotonic() < self._unavailable_until:
            return None
        ours, theirs = self._context.Pipe()
        # Started from the event loop's thread: the child's parent-death signal follows this thread.
        process = self._context.Process(target=_isolated_main, args=(theirs, self.settings), daemon=True)
        process.start()
        theirs.close()
        self.starts += 1
        self._child = _Child(process, ours)
        loop = asyncio.get_running_loop()
        try:
            ready = await asyncio.wait_for(loop.run_in_executor(self._reader, ours.recv), _CHILD_START_S)
        except (TimeoutError, EOFError, OSError) as exc:
            ready = type(exc).__name__
        if ready != b"ready":
            log.warning("isolated ingest process did not start (%s); large records stay in the loop", ready)
            await self._stop()
            self._unavailable_until = time.monotonic() + _START_RETRY_S
            return None
        return self._child

    async def _stop(self) -> None:
        """Kill the child (if any) and reap it without blocking the loop."""
        child, self._child = self._child, None
        if child is None:
            return
        child.process.kill()
        # Reaped before the pipe is closed: a read still waiting on it has seen its end by then.
        await asyncio.get_running_loop().run_in_executor(None, child.process.join, 5.0)
        child.connection.close()

    def close(self) -> None:
        """Stop the child (a later record starts another); called once, when the worker's app has stopped
        its agents (:class:`serving.worker.app.WorkerApp`). An agent never calls it: the child is shared."""
        child, self._child = self._child, None
        if child is not None:
            child.process.kill()
            child.process.join(5.0)
            child.connection.close()
