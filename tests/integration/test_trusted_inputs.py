"""What a sender controls, through a real worker and Redis: the claimed time, and the event id.

The worker runs as in production (``trust_producer_event_time`` off): its
aggregates advance on the broker's timestamps, whatever the mails claim; an
event id sent again with other content is scored as a new event under a
derived id, and the same bytes again are served exactly as the first time.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.forged_time import forged, honest
from tests.integration.outcomes import Outcomes, metrics
from tests.integration.test_store import assert_matches_reference, assert_rows_match
from warden.features.definitions import AGGREGATES
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.ingest.record import ingest_record
from warden.features.store.keys import Keys
from warden.features.store.redis_client import async_client
from warden.features.store.served import ServedRows
from warden.features.testing import InMemoryStore
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.provenance import content_digest, derived_event_id, event_time_header, retention_s
from warden.streams.records import MailEvent, MailFeatures, SourcePosition, encode
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topics


def _production(settings: WardenSettings) -> WardenSettings:
    """One partition (the reference applies in offset order) and no trust in producers' clocks."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"partitions": 1}),
            "ingest": settings.ingest.model_copy(update={"trust_producer_event_time": False}),
        }
    )


def _send(
    settings: WardenSettings,
    records: list[tuple[str, bytes]],
    times: dict[str, float] | None = None,
    broker_ms: dict[str, int] | None = None,
) -> list[int]:
    """Send raw records (key, value) as a mail system would; their broker timestamps.

    ``times`` puts an event-time header on the records of those keys, as a trusted replay would;
    ``broker_ms`` sets their record timestamp, as any producer may on a ``CreateTime`` topic.
    """
    topic = Topics.from_settings(settings.kafka).mail_events
    producer = broker.producer(settings.kafka)
    times = times or {}
    broker_ms = broker_ms or {}
    try:
        futures = [
            producer.send(
                topic.name,
                key=key.encode(),
                value=value,
                headers=event_time_header(times[key]) if key in times else None,
                timestamp_ms=broker_ms.get(key),
            )
            for key, value in records
        ]
        return [int(future.get(timeout=60).timestamp) for future in futures]
    finally:
        producer.close()


