"""Dead letters read back: the whole record of each, and a replay onto the topic it came from.

A :class:`~streams.records.DeadLetter` holds its record whole up to
``DEAD_LETTER_WHOLE_BYTES``, else an excerpt. Either way its source position
finds the record on the topic it was read from (for as long as that topic's
retention keeps it), and the letter's length and SHA-256 check what is found
there. Records dead-lettered because no model was promoted, or none could
score them, are replayed this way once one can (``warden dead-letters replay
--reason "no mail model"``): each goes back to its topic with its key, and is
read again like any new record. A replay is at least once: a record replayed
twice gets two identical verdicts, and the store applies it once.

Whoever can write to ``dead-letters`` writes the letters, so a letter's topic
and copy are claims: a replay sends only to the input topics
(:meth:`~streams.topics.Topics.inputs`), where every record is validated by
ingest as any sender's would be, and to a features topic (split stages
dead-letter features records) only a record read back at its position there,
byte for byte, never a letter's own copy. Every other letter is refused with
its reason (:func:`replayable`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from warden.streams import broker, reader
from warden.streams.exceptions import BrokerError
from warden.streams.records import DeadLetter, SourcePosition, decode
from warden.streams.security import kafka_python_options
from warden.streams.settings import KafkaSettings
from warden.streams.topics import Topic, Topics

log = logging.getLogger(__name__)

#: Past the next wanted offset by more than this, the reader seeks instead of reading on.
_SEEK_AHEAD = 1000
#: A poll that brings nothing for this long means the reader is at the end of the partition.
_QUIET_MS = 2000


@dataclass(frozen=True)
class Original:
    """The whole record a dead letter stands for, ready to be sent again."""

    letter: DeadLetter
    key: bytes | None
    value: bytes
    #: Where the bytes were found: the record at its position, or the letter's own copy.
    found_in: Literal["topic", "letter"]


@dataclass(frozen=True)
class Missing:
    """A dead letter whose whole record cannot be had, and why."""

    letter: DeadLetter
    why: str


def read_letters(settings: KafkaSettings, topic: Topic, reason: str) -> list[DeadLetter]:
    """Every dead letter on ``topic`` whose reason contains ``reason``, up to the topic's end.

    A record that is not a dead letter Warden wrote is left out and logged
    with its reason (anyone who can write to the topic can put one there).
    """
    read = reader.read_topics(settings, (topic,), lambda raw: decode(DeadLetter, raw))
    if read.malformed:
        log.warning(
            "%d records of %s are not dead letters: %s",
            len(read.malformed),
            topic.name,
            read.describe_malformed(),
        )
    return [letter for letter in read.records if reason in letter.reason]


def originals(
    settings: KafkaSettings, letters: Sequence[DeadLetter], timeout_s: float = 30.0
) -> tuple[list[Original], list[Missing]]:
    """The whole record of each letter, or why it cannot be had.

    Each record is read at its source position, where its key is too, and
    kept only if its length and SHA-256 are the letter's; if it is not there
    any more, a letter holding the whole record gives it (without its key).
    """
    found = _read_positions(settings, [letter.source for letter in letters], timeout_s)
    out: list[Original] = []
    missing: list[Missing] = []
    for letter in letters:
        record = found.get(_at(letter.source))
        if record is not None and _matches(letter, record[1]):
            out.append(Original(letter, record[0], record[1], "topic"))
        elif letter.payload_complete:
            out.append(Original(letter, None, letter.payload(), "letter"))
        elif record is not None:
            missing.append(Missing(letter, "the record at its position is not the one dead-lettered"))
        else:
            missing.append(Missing(letter, "the record is no longer on its topic (retention)"))
    return out, missing


def replayable(settings: KafkaSettings, records: Sequence[Original]) -> tuple[list[Original], list[Missing]]:
    """The records a replay may send, and the refused ones with why (see the module docstring)."""
    topics = Topics.from_settings(settings)
    inputs = {topic.name for topic in topics.inputs()}
    derived = {topics.mail_features.name, topics.activity_features.name}
    allowed: list[Original] = []
    refused: list[Missing] = []
    for record in records:
        topic = record.letter.source.topic
        if topic in inputs or (topic in derived and record.found_in == "topic"):
            allowed.append(record)
        elif topic in derived:
            refused.append(Missing(record.letter, f"{topic} is written by ingest only; its record is gone"))
        else:
            refused.append(Missing(record.letter, f"{topic[:80]!r} is not an input topic: not replayed"))
    return allowed, refused


def replay(settings: KafkaSettings, records: Sequence[Original]) -> tuple[int, list[Missing]]:
    """Send each record :func:`replayable` allows again to the topic it was read from; blocks until
    the broker has them all.

    Returns how many were sent and the refused records with why; raises
    BrokerError if the broker refused any.
    """
    records, refused = replayable(settings, records)
    if not records:
        return 0, refused
    producer = broker.producer(settings)
    try:
        futures = [
            producer.send(record.letter.source.topic, key=record.key, value=record.value)
            for record in records
        ]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)
    except KafkaError as exc:
        raise BrokerError(f"the broker did not take every replayed record: {exc}") from exc
    finally:
        producer.close()
    return len(records), refused


def _at(position: SourcePosition) -> tuple[str, int, int]:
    return position.topic, position.partition, position.offset


def _matches(letter: DeadLetter, value: bytes) -> bool:
    return len(value) == letter.payload_bytes and hashlib.sha256(value).hexdigest() == letter.payload_sha256


def _read_positions(
    settings: KafkaSettings, positions: Sequence[SourcePosition], timeout_s: float
) -> dict[tuple[str, int, int], tuple[bytes | None, bytes]]:
    """The key and value of the record at each position still on its topic."""
    wanted: dict[TopicPartition, set[int]] = defaultdict(set)
    for position in positions:
        wanted[TopicPartition(position.topic, position.partition)].add(position.offset)
    if not wanted:
        return {}
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level=settings.isolation_level,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            **kafka_python_options(settings),
        )
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"broker unreachable at {settings.bootstrap_servers}: {exc}") from exc
    found: dict[tuple[str, int, int], tuple[bytes | None, bytes]] = {}
    try:
        for tp, offsets in wanted.items():
            found.update(_read_partition(consumer, tp, sorted(offsets), timeout_s))
    except KafkaError as exc:
        raise BrokerError(f"cannot read dead-lettered records back: {exc}") from exc
    finally:
        consumer.close()
    return found


def _read_partition(
    consumer: KafkaConsumer, tp: TopicPartition, offsets: list[int], timeout_s: float
) -> dict[tuple[str, int, int], tuple[bytes | None, bytes]]:
    """Records at ``offsets`` (sorted) of one partition, those still there.

    Reads from the first wanted offset on (seeking over long gaps) until each
    is found or passed, or a poll finds nothing more. An offset the topic no
    longer keeps sends the reader to the end (``auto_offset_reset``), past it.
    """
    found: dict[tuple[str, int, int], tuple[bytes | None, bytes]] = {}
    todo = set(offsets)
    consumer.assign([tp])
    consumer.seek(tp, offsets[0])
    deadline = time.monotonic() + timeout_s
    while todo and time.monotonic() < deadline:
        records = consumer.poll(timeout_ms=_QUIET_MS).get(tp, [])
        if not records:
            break  # the end of the partition
        for record in records:
            if record.offset in todo:
                todo.discard(record.offset)
                found[(tp.topic, tp.partition, record.offset)] = (record.key, record.value or b"")
        position = consumer.position(tp)
        todo = {offset for offset in todo if offset >= position}  # passed, not found: not there
        if todo and min(todo) - position > _SEEK_AHEAD:
            consumer.seek(tp, min(todo))
    return found
