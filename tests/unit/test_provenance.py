"""The trusted clock and the content digest (streams.provenance), on the reference store."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import SecretStr

from tests.forged_time import STEP_S, forged, honest
from warden.features.definitions import AGGREGATES
from warden.features.ingest.extraction import to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.ingest.record import ingest_record
from warden.features.testing import InMemoryStore
from warden.streams.provenance import (
    DIGEST_CHARS,
    KAFKA_DEFAULT_RETENTION_S,
    clamp_direction,
    content_digest,
    derived_event_id,
    event_time_header,
    producer_time_ms,
    reserved_id,
    retention_s,
    trusted_event_time,
)
from warden.streams.records import MailFeatures, SourcePosition, encode
from warden.streams.settings import IngestSettings, WardenSettings
from warden.streams.topics import EVENT_TIME_HEADER

PRODUCTION = WardenSettings()
REPLAY = WardenSettings(ingest=IngestSettings(trust_producer_event_time=True))
NOW = 1_800_000_000.0
_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def test_aggregates_take_the_broker_clock_bounded_by_the_receive_clock() -> None:
    broker_ms = int((NOW - 2.5) * 1000)
    assert trusted_event_time(broker_ms, None, NOW, PRODUCTION) == NOW - 2.5
    # A broker (or CreateTime producer) clock running ahead is held to the worker's clock.
    ahead = int((NOW + 3600) * 1000)
    assert trusted_event_time(ahead, None, NOW, PRODUCTION) == NOW + PRODUCTION.ingest.max_event_time_ahead_s
    # No broker timestamp (-1): the receive clock.
    assert trusted_event_time(-1, None, NOW, PRODUCTION) == NOW


@pytest.mark.parametrize(
    ("retention_hours", "floor_s"), [(None, KAFKA_DEFAULT_RETENTION_S), (720, 720 * 3600.0)]
)
def test_a_broker_time_older_than_the_retention_is_raised_to_it(
    retention_hours: int | None, floor_s: float
) -> None:
    settings = WardenSettings(kafka={"retention_hours": retention_hours})
    assert retention_s(settings.kafka) == floor_s
    # A CreateTime producer's forgery: timestamp=1 (1970), or just past what the topic keeps.
    for forged_ms in (1, int((NOW - floor_s - 1) * 1000)):
        assert trusted_event_time(forged_ms, None, NOW, settings) == NOW - floor_s
        assert clamp_direction(forged_ms, NOW, settings) == "behind"
    # Within the retention: the broker's time as it is.
    kept = int((NOW - floor_s + 1) * 1000)
    assert trusted_event_time(kept, None, NOW, settings) == kept / 1000
    assert clamp_direction(kept, NOW, settings) is None
    ahead = int((NOW + 3600) * 1000)
    assert clamp_direction(ahead, NOW, settings) == "ahead"
    assert clamp_direction(-1, NOW, settings) is None
    # A trusted replay's recorded time may still be older than the retention (back in time only).
    replay = settings.model_copy(update={"ingest": REPLAY.ingest})
    assert trusted_event_time(1, 1_030_000_000_000, NOW, replay) == 1_030_000_000.0


def test_a_sender_forged_into_1970_by_the_broker_time_is_not_aged() -> None:
    """The past attack on the broker clock itself: every aggregate as if the record came at the bound."""
    settings = WardenSettings(privacy={"hmac_key": SecretStr("t" * 32)})
    mails = [encode(e) for e in honest(NOW, 3, "old")]
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    position = SourcePosition(topic="mail.events", partition=0, offset=0)
    floor = NOW - retention_s(settings.kafka)
    forged_first = ingest_record(mails[0], position, 1, settings, pseudonymiser, NOW)
    honest_first = ingest_record(mails[0], position, int(floor * 1000), settings, pseudonymiser, NOW)
    assert isinstance(forged_first, MailFeatures)
    assert isinstance(honest_first, MailFeatures)
    assert forged_first.timestamp == honest_first.timestamp == floor
    # The same features but for the broker timestamp it came with (latency is measured from it).
    assert forged_first == honest_first.model_copy(update={"produced_at_ms": 1})
    later = [
        ingest_record(raw, position, int((NOW + i) * 1000), settings, pseudonymiser, NOW + i)
        for i, raw in enumerate(mails[1:], 1)
    ]
    assert all(isinstance(f, MailFeatures) for f in later)
    rows = InMemoryStore().apply_and_read_now([forged_first, *later])  # type: ignore[list-item]
    age = [a.name for a in AGGREGATES].index("sender_age_h")
    # At most the retention (168 h), never the ~490,000 h a 1970 timestamp would give.
    assert all(row[age] <= retention_s(settings.kafka) / 3600 + 1 for row in rows)


def test_a_producer_header_counts_only_when_trusted_and_only_back_in_time() -> None:
    broker_ms = int(NOW * 1000)
    recorded_ms = 1_030_000_000_000
    assert trusted_event_time(broker_ms, recorded_ms, NOW, PRODUCTION) == NOW  # production: ignored
    assert trusted_event_time(broker_ms, recorded_ms, NOW, REPLAY) == 1_030_000_000.0
    # Ahead of the broker's timestamp: the broker's timestamp.
    assert trusted_event_time(broker_ms, broker_ms + 86_400_000, NOW, REPLAY) == NOW
    # Before the earliest accepted event time: not a recorded time, ignored.
    assert trusted_event_time(broker_ms, 1000, NOW, REPLAY) == NOW


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (event_time_header(1_030_000_000.25), 1_030_000_000_250),
        ({EVENT_TIME_HEADER: b"1030000000000"}, 1_030_000_000_000),
        ([("other", b"5"), (EVENT_TIME_HEADER, b"12")], 12),
        ([(EVENT_TIME_HEADER, b"-5")], None),
        ([(EVENT_TIME_HEADER, b"1e12")], None),
        ([(EVENT_TIME_HEADER, b"9" * 16)], None),
        ([(EVENT_TIME_HEADER, b" 12")], None),
        ([(EVENT_TIME_HEADER, b"\xff" * 10_000)], None),
        ([], None),
        (None, None),
    ],
)
def test_the_event_time_header_is_digits_or_nothing(headers: object, expected: int | None) -> None:
    assert producer_time_ms(headers) == expected  # type: ignore[arg-type]


def test_derived_ids_stay_within_the_event_id_pattern_and_tell_contents_apart() -> None:
    one, two = content_digest(b"first content"), content_digest(b"second content")
    assert len(one) == DIGEST_CHARS
    assert re.fullmatch(r"[0-9a-f]+", one)
    assert derived_event_id("e-1", one) == f"e-1:r{one[:12]}"
    assert derived_event_id("e-1", one) != derived_event_id("e-1", two)
    longest = "x" * 128
    for event_id in ("e-1", longest, "a:b.c-d"):
        derived = derived_event_id(event_id, one)
        assert _EVENT_ID.match(derived)
        assert derived != event_id
    assert derived_event_id(longest, one) != derived_event_id(longest, two)


def test_an_input_record_may_not_take_a_derived_id() -> None:
    digest = content_digest(b"first content")
    derived = derived_event_id("e-1", digest)
    assert reserved_id(derived)
    assert not reserved_id("e-1")
    assert not reserved_id("e-1:rabc")
    pseudonymiser = Pseudonymiser(WardenSettings().privacy.hmac_key, "k1")
    position = SourcePosition(topic="mail.events", partition=0, offset=0)
    record = {
        "event_id": derived,
        "timestamp": 1_700_000_000.0,
        "sender": "a@example.com",
        "recipients": ["b@example.org"],
    }
    outcome = ingest_record(
        json.dumps(record).encode(), position, 1_700_000_000_000, WardenSettings(), pseudonymiser, 1.7e9
    )
    assert not isinstance(outcome, MailFeatures)
    assert outcome.reason.startswith("event_id: ends like a derived id")
    record["event_id"] = "e-1"
    assert isinstance(
        ingest_record(
            json.dumps(record).encode(), position, 1_700_000_000_000, WardenSettings(), pseudonymiser, 1.7e9
        ),
        MailFeatures,
    )


def _ingest(events: list[bytes], start: float, settings: WardenSettings) -> list[MailFeatures]:
    """Ingest as a worker does: each record taken by the broker :data:`STEP_S` after the last."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    out = []
    for i, raw in enumerate(events):
        broker_s = start + i * STEP_S
        position = SourcePosition(topic="mail.events", partition=0, offset=i)
        features = ingest_record(raw, position, int(broker_s * 1000), settings, pseudonymiser, broker_s + 0.2)
        assert isinstance(features, MailFeatures), features
        out.append(features)
    return out


