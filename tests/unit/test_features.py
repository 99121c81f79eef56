import pytest
from pydantic import SecretStr

from warden.features.definitions import (
    AGGREGATES,
    CONTENT,
    EVIDENCE_NAMES,
    FEATURE_NAMES,
    SCHEMA_HASH,
    content_features,
    row,
)
from warden.features.ingest.extraction import to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.aggregations import (
    IP,
    RECIPIENT,
    SENDER,
    SENDER_DOMAIN,
    URL_DOMAIN,
    AbuseShare,
    DecayedRate,
    DistinctCount,
    FirstSeen,
    WindowCount,
)
from warden.features.store.keys import Keys
from warden.features.store.operations import report
from warden.features.testing import InMemoryStore, features_for
from warden.streams.records import MailEvent, SourcePosition, encode

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
    assert FEATURE_NAMES[-len(AGGREGATES) :] == tuple(a.name for a in AGGREGATES)
    assert len(SCHEMA_HASH) == 16


def test_aggregate_names_come_from_their_parameters() -> None:
    assert WindowCount(SENDER, 60).name == "sender_events_1m"
    assert WindowCount(IP, 7200).name == "ip_events_2h"
    assert DistinctCount(SENDER, "recipients", 86400).name == "sender_distinct_recipients_24h"
    assert WindowCount(URL_DOMAIN, 86400).name == "url_domain_events_24h_max"
    assert FirstSeen(URL_DOMAIN).name == "url_domain_age_h_min"
    assert DecayedRate(SENDER, 600).name == "sender_rate_hl10m"
    assert AbuseShare(SENDER_DOMAIN, 7 * 86400).name == "sender_domain_abuse_share_hl7d"
    assert {"sender_new_recipient_share", "sender_reply_share"} <= set(FEATURE_NAMES)


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
    features = to_features(mail(), pseudonymiser, POSITION, produced_at_ms=1, event_time=1e9)
    serialised = encode(features).decode().lower()
    for raw in ("alice", "example.com", "bob@", "carol", "free money", "192.168.10.1", "bit.ly"):
        assert raw not in serialised
    assert len(features.content) == len(CONTENT)


def _values(row: list[float]) -> dict[str, float]:
    return dict(zip((a.name for a in AGGREGATES), row, strict=True))


async def test_in_memory_store_windows_are_point_in_time_and_idempotent() -> None:
    store = InMemoryStore()
    first = features_for("a", 10_000.0, "s", ["r1", "r2"], url_domains=["u1"])
    second = features_for("b", 10_100.0, "s", ["r2", "r3"], url_domains=["u1", "u2"])
    late = features_for("c", 10_000.0 + 3600 * 5, "s", ["r9"])
    one, two = (_values(r) for r in await store.apply_and_read([first, second]))
    assert (one["sender_events_1h"], two["sender_events_1h"]) == (1.0, 2.0)
    assert (one["sender_distinct_recipients_24h"], two["sender_distinct_recipients_24h"]) == (2.0, 3.0)
    assert two["sender_new_recipient_share"] == 0.5
    assert two["url_domain_distinct_senders_24h_max"] == 1.0
    assert two["sender_age_h"] == 100 / 3600
    # Replaying an event already applied changes nothing and serves the same values.
    before = store.state()
    assert _values((await store.apply_and_read([second]))[0]) == two
    assert store.state() == before
    # Five hours later the hourly count has emptied, the daily counts have not.
    later = _values((await store.apply_and_read([late]))[0])
    assert later["sender_events_1h"] == 1.0
    assert later["sender_events_24h"] == 3.0
    assert later["sender_distinct_recipients_24h"] == 4.0


async def test_reply_share_sees_who_wrote_to_the_sender() -> None:
    store = InMemoryStore()
    await store.apply_and_read([features_for("a", 1e6, "alice", ["bob"])])
    (reply,) = await store.apply_and_read([features_for("b", 1e6 + 60, "bob", ["alice", "carol"])])
    assert _values(reply)["sender_reply_share"] == 0.5


async def test_reports_build_decayed_reputation_once_per_report() -> None:
    store = InMemoryStore()
    keys = store.keys
    reports = [
        report(SENDER, "spammer", "abuse", 1.0, 1e6, "f1", keys, 3600, 3600),
        report(SENDER, "spammer", "abuse", 1.0, 1e6, "f2", keys, 3600, 3600),
        report(SENDER, "spammer", "abuse", 1.0, 1e6, "f2", keys, 3600, 3600),  # a duplicate
        report(SENDER, "spammer", "legit", 1.0, 1e6, "f3", keys, 3600, 3600),
    ]
    await store.apply_calls(reports)
    (row,) = await store.apply_and_read([features_for("e", 1e6 + 7 * 86400, "spammer", ["x"])])
    values = _values(row)
    assert values["sender_abuse_reports_hl7d"] == 1.0  # two reports, one half-life ago
    assert values["sender_abuse_share_hl7d"] == 1.0 / (1.0 + 0.5 + 1.0)


def test_keys_share_one_cluster_slot_per_entity() -> None:
    keys = Keys("p")
    tag = "{a:k1.abc}"
    assert tag in keys.window(SENDER, "k1.abc", 3600)
    assert tag in keys.distinct(RECIPIENT, "k1.abc", "senders", 5)
    assert tag in keys.account("k1.abc", "in")
    assert keys.pattern() == "p:*"
    assert Keys.is_memo(keys.memo(SENDER, "k1.abc", 7))
    assert not Keys.is_memo(keys.first_seen(IP, "k1.abc"))


def test_an_ids_first_digest_is_kept_as_long_as_asked_not_as_the_memo() -> None:
    import json

    from warden.features.store.batches import plan_batch
    from warden.streams.provenance import content_digest

    event = features_for("e-1", 1_030_000_000.0, "k1.s", ["k1.r"]).model_copy(
        update={"digest": content_digest(b"one")}
    )
    keys = Keys("p")
    for id_ttl, expected in ((None, 900), (86_400, 86_400)):
        planned = plan_batch([event], keys, 172_800, 900, id_ttl_s=id_ttl)
        registration, *entities = planned.calls
        assert registration.keys == (keys.first_digest("e-1"),)
        # The program's head: time, aggregate TTL, then the TTL its memo hash (the id key) gets.
        assert json.loads(registration.args[1])[2] == str(expected)
        assert all(json.loads(call.args[1])[2] == "900" for call in entities)  # memos keep theirs
