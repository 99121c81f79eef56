"""Calendar and contacts: records, ingest, schemas, the simulator, models and the registry per kind."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from warden.features.definitions import SCHEMA_HASH, SCHEMAS
from warden.features.ingest.decode import decode_activity_event
from warden.features.ingest.extraction import to_activity_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.ingest.record import ingest_activity_record
from warden.features.store.aggregations import CALENDAR_AGGREGATES, CONTACTS_AGGREGATES
from warden.features.testing import InMemoryStore
from warden.infra.cli.main import main
from warden.models.exceptions import ModelRefused
from warden.models.metrics import threshold_at_fpr, widened_threshold
from warden.models.registry import Registry
from warden.models.scorer import Scorer
from warden.models.signing import RegistryKeys
from warden.models.simulated import candidate, score_stream
from warden.streams.exceptions import ExitCode, MalformedRecord
from warden.streams.records import ActivityFeatures, ActivityKind, DeadLetter, SourcePosition, encode
from warden.streams.settings import IngestSettings, WardenSettings
from warden.streams.sources.simulated_world import CAMPAIGN_TYPES, LEGIT, SimulationParams
from warden.streams.sources.simulator import simulate

KEYS = RegistryKeys.generate()

NOW = 1_800_000_000.0
LIMITS = IngestSettings(max_payload_bytes=10_000, max_recipients=3)
KEY = Pseudonymiser(WardenSettings().privacy.hmac_key, "k1")
AT = SourcePosition(topic="calendar.events", partition=0, offset=7)
SMALL = SimulationParams(seed=3, accounts=80, days=2.0, campaigns_per_day=8.0)


def invite(**changes: object) -> bytes:
    record: dict[str, object] = {
        "event_id": "c-1",
        "timestamp": 1_767_225_600.0,
        "action": "created",
        "organizer": "Alice@Example.com",
        "invitees": ["bob@example.org"],
        "title": "Sync",
        "description": "Claim your prize at https://win-prize1.xyz/claim",
        "start": 1_767_229_200.0,
        "end": 1_767_232_800.0,
        "client": "web",
    }
    record.update(changes)
    return json.dumps(record).encode()


def card(**changes: object) -> bytes:
    record: dict[str, object] = {
        "event_id": "k-1",
        "timestamp": 1_767_225_600.0,
        "action": "shared",
        "owner": "alice@example.com",
        "recipients": ["bob@example.org"],
        "card": {"display_name": "Support 24/7", "emails": ["help@scam.example"], "note": "call now"},
        "urls": ["https://bit.ly/123"],
        "photo": True,
    }
    record.update(changes)
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        ("calendar", None, "empty record"),
        ("calendar", b"{nope", "not JSON"),
        ("calendar", b"[]", "not an object"),
        ("calendar", invite(organizer="no-at-sign"), "organizer"),
        ("calendar", invite(invitees=[]), "invitees"),
        ("calendar", invite(invitees=["a@b.c", "not an address"]), "invitees"),
        ("calendar", invite(invitees=[f"r{i}@x.org" for i in range(4)]), "exceeds"),
        ("calendar", invite(end=1.0), "end: before start"),
        ("calendar", invite(action="deleted"), "action"),
        ("calendar", invite(recurrence="hourly"), "recurrence"),
        ("calendar", invite(timestamp=1.0), "outside"),
        ("calendar", invite(start="tomorrow"), "start"),
        ("contacts", card(recipients=[]), "shared card needs"),
        ("contacts", card(card={"emails": ["x"]}), "card.emails"),
        ("contacts", card(photo="yes"), "photo"),
        ("contacts", card(owner=7), "owner"),
        ("contacts", card(description="x" * 20_000), "bytes exceeds"),
    ],
)
def test_bad_activity_records_are_refused_with_a_reason(kind: str, raw: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedRecord) as caught:
        decode_activity_event(raw, kind, LIMITS, NOW)  # type: ignore[arg-type]
    assert reason in caught.value.reason


def test_a_bad_record_becomes_a_dead_letter_with_its_bytes() -> None:
    outcome = ingest_activity_record(
        invite(end=0.0), "calendar", AT, 0, WardenSettings(ingest=LIMITS), KEY, NOW
    )
    assert isinstance(outcome, DeadLetter)
    assert outcome.payload() == invite(end=0.0)
    assert outcome.source == AT


def test_ingest_keeps_numbers_and_pseudonyms_only() -> None:
    event = decode_activity_event(invite(), "calendar", LIMITS, NOW)
    features = to_activity_features(event, KEY, AT, 0, event_time=NOW)
    assert features.kind == "calendar"
    assert features.sender == KEY.address("alice@example.com")  # the same pseudonym as in mail
    assert features.recipients == [KEY.address("bob@example.org")]
    assert features.url_domains == [KEY.host("win-prize1.xyz")]
    assert len(features.content) == len(SCHEMAS["calendar"].content_names)
    names = dict(zip(SCHEMAS["calendar"].content_names, features.content, strict=True))
    assert names["links"] == 1
    assert names["risky_tld_links"] == 1
    assert names["lure_words"] >= 2
    raw = encode(features).lower()
    for value in (b"alice", b"bob@", b"prize", b"sync"):
        assert value not in raw

    shared = to_activity_features(
        decode_activity_event(card(), "contacts", LIMITS, NOW), KEY, AT, 0, event_time=NOW
    )
    assert shared.contacts == []  # only a created card adds contacts
    created = decode_activity_event(card(action="created", recipients=[]), "contacts", LIMITS, NOW)
    assert to_activity_features(created, KEY, AT, 0, event_time=NOW).contacts == [
        KEY.address("help@scam.example")
    ]


def test_every_kind_has_its_own_schema_and_mail_keeps_its_hash() -> None:
    assert SCHEMAS["mail"].schema_hash == SCHEMA_HASH
    hashes = {schema.schema_hash for schema in SCHEMAS.values()}
    assert len(hashes) == 3
    for kind, aggregates in (("calendar", CALENDAR_AGGREGATES), ("contacts", CONTACTS_AGGREGATES)):
        names = SCHEMAS[kind].feature_names
        assert len(names) == len(set(names))
        assert names[-len(aggregates) :] == tuple(a.name for a in aggregates)
        # Linked-domain aggregates are mail's own: one population across kinds.
        assert "url_domain_abuse_share_hl7d_max" in names


def test_a_created_card_makes_its_address_a_known_contact_of_the_owner() -> None:
    store = InMemoryStore()

    def features(raw: bytes, kind: ActivityKind, offset: int) -> ActivityFeatures:
        event = decode_activity_event(raw, kind, LIMITS, NOW)
        return to_activity_features(event, KEY, AT, offset, event_time=event.timestamp)

    meet = features(invite(), "calendar", 0)
    created = card(event_id="k-2", action="created", recipients=[], card={"emails": ["carol@example.net"]})
    add = features(created, "contacts", 1)
    known = features(
        invite(event_id="c-2", invitees=["carol@example.net"], timestamp=1_767_225_700.0), "calendar", 2
    )
    position = [a.name for a in CALENDAR_AGGREGATES].index("organizer_unknown_contact_share")
    first, _, second = store.apply_and_read_now([meet, add, known])
    assert first[position] == 1.0  # bob is nobody's contact yet
    assert second[position] == 0.0  # carol's card was created in between


def test_the_simulator_is_seeded_labelled_and_parameterised() -> None:
    first, again = simulate(SMALL), simulate(SMALL)
    assert [(s.event, s.label, s.campaign) for s in first] == [(s.event, s.label, s.campaign) for s in again]
    assert [s.event.timestamp for s in first] == sorted(s.event.timestamp for s in first)
    assert {s.campaign for s in first} == {LEGIT, *CAMPAIGN_TYPES}
    assert all((s.label == 1) == (s.campaign != LEGIT) for s in first)
    assert {s.event.kind for s in first} == {"calendar", "contacts"}
    other = simulate(replace(SMALL, seed=4))
    assert {s.event.event_id for s in other}.isdisjoint({s.event.event_id for s in first})
    without = simulate(replace(SMALL, mix={**SMALL.mix, "card_spam": 0.0}))
    assert "card_spam" not in {s.campaign for s in without}
    quiet = simulate(replace(SMALL, campaigns_per_day=0.0))
    assert {s.label for s in quiet} == {0}
    with pytest.raises(ValueError, match="unknown campaign"):
        SimulationParams(mix={"spam": 1.0})
    # Ingest accepts every simulated record as it is.
    for item in first[:300]:
        decode_activity_event(encode(item.event), item.event.kind, IngestSettings(), NOW)


def test_a_kind_model_is_registered_in_its_own_registry_and_served_by_kind(tmp_path: Path) -> None:
    settings = WardenSettings(models={"registry_dir": tmp_path, "num_trees": 40})
    trained = candidate(settings, "contacts", SMALL)
    assert trained.manifest.kind == "contacts"
    assert trained.manifest.schema_hash == SCHEMAS["contacts"].schema_hash
    with pytest.raises(ModelRefused, match="does not belong"):
        Registry(tmp_path, KEYS).register(trained)  # the mail registry refuses it
    registry = Registry(tmp_path, KEYS).for_kind("contacts")
    version = registry.register(trained)
    registry.promote(version)
    assert Registry(tmp_path / "kinds" / "contacts", KEYS, "contacts").current() == version
    assert Registry(tmp_path, KEYS).current() is None  # mail untouched
    scorer = Scorer.from_registry(registry)
    assert scorer.schema.kind == "contacts"
    rows = np.zeros((3, len(SCHEMAS["contacts"].feature_names)), dtype=np.float32)
    assert scorer.score(rows).shape == (3,)
    results = score_stream(trained, "contacts", simulate(replace(SMALL, seed=9)), settings)
    assert sum(r.events for r in results.values()) > 0


@pytest.mark.parametrize(
    "argv",
    [
        ("simulate",),
        ("simulate", "--out", "/tmp/x.jsonl", "--mix", "nonsense"),
        ("simulate", "--out", "/tmp/x.jsonl", "--mix", "spam=2"),
        ("simulate", "--out", "/tmp/x.jsonl", "--days", "0"),
        ("train", "--kind", "voicemail"),
        ("evaluate", "--kind", "calendar", "--test-seed", "1"),
    ],
)
def test_cli_mistakes_are_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_widened_thresholds_keep_validation_recall_and_sit_between_the_classes() -> None:
    labels = np.asarray([0, 0, 0, 0, 1, 1], dtype=np.int8)
    scores = np.asarray([0.001, 0.002, 0.004, 0.01, 0.95, 0.99])
    edge = threshold_at_fpr(labels, scores, 0.25)
    widened = widened_threshold(labels, scores, edge)
    assert edge < widened < 0.95
    assert ((scores >= widened) == labels.astype(bool)).all()
    assert widened_threshold(labels, scores, 0.999) == 0.999  # no positive above: unchanged


def test_lead_time_counts_from_the_trusted_time_not_the_claimed_one() -> None:
    from warden.features.ingest.activity import CALENDAR_CONTENT

    lead = [f.name for f in CALENDAR_CONTENT].index("lead_time_h")
    received = 1_767_225_600.0
    rows = []
    for claimed in (received, received - 30 * 86400, received + 6.9 * 86400):
        event = decode_activity_event(invite(timestamp=claimed), "calendar", LIMITS, NOW)
        rows.append(to_activity_features(event, KEY, AT, 0, event_time=received).content)
    assert rows[0][lead] == pytest.approx(1.0)  # the meeting starts an hour after the invite arrived
    assert rows[1] == rows[0]
    assert rows[2] == rows[0]