def test_forged_claimed_times_leave_every_aggregate_as_without_them() -> None:
    """Mails claiming now + 6.9 days or 1990 change no aggregate, theirs or any later mail's."""
    settings = WardenSettings(privacy={"hmac_key": SecretStr("t" * 32)})
    start = NOW
    clean = honest(start, 200, "clock")
    lying, forged_ids = forged(clean, start)
    assert 30 <= len(forged_ids) <= 50
    clean_store, lying_store = InMemoryStore(), InMemoryStore()
    clean_rows = clean_store.apply_and_read_now(_ingest([encode(e) for e in clean], start, settings))
    lying_features = _ingest([encode(e) for e in lying], start, settings)
    lying_rows = lying_store.apply_and_read_now(lying_features)
    assert lying_rows == clean_rows
    assert lying_store.state() == clean_store.state()
    assert all(f.timestamp == start + i * STEP_S for i, f in enumerate(lying_features))

    # The test has teeth: advancing on the claimed times (the old behaviour) is what the forgery
    # was built to break. After a mail "from next week" its sender's later honest mails count 0
    # in the day window; after one "from 1990" its sender is decades old.
    believed = InMemoryStore()
    by_claim = [
        f.model_copy(update={"timestamp": e.timestamp}) for f, e in zip(lying_features, lying, strict=True)
    ]
    believed_rows = believed.apply_and_read_now(by_claim)
    names = [a.name for a in AGGREGATES]
    day, age = names.index("sender_events_24h"), names.index("sender_age_h")
    for kind, column in (("future", day), ("past", age)):
        i = next(
            i
            for i, e in enumerate(lying)
            if e.event_id in forged_ids and (e.timestamp > start) == (kind == "future")
        )
        j = next(
            j
            for j in range(i + 1, len(lying))
            if lying[j].sender == lying[i].sender and lying[j].event_id not in forged_ids
        )
        if kind == "future":
            assert believed_rows[j][column] == 0.0 < clean_rows[j][column]
        else:
            assert believed_rows[j][column] > 100_000 > clean_rows[j][column]


def test_training_features_take_the_time_they_are_given() -> None:
    (event,) = honest(NOW, 1, "train")
    position = SourcePosition(topic="corpus", partition=0, offset=0)
    pseudonymiser = Pseudonymiser(SecretStr("t" * 32), "k1")
    features = to_features(event, pseudonymiser, position, 0, event_time=NOW - 3600)
    assert features.timestamp == NOW - 3600
    assert features.digest == ""


def test_a_features_record_carries_a_digest_or_none() -> None:
    from warden.streams.exceptions import MalformedRecord
    from warden.streams.records import decode

    features = _ingest([encode(honest(NOW, 1, "d")[0])], NOW, WardenSettings())[0]
    assert features.digest == content_digest(encode(honest(NOW, 1, "d")[0]))
    assert decode(MailFeatures, encode(features)) == features
    for bad in ("x" * 32, "ABCDEF" + "0" * 26, "0" * 31):
        with pytest.raises(MalformedRecord, match="digest"):
            decode(MailFeatures, encode(features).replace(features.digest.encode(), bad.encode()))
