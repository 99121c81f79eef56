"""Dead letters are bounded whatever their record: whole up to a size, else an excerpt, length and digest."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warden.streams.exceptions import IncompleteDeadLetter
from warden.streams.records import (
    DEAD_LETTER_EXCERPT_BYTES,
    DEAD_LETTER_REASON_CHARS,
    DEAD_LETTER_WHOLE_BYTES,
    DeadLetter,
    SourcePosition,
    decode,
    encode,
)

POSITION = SourcePosition(topic="mail.events", partition=3, offset=41)
#: Kafka's default ``message.max.bytes`` (a record batch, so one record and its batch header).
BROKER_LIMIT = 1024 * 1024 + 12


@pytest.mark.parametrize(
    "size", [0, 1, DEAD_LETTER_WHOLE_BYTES - 1, DEAD_LETTER_WHOLE_BYTES, DEAD_LETTER_WHOLE_BYTES + 1, 800_000]
)
def test_a_record_is_kept_whole_up_to_the_bound_and_as_an_excerpt_above(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    letter = decode(DeadLetter, encode(DeadLetter.of(POSITION, "why", payload, 7)))
    assert letter.payload_bytes == size
    assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    if size <= DEAD_LETTER_WHOLE_BYTES:
        assert letter.payload_complete
        assert letter.payload() == letter.excerpt() == payload
    else:
        assert not letter.payload_complete
        assert letter.excerpt() == payload[:DEAD_LETTER_EXCERPT_BYTES]
        with pytest.raises(IncompleteDeadLetter, match=r"mail\.events/3@41"):
            letter.payload()


def test_the_largest_letter_fits_a_broker_with_the_default_limit() -> None:
    # The worst case: the largest whole record, the longest reason, made of characters that JSON
    # escapes six bytes each, and the longest topic name Kafka allows (249 characters).
    topic = "t" * 249
    letter = DeadLetter.of(
        SourcePosition(topic=topic, partition=2**31 - 1, offset=2**63 - 1),
        "\x01" * 10 * DEAD_LETTER_REASON_CHARS,
        b"\xff" * DEAD_LETTER_WHOLE_BYTES,
        2**63 - 1,
    )
    size = len(encode(letter)) + len(topic)  # value and key
    print(f"largest dead letter: {size:,} bytes")
    assert size < BROKER_LIMIT // 2
    assert len(letter.reason) == DEAD_LETTER_REASON_CHARS


def test_a_ten_megabyte_record_leaves_a_small_letter() -> None:
    letter = DeadLetter.of(POSITION, "payload of 10000000 bytes exceeds the limit", b"A" * 10_000_000, 1)
    assert len(encode(letter)) < DEAD_LETTER_EXCERPT_BYTES * 4 // 3 + 1000


@given(payload=st.binary(max_size=2_000), reason=st.text(max_size=2 * DEAD_LETTER_REASON_CHARS))
def test_letters_round_trip(payload: bytes, reason: str) -> None:
    letter = DeadLetter.of(POSITION, reason, payload, 3)
    assert decode(DeadLetter, encode(letter)) == letter
    assert letter.payload() == payload
    assert len(letter.reason) <= DEAD_LETTER_REASON_CHARS
    assert reason.startswith(letter.reason.removesuffix("…"))


def test_a_letter_written_before_the_bound_still_reads() -> None:
    # What the dead-letters topic held before: the whole payload, no digest, no completeness flag.
    payload = b'{"event_id": "e-1"}'
    reason = "no mail model is promoted in the registry"
    old = {
        "source": POSITION.model_dump(),
        "reason": reason,
        "payload_b64": base64.b64encode(payload).decode("ascii"),
        "payload_bytes": len(payload),
        "failed_at_ms": 5,
    }
    letter = decode(DeadLetter, json.dumps(old).encode())
    assert letter.payload() == payload
    assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert letter == DeadLetter.of(POSITION, reason, payload, 5)


def test_a_replay_writes_only_to_input_topics_whatever_a_letter_claims() -> None:
    from warden.streams.dead_letters import Original, replayable
    from warden.streams.settings import KafkaSettings

    settings = KafkaSettings(topic_prefix="t.")

    def found(topic: str, where: Literal["topic", "letter"]) -> Original:
        letter = DeadLetter.of(SourcePosition(topic=topic, partition=0, offset=1), "no mail model", b"{}", 7)
        return Original(letter, None, b"{}", where)

    ok = [
        found("t.mail.events", "letter"),
        found("t.calendar.events", "topic"),
        found("t.feedback", "letter"),
        found("t.mail.features", "topic"),  # read back at its position on the features topic
    ]
    # A letter anyone with access to dead-letters can write, carrying its own copy of a "record":
    hostile = [
        found("t.mail.features", "letter"),  # features that never went through ingest
        found("t.model-updates", "letter"),
        found("t.training-examples", "topic"),
        found("t.verdicts", "letter"),
        found("mail.events", "letter"),  # another deployment's input topic
        found("x" * 249, "letter"),
    ]
    allowed, refused = replayable(settings, ok + hostile)
    assert allowed == ok
    assert [r.letter for r in refused] == [h.letter for h in hostile]
    for refusal in refused:
        assert "\n" not in refusal.why
        assert len(refusal.why) < 140
    assert "written by ingest only" in refused[0].why
    assert "not an input topic" in refused[1].why
