"""The one topic reader (streams.reader.read_topics) on the real broker: every record to the end,
the malformed ones returned with their position and reason, an empty topic, start offsets, a deadline."""

from __future__ import annotations

from warden.streams import broker
from warden.streams.exceptions import MalformedRecord
from warden.streams.reader import read_topics
from warden.streams.records import SourcePosition
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics


def digits(raw: bytes) -> int:
    if not raw.isdigit():
        raise MalformedRecord(f"not a number ({len(raw):,} bytes)")
    return int(raw)


def _send(settings: WardenSettings, name: str, values: list[bytes]) -> list[SourcePosition]:
    producer = broker.producer(settings.kafka)
    try:
        futures = [producer.send(name, key=b"k%d" % i, value=value) for i, value in enumerate(values)]
        producer.flush()
        metas = [future.get(timeout=30) for future in futures]
    finally:
        producer.close()
    return [SourcePosition(topic=m.topic, partition=m.partition, offset=m.offset) for m in metas]


def test_every_record_is_read_and_the_malformed_come_back_with_where_and_why(
    settings: WardenSettings,
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, (topics.feature_log, topics.verdicts))
    good = [b"%d" % i for i in range(1500)]
    hostile = [b"", b"\x00" * 1_000_000, b"12a", b'{"not": "a number"}']
    positions = _send(settings, topics.feature_log.name, good[:700] + hostile + good[700:])

    read = read_topics(settings.kafka, (topics.feature_log, topics.verdicts), digits)

    assert read.complete
    assert sorted(read.records) == list(range(1500))
    assert sorted((m.position.partition, m.position.offset) for m in read.malformed) == sorted(
        (p.partition, p.offset) for p in positions[700:704]
    )
    assert sorted(m.reason for m in read.malformed) == [
        "not a number (0 bytes)",
        "not a number (1,000,000 bytes)",
        "not a number (19 bytes)",
        "not a number (3 bytes)",
    ]


def test_an_empty_topic_reads_as_nothing_and_complete(settings: WardenSettings) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, (topics.verdicts,))
    read = read_topics(settings.kafka, (topics.verdicts,), digits)
    assert (read.records, read.malformed, read.unfinished) == ([], [], [])


def test_start_offsets_skip_what_comes_before(settings: WardenSettings) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, (topics.verdicts,))
    positions = _send(settings, topics.verdicts.name, [b"%d" % i for i in range(40)])
    # From the offset of record 30 in its partition; the other partition from its beginning.
    at = positions[30]
    start = {(at.topic, at.partition): at.offset}
    expected = [i for i, p in enumerate(positions) if p.partition != at.partition or p.offset >= at.offset]
    read = read_topics(settings.kafka, (topics.verdicts,), digits, start=start)
    assert read.complete
    assert sorted(read.records) == expected


def test_a_deadline_already_passed_ends_the_read_with_the_partitions_unfinished(
    settings: WardenSettings,
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, (topics.verdicts,))
    _send(settings, topics.verdicts.name, [b"1", b"2", b"3"])
    read = read_topics(settings.kafka, (topics.verdicts,), digits, deadline_s=0.0)
    assert not read.complete
    assert read.unfinished == [(topics.verdicts.name, p) for p in range(topics.verdicts.partitions)]
    assert read.records == []