def _reference(
    settings: WardenSettings, records: list[bytes], stamps_ms: list[int]
) -> tuple[InMemoryStore, list[MailFeatures], list[list[float]]]:
    """The records ingested and applied offline at their broker timestamps, as the worker should."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    store = InMemoryStore(Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    features = []
    for offset, (raw, stamp) in enumerate(zip(records, stamps_ms, strict=True)):
        position = SourcePosition(topic="mail.events", partition=0, offset=offset)
        outcome = ingest_record(raw, position, stamp, settings, pseudonymiser, stamp / 1000 + 0.5)
        assert isinstance(outcome, MailFeatures)
        features.append(outcome)
    return store, features, store.apply_and_read_now(features)


async def test_forged_claimed_times_change_no_aggregate_in_redis(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    live = _production(settings)
    broker.ensure_topics(live.kafka, Topics.from_settings(live.kafka).all())
    now = time.time()
    clean = honest(now, 120, f"f{uuid.uuid4().hex[:6]}")
    lying, forged_ids = forged(clean, now)
    outcomes = Outcomes(live)
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        # The forged mails also carry the replay header with their forged time: it is not trusted.
        headers = {e.event_id: e.timestamp for e in lying if e.event_id in forged_ids}
        stamps = _send(live, [(e.event_id, encode(e)) for e in lying], headers)
        outcomes.read_until(lambda o: len(o.settled()) >= len(lying), 120)
    outcomes.close()
    assert set(outcomes.verdicts) == {e.event_id for e in lying}

    # Redis holds what the mails without the forgery give, at the broker's times.
    reference, _, rows = _reference(live, [encode(e) for e in clean], stamps)
    assert live.redis.url is not None
    client = async_client(live.redis)
    try:
        await assert_matches_reference(client, live.redis.key_prefix, reference)
        served = await ServedRows(client, live.redis.key_prefix, 3600).recall([e.event_id for e in lying])
    finally:
        await client.aclose()
    assert_rows_match([row.aggregates for row in served if row is not None], rows)
    assert all(row is not None for row in served)

    # The forgery had something to change: believing the claimed times gives other aggregates.
    _, lying_features, _ = _reference(live, [encode(e) for e in lying], stamps)
    believed = InMemoryStore(Keys(live.redis.key_prefix), live.redis.ttl_seconds)
    believed.apply_and_read_now(
        [f.model_copy(update={"timestamp": e.timestamp}) for f, e in zip(lying_features, lying, strict=True)]
    )
    assert believed.state() != reference.state()
    assert len(forged_ids) >= 20


async def test_forged_broker_times_are_held_to_the_retention_and_the_clock(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    """A producer on a ``CreateTime`` topic sets the record timestamp itself: 1970, or next week.

    (The embedded broker keeps producers' timestamps whatever ``message.timestamp.type`` says,
    as a ``CreateTime`` topic does.) The sender's age stays within the topic's retention.
    """
    live = _production(settings)
    broker.ensure_topics(live.kafka, Topics.from_settings(live.kafka).all())
    now = time.time()
    prefix = f"b{uuid.uuid4().hex[:6]}"
    mails = [m.model_copy(update={"sender": f"aged@{prefix}.example.com"}) for m in honest(now, 6, prefix)]
    first, ahead = mails[0].event_id, mails[3].event_id
    outcomes = Outcomes(live)
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        stamps = _send(
            live,
            [(m.event_id, encode(m)) for m in mails],
            broker_ms={first: 1, ahead: int((now + 6.9 * 86400) * 1000)},
        )
        outcomes.read_until(lambda o: len(o.settled()) >= len(mails), 120)
        counted = metrics(live)
    outcomes.close()
    assert stamps[0] == 1  # the broker kept the forged timestamp: the worker must not believe it
    assert set(outcomes.verdicts) == {m.event_id for m in mails}
    assert counted['warden_event_times_clamped_total{direction="behind"}'] == 1
    assert counted['warden_event_times_clamped_total{direction="ahead"}'] == 1
    assert live.redis.url is not None
    client = async_client(live.redis)
    try:
        rows = await ServedRows(client, live.redis.key_prefix, 3600).recall([m.event_id for m in mails])
    finally:
        await client.aclose()
    age = [a.name for a in AGGREGATES].index("sender_age_h")
    ages = [row.aggregates[age] for row in rows if row is not None]
    assert len(ages) == len(mails)
    retention_h = retention_s(live.kafka) / 3600
    # Aged by the forged first mail, but to the retention at most (not ~490,000 hours).
    assert retention_h - 1 <= max(ages) <= retention_h + 1


async def test_an_id_sent_again_with_other_content_is_scored_under_a_derived_id(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    live = _production(settings)
    broker.ensure_topics(live.kafka, Topics.from_settings(live.kafka).all())
    now = time.time()
    mails = honest(now, 12, f"r{uuid.uuid4().hex[:6]}")
    first = mails[4]
    spam = MailEvent(
        event_id=first.event_id,  # the id of a mail already scored, with a spammer's content
        timestamp=first.timestamp,
        sender="winner@prize-claims.example.net",
        recipients=["r1@example.org", "r2@example.org", "r3@example.org"],
        subject="You WON a FREE prize, act now",
        text="Claim your FREE money now at http://prize-claims.example.net/claim",
        urls=["http://prize-claims.example.net/claim"],
    )
    records = [(m.event_id, encode(m)) for m in mails[:8]]
    records += [(spam.event_id, encode(spam)), (first.event_id, encode(first))]  # then the same bytes again
    records += [(m.event_id, encode(m)) for m in mails[8:]]
    derived = derived_event_id(first.event_id, content_digest(encode(spam)))
    outcomes = Outcomes(live)
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        stamps = _send(live, records)
        outcomes.read_until(lambda o: sum(len(v) for v in o.verdicts.values()) >= len(records), 120)
        outcomes.drain()
        counted = metrics(live)
    outcomes.close()

    assert set(outcomes.verdicts) == {m.event_id for m in mails} | {derived}
    (reused,) = outcomes.verdicts[derived]
    assert reused.original_event_id == first.event_id
    one, again = outcomes.verdicts[first.event_id]  # the same bytes twice: the same verdict
    assert (one.action, one.score, one.reasons) == (again.action, again.score, again.reasons)
    assert one.original_event_id is None
    assert counted["warden_event_ids_reused_total"] == 1

    # Both contents were applied once each, as two events; the redelivery changed nothing.
    raw = [value for _, value in records]
    reference, _, rows = _reference(live, raw[:9] + raw[10:], stamps[:9] + stamps[10:])
    assert live.redis.url is not None
    client = async_client(live.redis)
    try:
        await assert_matches_reference(client, live.redis.key_prefix, reference)
        (row,) = await ServedRows(client, live.redis.key_prefix, 3600).recall([derived])
    finally:
        await client.aclose()
    assert row is not None
    assert row.original_event_id == first.event_id
    assert_rows_match([row.aggregates], [rows[8]])
