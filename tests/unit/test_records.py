import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warden.features.ingest.decode import decode_mail_event
from warden.streams.exceptions import MalformedRecord
from warden.streams.records import DeadLetter, MailFeatures, SourcePosition, Verdict, decode, encode
from warden.streams.settings import IngestSettings

NOW = 1_800_000_000.0
LIMITS = IngestSettings(max_payload_bytes=10_000, max_recipients=3)


def good(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "event_id": "e-1",
        "timestamp": 1_030_000_000.0,
        "sender": "alice@example.com",
        "recipients": ["bob@example.org"],
        "subject": "hello",
        "text": "hi there",
        "headers": [["Received", "from a by b"]],
    }
    record.update(changes)
    return record


def test_a_good_record_decodes() -> None:
    event = decode_mail_event(json.dumps(good()).encode(), LIMITS, NOW)
    assert event.sender == "alice@example.com"
    assert event.headers == [("Received", "from a by b")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty record"),
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (json.dumps(good(timestamp="soon")).encode(), "timestamp"),
        (json.dumps(good(recipients="bob@example.org")).encode(), "recipients"),
        (json.dumps({k: v for k, v in good().items() if k != "sender"}).encode(), "sender"),
        (json.dumps(good(sender="no-at-sign")).encode(), "sender"),
        (json.dumps(good(event_id="has spaces")).encode(), "event_id"),
        (json.dumps(good(recipients=[f"r{i}@x.org" for i in range(4)])).encode(), "exceeds"),
        (json.dumps(good(text="x" * 20_000)).encode(), "bytes exceeds"),
        (json.dumps(good(timestamp=1.0)).encode(), "outside"),
        (json.dumps(good(timestamp=NOW + 365 * 86400)).encode(), "outside"),
        (json.dumps(good(timestamp=float("nan"))).encode(), "timestamp"),
        (json.dumps(good(timestamp=float("inf"))).encode(), "timestamp"),
        (b"[" * 5000 + b"]" * 5000, "nesting depth exceeds"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedRecord, match=reason) as caught:
        decode_mail_event(raw, LIMITS, NOW)
    assert "\n" not in caught.value.reason


positions = st.builds(
    SourcePosition,
    topic=st.text(min_size=1, max_size=20),
    partition=st.integers(0, 1000),
    offset=st.integers(0, 2**62),
)


@given(
    event_id=st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True),
    content=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=30),
    recipients=st.lists(st.text(max_size=40), max_size=5),
    position=positions,
)
def test_features_round_trip(
    event_id: str, content: list[float], recipients: list[str], position: SourcePosition
) -> None:
    record = MailFeatures(
        event_id=event_id,
        timestamp=1e9,
        key_id="k1",
        sender="k1.abc",
        sender_domain="k1.def",
        recipients=recipients,
        content=content,
        source=position,
        produced_at_ms=5,
    )
    assert decode(MailFeatures, encode(record)) == record


@given(score=st.floats(0, 1), position=positions, payload=st.binary(max_size=200))
def test_verdicts_and_dead_letters_round_trip(score: float, position: SourcePosition, payload: bytes) -> None:
    verdict = Verdict(
        event_id="e",
        action="junk",
        score=score,
        model_version="v",
        source=position,
        produced_at_ms=1,
        decided_at_ms=2,
    )
    assert decode(Verdict, encode(verdict)) == verdict
    letter = DeadLetter.of(position, "why", payload, 3)
    decoded = decode(DeadLetter, encode(letter))
    assert decoded == letter
    assert decoded.payload() == payload
