"""Replays mail events onto ``mail.events`` in time order, at a rate or flat out."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.exceptions import BrokerError
from streams.records import MailEvent, encode
from streams.topics import Topic

Progress = Callable[[int, int], None]


def replay(
    events: Sequence[MailEvent],
    producer: KafkaProducer,
    topic: Topic,
    *,
    rate: float | None = None,
    progress: Progress | None = None,
) -> int:
    """Send ``events`` sorted by timestamp; returns how many were sent.

    ``rate`` is events per second (None: as fast as the broker takes them).
    Blocks until every record is acknowledged; raises BrokerError otherwise.
    """
    ordered = sorted(events, key=lambda e: (e.timestamp, e.event_id))
    started = time.monotonic()
    futures = []
    for index, event in enumerate(ordered, start=1):
        if rate is not None:
            due = started + index / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        futures.append(producer.send(topic.name, key=event.event_id.encode("utf-8"), value=encode(event)))
        if progress is not None and (index % 500 == 0 or index == len(ordered)):
            progress(index, len(ordered))
    send_raw(producer, [])
    try:
        for future in futures:
            future.get(timeout=60)
    except KafkaError as exc:
        raise BrokerError(f"the broker did not take every event: {exc}") from exc
    return len(ordered)


def send_raw(producer: KafkaProducer, records: Sequence[tuple[Topic, bytes, bytes | None]]) -> None:
    """Send raw records (key, value) as they are, then flush. Used for hostile input."""
    try:
        for topic, key, value in records:
            producer.send(topic.name, key=key, value=value)
        producer.flush(timeout=60)
    except KafkaError as exc:
        raise BrokerError(f"the broker did not take every record: {exc}") from exc
