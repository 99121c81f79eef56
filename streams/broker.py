"""kafka-python clients for the batch side of Warden (replay, demo, tools, tests).

The stream processors use Faust; everything that produces or reads topics
from a plain program uses these helpers, built from the Kafka settings.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from warden.streams.exceptions import BrokerError
from warden.streams.security import kafka_python_options
from warden.streams.settings import KafkaSettings, WardenSettings
from warden.streams.topics import Topic, Topics


def _bootstrap(settings: KafkaSettings) -> str:
    if settings.bootstrap_servers is None:
        raise BrokerError("no broker configured (WARDEN_KAFKA__BOOTSTRAP_SERVERS)")
    return settings.bootstrap_servers


def ensure_topics(settings: KafkaSettings, topics: tuple[Topic, ...]) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=_bootstrap(settings),
            request_timeout_ms=int(settings.request_timeout_s * 1000),
            **kafka_python_options(settings),
        )
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"broker unreachable at {settings.bootstrap_servers}: {exc}") from exc
    inputs = {topic.name for topic in Topics.from_settings(settings).inputs()}
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        for topic in missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            topic.name,
                            topic.partitions,
                            topic.replication_factor,
                            topic_configs=topic_configs(settings, input_topic=topic.name in inputs),
                        )
                    ]
                )
        return [t.name for t in missing]
    except KafkaError as exc:
        raise BrokerError(f"cannot create topics: {exc}") from exc
    finally:
        admin.close()


def topic_configs(settings: KafkaSettings, *, input_topic: bool = False) -> dict[str, str]:
    """Broker-side configuration of the topics Warden creates (durability and retention).

    Input topics get ``message.timestamp.type=LogAppendTime``: the broker
    stamps each record when it appends it, so a producer cannot set the time
    the aggregates advance on (:mod:`streams.provenance`). The embedded Tansu
    broker accepts the setting and keeps the producer's timestamp anyway, as a
    ``CreateTime`` topic does; ingest's bounds hold on either.
    """
    configs: dict[str, str] = {}
    if input_topic:
        configs["message.timestamp.type"] = "LogAppendTime"
    if settings.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.min_insync_replicas)
    if settings.retention_hours is not None:
        configs["retention.ms"] = str(settings.retention_hours * 3600 * 1000)
    return configs


def producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer that waits for ``settings.acks`` (all in-sync replicas by default) and retries.

    With ``enable_idempotence`` the broker drops a retried batch it already wrote.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": _bootstrap(settings),
        "acks": settings.acks if settings.acks == "all" else int(settings.acks),
        "enable_idempotence": settings.enable_idempotence,
        "compression_type": None if settings.compression_type == "none" else settings.compression_type,
        "linger_ms": 5,
        "retries": 5,
        "max_request_size": 16 * 1024 * 1024,
        "request_timeout_ms": int(settings.request_timeout_s * 1000),
        **kafka_python_options(settings),
    }
    options.update(overrides)
    try:
        return KafkaProducer(**options)
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"broker unreachable at {settings.bootstrap_servers}: {exc}") from exc


@dataclass(frozen=True)
class Message:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class TopicReader:
    """Reads whole topics from the beginning without a consumer group (no join wait)."""

    def __init__(self, settings: KafkaSettings, topics: tuple[Topic, ...]) -> None:
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=_bootstrap(settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level=settings.isolation_level,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=16 * 1024 * 1024,
                **kafka_python_options(settings),
            )
        except (KafkaError, OSError) as exc:
            raise BrokerError(f"broker unreachable at {settings.bootstrap_servers}: {exc}") from exc
        partitions = [TopicPartition(topic.name, p) for topic in topics for p in range(topic.partitions)]
        self._consumer.assign(partitions)
        self._consumer.seek_to_beginning(*partitions)

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Read each ``(topic, partition)`` from the given offset instead of its beginning.

        Called before the first :meth:`poll`; the partitions must be among the reader's topics.
        """
        for (topic, partition), offset in offsets.items():
            self._consumer.seek(TopicPartition(topic, partition), offset)

    def poll(self, timeout_s: float = 0.5) -> list[Message]:
        """Records that arrived since the last poll (possibly none)."""
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=5000)
        return [
            Message(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
            for records in batches.values()
            for r in records
        ]

    def extent(self) -> dict[tuple[str, int], tuple[int, int]]:
        """The first offset and the listed end offset of each partition, now.

        Called before reading to know where "everything so far" ends. Some
        brokers list less than they hold (the embedded Tansu lists the last
        batch's base offset): :meth:`progress` has the end fetches report.
        Raises BrokerError if the broker does not answer.
        """
        partitions = list(self._consumer.assignment())
        try:
            first = self._consumer.beginning_offsets(partitions)
            end = self._consumer.end_offsets(partitions)
        except (KafkaError, OSError) as exc:
            raise BrokerError(f"cannot read the offsets of {len(partitions)} partitions: {exc}") from exc
        return {(tp.topic, tp.partition): (first[tp], end[tp]) for tp in partitions}

    def progress(self) -> dict[tuple[str, int], tuple[int, int | None]]:
        """Per partition: the offset read next, and the high watermark the last fetch reported.

        The high watermark is None until a :meth:`poll` has fetched from the
        partition. Raises BrokerError if the broker does not answer.
        """
        try:
            return {
                (tp.topic, tp.partition): (self._consumer.position(tp), self._consumer.highwater(tp))
                for tp in self._consumer.assignment()
            }
        except (KafkaError, OSError) as exc:
            raise BrokerError(f"cannot read the consumer's positions: {exc}") from exc

    def until(self, done: Callable[[], bool], timeout_s: float) -> Iterator[Message]:
        """Yield records until ``done()`` is true or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            yield from self.poll()

    def close(self) -> None:
        self._consumer.close()


def announce(settings: WardenSettings, action: str, version: str | None) -> None:
    """Publish a registry change on ``model-updates`` (when a broker is configured)."""
    from warden.streams.records import ModelUpdate, encode

    if settings.kafka.bootstrap_servers is None:
        return
    topics = Topics.from_settings(settings.kafka)
    ensure_topics(settings.kafka, (topics.model_updates,))
    sender = producer(settings.kafka)
    try:
        update = ModelUpdate.model_validate(
            {"action": action, "version": version, "at_ms": int(time.time() * 1000)}
        )
        sender.send(topics.model_updates.name, value=encode(update)).get(timeout=30)
    except KafkaError as exc:
        raise BrokerError(f"cannot announce on model-updates: {exc}") from exc
    finally:
        sender.close()
