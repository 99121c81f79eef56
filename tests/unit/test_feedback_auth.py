"""Label sources are authenticated: an HMAC per source key over the whole label, checked before use."""

from __future__ import annotations

import json
import math
import secrets
import struct
from typing import Any

import pytest
from pydantic import BaseModel

from warden.infra.cli.main import main
from warden.serving.worker.agents.feedback import MAX_LABEL_BYTES, Labelled, authentic, example
from warden.serving.worker.metrics import WorkerStats, exposition, reason_class
from warden.streams.exceptions import ExitCode, MalformedRecord, SettingsError
from warden.streams.feedback_auth import FIELDS, ExampleKeys, SourceKeys, canonical, example_canonical
from warden.streams.records import Feedback, LinkedPseudonyms, ServedRow, TrainingExample, encode
from warden.streams.settings import FeedbackSettings, WardenSettings, load_settings

USER_KEY, OPS_KEY = secrets.token_bytes(32), secrets.token_bytes(32)
WORKER = SourceKeys({"user_report": USER_KEY, "ops_review": OPS_KEY})
LABEL = Feedback(
    feedback_id="fb-1",
    event_id="e-1",
    label="abuse",
    source="ops_review",
    reporter="operator@ops.example",
    at=1_760_000_000.25,
    reason="phishing kit",
)


def test_the_signature_covers_every_field_of_the_record() -> None:
    assert set(FIELDS) == set(Feedback.model_fields) - {"signature"}
    changes = {
        "feedback_id": "fb-2",
        "event_id": "e-2",
        "kind": "calendar",
        "label": "legit",
        "source": "user_report",
        "reporter": "someone@else.example",
        "at": 1_760_000_001.25,
        "reason": None,
    }
    assert set(changes) == set(FIELDS)
    for name, value in changes.items():
        assert canonical(LABEL.model_copy(update={name: value})) != canonical(LABEL), name
    # Length-framed: text moved from one field to the next is another label.
    a = LABEL.model_copy(update={"reporter": "ab", "reason": "c"})
    b = LABEL.model_copy(update={"reporter": "a", "reason": "bc"})
    assert canonical(a) != canonical(b)
    assert canonical(LABEL.model_copy(update={"reason": "~"})) != canonical(
        LABEL.model_copy(update={"reason": None})
    )


def test_a_signed_label_survives_the_wire_and_verifies() -> None:
    signed = WORKER.sign(LABEL)
    assert signed.signature is not None
    assert len(signed.signature) == 64
    received = authentic(encode(signed), WORKER)
    assert received == signed
    assert WORKER.problem(received) is None


def test_forged_labels_are_refused_with_a_one_line_reason() -> None:
    backend = SourceKeys({"user_report": USER_KEY})  # the app backend: user reports only
    with pytest.raises(SettingsError, match=r"no key to sign ops_review labels.*KEY_OPS_REVIEW"):
        backend.sign(LABEL)
    forged = {
        "wrong key": SourceKeys({"ops_review": secrets.token_bytes(32)}).sign(LABEL),
        "user_report key claiming ops_review": SourceKeys({"ops_review": USER_KEY}).sign(LABEL),
        "signature replayed on an edited record": WORKER.sign(LABEL).model_copy(update={"label": "legit"}),
        "source changed after signing": backend.sign(
            LABEL.model_copy(update={"source": "user_report"})
        ).model_copy(update={"source": "ops_review"}),
        "no signature": LABEL,
    }
    for what, label in forged.items():
        with pytest.raises(MalformedRecord) as caught:
            authentic(encode(label), WORKER)
        reason = caught.value.reason
        assert reason.startswith("unauthenticated label: "), what
        assert "\n" not in reason
        assert "operator@ops.example" not in reason, "a reason never carries the reporter"
    assert "no signature" in WORKER.problem(LABEL)  # type: ignore[operator]
    appeal = SourceKeys({"appeal": USER_KEY}).sign(LABEL.model_copy(update={"source": "appeal"}))
    assert "no key for source appeal" in WORKER.problem(appeal)  # type: ignore[operator]


