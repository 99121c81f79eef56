"""One reader for "everything on these topics so far", decoded, with the malformed records kept apart.

Tools that learn from or report on a topic (retrain's training examples,
``warden dead-letters``, ``warden privacy report``, ``warden models
compare``) read it with :func:`read_topics`: from the beginning (or given
offsets) up to where each partition ended when the read started, each record
through a decoder. A record the decoder refuses is returned in
:attr:`Read.malformed` with its position and reason, never dropped in
silence; the caller counts or logs them (:meth:`Read.describe_malformed`).

Live tails that wait for records a worker has yet to write (the demo, the
benches, the integration tests) use :meth:`TopicReader.until` instead.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from warden.streams.broker import Message, TopicReader
from warden.streams.exceptions import MalformedRecord
from warden.streams.records import SourcePosition
from warden.streams.settings import KafkaSettings
from warden.streams.topics import Topic

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Turns a record's value into what the caller reads; raises MalformedRecord for anything else.
Decoder = Callable[[bytes], T]

#: A partition of a topic, as ``(topic name, partition)``.
Partition = tuple[str, int]


class Source(Protocol):
    """What :func:`drain` reads from: a :class:`TopicReader` (unit tests pass a double)."""

    def extent(self) -> dict[Partition, tuple[int, int]]: ...

    def progress(self) -> dict[Partition, tuple[int, int | None]]: ...

    def poll(self, timeout_s: float = ...) -> list[Message]: ...


@dataclass(frozen=True)
class Malformed:
    """A record the decoder refused: where it is and why."""

    position: SourcePosition
    reason: str


@dataclass(frozen=True)
class Read(Generic[T]):
    """What :func:`read_topics` found: decoded records in partition order, and the refused ones."""

    records: list[T]
    malformed: list[Malformed]
    #: Partitions not read to their end: nothing arrived for ``idle_s`` or the deadline passed.
    unfinished: list[Partition]

    @property
    def complete(self) -> bool:
        return not self.unfinished

    def reasons(self) -> Counter[str]:
        """How many records were refused, per reason."""
        return Counter(item.reason for item in self.malformed)

    def describe_malformed(self, top: int = 5) -> str:
        """One line for a log or a CLI: ``"3 x reason; 1 x other"``, the ``top`` most common reasons.

        Bounded: whoever writes to a topic chooses how many different reasons its records earn.
        """
        reasons = self.reasons()
        shown = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(top))
        rest = len(reasons) - top
        return f"{shown}; and {rest:,} other reasons" if rest > 0 else shown


def read_topics(
    settings: KafkaSettings,
    topics: Sequence[Topic],
    decoder: Decoder[T],
    *,
    start: Mapping[Partition, int] | None = None,
    idle_s: float = 10.0,
    deadline_s: float | None = None,
) -> Read[T]:
    """Every record of ``topics`` from the beginning (or ``start``) to each partition's end, decoded.

    A partition's end is fixed the first time the reader reaches the offset
    the broker listed when the read started: the larger of that offset and
    the high watermark of that fetch (some brokers, the embedded Tansu
    among them, list less than they hold). Records appended while it reads
    may be returned too, never fewer. A partition that stops advancing for
    ``idle_s``, or any still open at ``deadline_s``, ends the read with what
    was found and is listed in :attr:`Read.unfinished` (and logged). Raises
    BrokerError if the broker cannot be reached.
    """
    reader = TopicReader(settings, tuple(topics))
    try:
        if start:
            reader.seek(start)
        return drain(reader, decoder, idle_s=idle_s, deadline_s=deadline_s)
    finally:
        reader.close()


def drain(
    reader: Source, decoder: Decoder[T], *, idle_s: float = 10.0, deadline_s: float | None = None
) -> Read[T]:
    """:func:`read_topics` on an open reader, positioned where the read starts (the reader stays open)."""
    listed = {partition: end for partition, (_, end) in reader.extent().items()}
    ends: dict[Partition, int] = {}
    records: list[T] = []
    malformed: list[Malformed] = []
    started = last_progress = time.monotonic()
    while behind := partitions_behind(reader.progress(), listed, ends):
        now = time.monotonic()
        if now - last_progress > idle_s or (deadline_s is not None and now - started > deadline_s):
            unfinished = sorted(behind)
            log.warning(
                "stopped reading %s before the end (%s): %d records read",
                ", ".join(f"{topic}[{partition}]" for topic, partition in unfinished),
                f"nothing arrived for {idle_s:g} s" if now - last_progress > idle_s else "deadline passed",
                len(records) + len(malformed),
            )
            return Read(records, malformed, unfinished)
        batch = reader.poll(1.0)
        if batch:
            last_progress = time.monotonic()
        for message in batch:
            _take(message, decoder, records, malformed)
    return Read(records, malformed, [])


def partitions_behind(
    progress: Mapping[Partition, tuple[int, int | None]],
    listed: Mapping[Partition, int],
    ends: dict[Partition, int],
) -> set[Partition]:
    """Partitions not yet read to their end; fixes each partition's end in ``ends`` once reached.

    Called after each poll (by :func:`drain` and the privacy audit, which samples per topic) with
    the reader's :meth:`~TopicReader.progress` and the end offsets it listed before reading.
    """
    behind: set[Partition] = set()
    for partition, (position, highwater) in progress.items():
        if partition not in ends and position >= listed[partition] and highwater is not None:
            ends[partition] = max(listed[partition], highwater)
        if partition not in ends or position < ends[partition]:
            behind.add(partition)
    return behind


def _take(message: Message, decoder: Decoder[T], records: list[T], malformed: list[Malformed]) -> None:
    try:
        records.append(decoder(message.value or b""))
    except MalformedRecord as exc:
        position = SourcePosition(topic=message.topic, partition=message.partition, offset=message.offset)
        malformed.append(Malformed(position, exc.reason))
