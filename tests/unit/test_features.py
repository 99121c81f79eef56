import json

import pytest
from pydantic import SecretStr

from features.definitions import (
    AGGREGATES,
    CONTENT,
    EVIDENCE_NAMES,
    FEATURE_NAMES,
    SCHEMA_HASH,
    DistinctCount,
    WindowCount,
    content_features,
    row,
)
from features.extraction import to_features
from features.keys import Keys
from features.pseudonym import Pseudonymiser
from features.testing import InMemoryStore, features_for
from streams.records import MailEvent, SourcePosition, encode

POSITION = SourcePosition(topic="mail.events", partition=0, offset=0)


def mail(**changes: object) -> MailEvent:
    values: dict[str, object] = {
        "event_id": "e-1",
        "timestamp": 1_030_000_000.0,
        "sender": "Alice.Smith@Example.com",
        "recipients": ["bob@example.org", "carol@example.net"],
        "subject": "FREE money!!! act now",
        "text": "Click here: http://192.168.10.1/win and http://bit.ly/x FREE",
        "html": "<p>hi <img src='a'></p>",
        "urls": ["http://192.168.10.1/win", "http://bit.ly/x"],
        "headers": [("Received", "a"), ("Received", "b"), ("Reply-To", "x@other.biz")],
    }
    values.update(changes)
    return MailEvent(**values)  # type: ignore[arg-type]


def test_schema_has_enough_named_features_in_a_stable_order() -> None:
    assert len(CONTENT) >= 15
    assert len(AGGREGATES) >= 2
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert FEATURE_NAMES[-2:] == ("sender_events_1h", "sender_distinct_recipients_24h")
    assert len(SCHEMA_HASH) == 16


def test_aggregate_names_come_from_their_parameters() -> None:
    assert WindowCount("sender", 60).name == "sender_events_1m"
    assert WindowCount("sender", 7200).name == "sender_events_2h"
    assert DistinctCount("sender", "recipients", 86400).name == "sender_distinct_recipients_24h"


def test_schema_orders_content_then_evidence_then_aggregates() -> None:
    assert FEATURE_NAMES[len(CONTENT) : len(CONTENT) + len(EVIDENCE_NAMES)] == EVIDENCE_NAMES
    assert len(FEATURE_NAMES) == len(CONTENT) + len(EVIDENCE_NAMES) + len(AGGREGATES)


def test_content_features_measure_the_mail() -> None:
    values = dict(zip((f.name for f in CONTENT), content_features(mail()), strict=True))
    assert values["url_count"] == 2
    assert values["url_ip_literals"] == 1
    assert values["images"] == 1
    assert values["recipients"] == 2
    assert values["received_hops"] == 2
    assert values["reply_to_differs"] == 1
    assert values["spam_phrases"] >= 3
    assert values["subject_punct_run"] == 3
    assert 0 < values["subject_upper_ratio"] < 1


def test_row_refuses_parts_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="schema wants"):
        row([1.0], [2.0], [3.0, 4.0])


def test_pseudonyms_are_keyed_normalised_and_carry_the_key_id() -> None:
    one = Pseudonymiser(SecretStr("key-one"), "k1")
    two = Pseudonymiser(SecretStr("key-two"), "k2")
    assert one.address(" <Alice@Example.COM> ") == one.address("alice@example.com")
    assert one.address("alice@example.com") != two.address("alice@example.com")
    assert one.address("alice@example.com").startswith("k1.")
    assert one.address("example.com") != one.domain("example.com")
    assert "key-one" not in repr(one)


def test_features_leave_no_raw_identifier_or_text() -> None:
    pseudonymiser = Pseudonymiser(SecretStr("secret"), "k1")
    features = to_features(mail(), pseudonymiser, POSITION, produced_at_ms=1)
    serialised = encode(features).decode().lower()
    for raw in ("alice", "example.com", "bob@", "carol", "free money", "192.168.10.1", "bit.ly"):
        assert raw not in serialised
    assert len(features.content) == len(CONTENT)


async def test_in_memory_store_windows_are_point_in_time_and_idempotent() -> None:
    store = InMemoryStore()
    first = features_for("a", 10_000.0, "s", ["r1", "r2"])
    second = features_for("b", 10_100.0, "s", ["r2", "r3"])
    late = features_for("c", 10_000.0 + 3600 * 5, "s", ["r9"])
    assert await store.apply_and_read([first, second]) == [[1.0, 2.0], [2.0, 3.0]]
    # Replaying an event already applied changes nothing.
    assert await store.apply_and_read([second]) == [[2.0, 3.0]]
    # Five hours later the hourly count has emptied, the daily distinct count has not.
    assert await store.apply_and_read([late]) == [[1.0, 4.0]]


def test_keys_share_one_cluster_slot_per_entity() -> None:
    keys = Keys("p")
    tag = "{s:k1.abc}"
    assert tag in keys.sender_events("k1.abc")
    assert tag in keys.sender_recipients("k1.abc", 5)
    assert keys.pattern() == "p:*"
    assert json.dumps(keys.sender_recipients("k1.abc", 5)).count("{") == 1