def test_forged_labels_have_their_own_dead_letter_class_for_alerts() -> None:
    stats = WorkerStats()
    forged = [
        LABEL,
        SourceKeys({"ops_review": USER_KEY}).sign(LABEL),
        SourceKeys({"appeal": USER_KEY}).sign(LABEL.model_copy(update={"source": "appeal"})),
    ]
    for label in forged:
        with pytest.raises(MalformedRecord) as caught:
            authentic(encode(label), WORKER)
        assert reason_class(caught.value.reason) == "unauthenticated"
        stats.dead_letter(caught.value.reason)
    with pytest.raises(MalformedRecord) as malformed:
        authentic(encode(WORKER.sign(LABEL)).replace(b'"ops_review"', b'"admin"'), WORKER)
    stats.dead_letter(malformed.value.reason)
    exposed = exposition(stats).decode()
    assert 'warden_dead_letters_total{reason="unauthenticated"} 3.0' in exposed
    assert 'warden_dead_letters_total{reason="invalid_field"} 1.0' in exposed, "a malformed label is not one"


def test_undecodable_oversized_and_unknown_source_labels_are_malformed() -> None:
    record = json.loads(encode(WORKER.sign(LABEL)))
    for bad in (
        {**record, "source": "admin"},  # an unknown source
        {**record, "signature": "zz" * 32},
        {**record, "at": "NaN"},
        {**record, "at": 1e308},  # its milliseconds overflow an integer
        {**record, "at": 1e300, "signature": "ab" * 32},
        {**record, "at": -1.0},
    ):
        with pytest.raises(MalformedRecord):
            authentic(json.dumps(bad).encode(), WORKER)
    with pytest.raises(MalformedRecord, match="payload of"):
        authentic(b" " * (MAX_LABEL_BYTES + 1), WORKER)
    with pytest.raises(MalformedRecord):
        authentic(b'{"at": NaN}', WORKER)


def test_development_has_a_public_key_per_source_and_production_only_configured_ones() -> None:
    dev = SourceKeys.from_settings(WardenSettings())
    assert dev.sources == ["appeal", "auto", "ops_review", "user_report"]
    user_signed = SourceKeys.from_settings(WardenSettings()).sign(
        LABEL.model_copy(update={"source": "user_report"})
    )
    claimed = user_signed.model_copy(update={"source": "ops_review"})
    assert dev.problem(claimed) is not None, "development keys differ per source too"
    production = WardenSettings(
        environment="production",
        privacy={"hmac_key": secrets.token_hex(32)},
        feedback={"key_ops_review": secrets.token_hex(32)},
    )
    assert SourceKeys.from_settings(production).sources == ["ops_review"]
    assert repr(SourceKeys.from_settings(production)) == "SourceKeys(sources=['ops_review'])"


