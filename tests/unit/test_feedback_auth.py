"""Label sources are authenticated: an HMAC per source key over the whole label, checked before use."""

from __future__ import annotations

import json
import secrets

import pytest

from infra.cli import EXIT_USAGE, main
from infra.exceptions import SettingsError
from infra.settings import WardenSettings
from streams.agents.feedback import MAX_LABEL_BYTES, authentic
from streams.exceptions import MalformedRecord
from streams.feedback_auth import FIELDS, SourceKeys, canonical
from streams.records import Feedback, encode

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


def test_undecodable_oversized_and_unknown_source_labels_are_malformed() -> None:
    record = json.loads(encode(WORKER.sign(LABEL)))
    for bad in (
        {**record, "source": "admin"},  # an unknown source
        {**record, "signature": "zz" * 32},
        {**record, "at": "NaN"},
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
    assert code == EXIT_USAGE
    assert err.startswith(
        "warden: error: no key to sign ops_review labels: set WARDEN_FEEDBACK__KEY_OPS_REVIEW"
    )
    assert err.count("\n") == 1