def test_warden_feedback_without_the_sources_key_sends_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "WARDEN_ENVIRONMENT": "production",
        "WARDEN_PRIVACY__HMAC_KEY": secrets.token_hex(32),
        "WARDEN_FEEDBACK__KEY_USER_REPORT": secrets.token_hex(32),
        # Nothing listens here: a send would fail with exit 1, so exit 2 means nothing was sent.
        "WARDEN_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "WARDEN_KAFKA__REQUEST_TIMEOUT_S": "1",
        "WARDEN_REDIS__URL": "redis://127.0.0.1:9/0",
    }.items():
        monkeypatch.setenv(name, value)
    code = main(["feedback", "--event-id", "e-1", "--label", "abuse", "--source", "ops_review"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert err.startswith(
        "warden: error: no key to sign ops_review labels: set WARDEN_FEEDBACK__KEY_OPS_REVIEW"
    )
    assert err.count("\n") == 1


# Training examples: what retrain learns from carries the feedback agent's signature.

EXAMPLE_KEY = secrets.token_bytes(32)
AGENT = ExampleKeys(EXAMPLE_KEY)
ROW = ServedRow(
    event_id="e-1",
    timestamp=1_760_000_000.5,
    model_version="m-1",
    sender="k1.sender",
    sender_domain="k1.domain",
    url_domains=["k1.url"],
    content=[0.25, float("nan"), -0.0, 3.0],
    tokens=[4, 8, 15],
    aggregates=[1.0, 2.5],
    linked=LinkedPseudonyms(key_id="k2", sender="k2.s", sender_domain="k2.d", recipients=["k2.r"]),
)
EXAMPLE = TrainingExample(
    event_id="e-1", label=1, weight=1.0, source="ops_review", labelled_at=1_760_000_001.25, row=ROW
)


#: For each field of an example, another value.
EDITS: dict[str, object] = {
    "event_id": "e-2",
    "kind": "calendar",
    "label": 0,
    "weight": 1.0 + 2**-52,  # one ulp: another weight
    "source": "user_report",
    "labelled_at": 1_760_000_001.26,
    "row": ROW.model_copy(update={"model_version": "m-2"}),
}


def test_the_example_signature_covers_every_field_nested_rows_included() -> None:
    assert set(EDITS) == set(TrainingExample.model_fields) - {"signature"}
    for name, value in EDITS.items():
        assert example_canonical(EXAMPLE.model_copy(update={name: value})) != example_canonical(EXAMPLE), name
    row_edits: dict[str, object] = {
        "event_id": "e-9",
        "kind": "contacts",
        "timestamp": 1_760_000_000.6,
        "model_version": "m-9",
        "sender": "k1.other",
        "sender_domain": "k1.other-domain",
        "url_domains": ["k1.url", "k1.more"],
        "content": [0.25, float("nan"), 0.0, 3.0],  # -0.0 -> 0.0: another float
        "tokens": [4, 8, 16],
        "aggregates": [1.0, 2.5000000000000004],
        "linked": None,
        "original_event_id": "e-0",
    }
    assert set(row_edits) == set(ServedRow.model_fields), "every field of the row is edited below"
    for name, value in row_edits.items():
        edited = EXAMPLE.model_copy(update={"row": ROW.model_copy(update={name: value})})
        assert example_canonical(edited) != example_canonical(EXAMPLE), f"row.{name}"
    assert ROW.linked is not None
    for name in LinkedPseudonyms.model_fields:
        other: object = ["k2.x"] if name in ("recipients", "url_domains") else "k2.changed"
        linked = ROW.linked.model_copy(update={name: other})
        edited = EXAMPLE.model_copy(update={"row": ROW.model_copy(update={"linked": linked})})
        assert example_canonical(edited) != example_canonical(EXAMPLE), f"row.linked.{name}"
    # Framed: a token moved from one list to the next is another example.
    a = ROW.model_copy(update={"url_domains": ["ab", "c"]})
    b = ROW.model_copy(update={"url_domains": ["a", "bc"]})
    assert example_canonical(EXAMPLE.model_copy(update={"row": a})) != example_canonical(
        EXAMPLE.model_copy(update={"row": b})
    )


def test_a_signed_example_survives_the_wire_and_verifies() -> None:
    signed = AGENT.sign(EXAMPLE)
    assert signed.signature is not None
    received = AGENT.authentic(encode(signed))  # NaN, -0.0 and floats round-trip exactly
    assert received.signature == signed.signature
    assert AGENT.problem(received) is None


def test_forged_examples_are_refused_with_a_one_line_reason() -> None:
    signed = AGENT.sign(EXAMPLE)
    flipped_row = ROW.model_copy(update={"content": [9.0, 9.0, 9.0, 9.0]})
    forged = {
        "no signature": EXAMPLE,
        "another key": ExampleKeys(secrets.token_bytes(32)).sign(EXAMPLE),
        "label flipped after signing": signed.model_copy(update={"label": 0}),
        "weight raised after signing": signed.model_copy(update={"weight": 5.0}),
        "source upgraded after signing": AGENT.sign(
            EXAMPLE.model_copy(update={"source": "user_report", "weight": 0.0})
        ).model_copy(update={"source": "ops_review", "weight": 1.0}),
        "features edited after signing": signed.model_copy(update={"row": flipped_row}),
        "a label-source key": ExampleKeys(OPS_KEY).sign(EXAMPLE),
    }
    for what, record in forged.items():
        with pytest.raises(MalformedRecord) as caught:
            AGENT.authentic(encode(record))
        reason = caught.value.reason
        assert reason.startswith("unauthenticated training example: "), what
        assert "\n" not in reason
    assert AGENT.problem(EXAMPLE) == "unauthenticated training example: no signature"
    with pytest.raises(MalformedRecord):
        AGENT.authentic(b'{"event_id": "e-1"}')  # not an example at all


def test_the_previous_key_verifies_during_a_rotation_and_never_signs() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = ExampleKeys(old).sign(EXAMPLE)
    rotated = ExampleKeys(new, previous=old)
    assert rotated.problem(before) is None
    assert rotated.sign(EXAMPLE).signature == ExampleKeys(new).sign(EXAMPLE).signature
    assert ExampleKeys(new).problem(before) is not None, "without the previous key, refused"


def test_the_example_key_comes_from_settings_and_production_needs_one() -> None:
    development = ExampleKeys.from_settings(WardenSettings())
    assert development.problem(ExampleKeys.from_settings(WardenSettings()).sign(EXAMPLE)) is None
    production: dict[str, Any] = {"environment": "production", "privacy": {"hmac_key": secrets.token_hex(32)}}
    with pytest.raises(
        SettingsError, match=r"production needs WARDEN_FEEDBACK__TRAINING_EXAMPLE_KEY.*keygen"
    ):
        ExampleKeys.from_settings(WardenSettings(**production))
    key = secrets.token_hex(32)
    configured = ExampleKeys.from_settings(
        WardenSettings(**production, feedback={"training_example_key": key})
    )
    assert configured.problem(ExampleKeys(key.encode()).sign(EXAMPLE)) is None
    assert key not in repr(configured)
    with pytest.raises(SettingsError, match="TRAINING_EXAMPLE_KEY is 5 bytes"):
        load_settings(**production, feedback={"training_example_key": "short"})
    with pytest.raises(
        SettingsError, match="TRAINING_EXAMPLE_KEY is the same key as WARDEN_FEEDBACK__KEY_AUTO"
    ):
        load_settings(**production, feedback={"key_auto": key, "training_example_key": key})


def test_the_feedback_agent_signs_every_example_it_makes() -> None:
    label = SourceKeys({"ops_review": OPS_KEY}).sign(LABEL)
    made = example(Labelled(label, ROW, 1.0, label.at), FeedbackSettings(), AGENT)
    assert made.signature is not None
    assert AGENT.authentic(encode(made)).event_id == ROW.event_id
    assert ExampleKeys(secrets.token_bytes(32)).problem(made) is not None


def _reference(value: object) -> bytes:
    """The documented canonical form, one value at a time (the module packs lists in one go)."""
    if value is None:
        return b"~"
    if isinstance(value, BaseModel):
        data = b"".join(_reference(getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, list):
        data = b"".join(_reference(item) for item in value)
    elif isinstance(value, float):
        data = b"nan" if math.isnan(value) else struct.pack(">d", value).hex().encode()
    else:
        data = str(value).encode()
    return b"%d:%s" % (len(data), data)


def test_the_example_canonical_form_is_the_documented_one() -> None:
    fields = [name for name in TrainingExample.model_fields if name != "signature"]
    expected = b"warden-training-example-v1" + b"".join(_reference(getattr(EXAMPLE, n)) for n in fields)
    assert example_canonical(EXAMPLE) == expected
    mixed = EXAMPLE.model_copy(update={"row": ROW.model_copy(update={"content": [], "tokens": []})})
    assert example_canonical(mixed) == b"warden-training-example-v1" + b"".join(
        _reference(getattr(mixed, n)) for n in fields
    )


def test_a_features_record_is_read_only_under_a_valid_seal() -> None:
    record = b'{"event_id": "e-1", "timestamp": 1760000000.0}'
    previous = ExampleKeys(secrets.token_bytes(32))
    rotated = ExampleKeys(secrets.token_bytes(32), previous=previous._key)
    assert AGENT.sealed(record, AGENT.seal(record))
    assert AGENT.sealed(record, dict(AGENT.seal(record))), "headers as a mapping too"
    assert rotated.sealed(record, previous.seal(record)), "the previous key during a rotation"
    ((name, tag),) = AGENT.seal(record)
    forged = [
        None,
        [],
        [(name, b"")],
        [(name, tag.upper())],
        [(name, tag[:-1])],
        [("other-header", tag)],
        ExampleKeys(secrets.token_bytes(32)).seal(record),  # another key
        AGENT.seal(record + b" "),  # other bytes
        [(name, "not bytes")],
    ]
    for headers in forged:
        assert not AGENT.sealed(record, headers), headers  # type: ignore[arg-type]
    # A seal is never a label's or an example's signature under the same key: another prefix.
    assert tag.decode() != ExampleKeys(EXAMPLE_KEY).sign(EXAMPLE).signature
