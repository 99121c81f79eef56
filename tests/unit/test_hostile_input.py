"""Property-based fuzzing of the input decoder and the ingest boundary.

Every hostile input must come out of :func:`serving.worker.agents.ingest.ingest_record`
as a dead letter with a one-line reason (never an exception), and the reason
must not repeat the raw identifier it refuses.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from warden.features.ingest import validation
from warden.features.ingest.decode import decode_mail_event
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.ingest.record import ingest_activity_record, ingest_record
from warden.streams.exceptions import MalformedRecord
from warden.streams.records import (
    DEAD_LETTER_WHOLE_BYTES,
    DeadLetter,
    MailEvent,
    MailFeatures,
    SourcePosition,
)
from warden.streams.settings import IngestSettings, WardenSettings

NOW = 1_800_000_000.0
SETTINGS = WardenSettings()
LIMITS = SETTINGS.ingest
PSEUDONYMS = Pseudonymiser(SETTINGS.privacy.hmac_key, SETTINGS.privacy.key_id)
POSITION = SourcePosition(topic="mail.events", partition=0, offset=7)
# The character tables, built now (as a worker does at start) rather than in a timed example.
validation.warm()

#: Invisible characters used to disguise identifiers: bidi overrides/isolates, zero-width, BOM.
INVISIBLE = ["\u202e", "\u202d", "\u202a", "\u2066", "\u2067", "\u2069", "\u200b", "\u200c", "\u200d"]
INVISIBLE += ["\u2060", "\ufeff", "\u00ad", "\u061c"]
#: Latin letters and lookalikes from other scripts (Cyrillic, Greek).
HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "i": "\u0456"}
HOMOGLYPHS |= {"x": "\u0445", "y": "\u0443", "l": "\u04cf", "n": "\u03b7", "v": "\u03bd"}


def good(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "e-1",
        "timestamp": 1_030_000_000.0,
        "sender": "alice@example.com",
        "recipients": ["bob@example.org"],
        "subject": "hello",
        "text": "hi there, see http://example.net/x",
        "urls": ["http://example.net/x"],
        "headers": [["Received", "from a by b"]],
    }
    record.update(changes)
    return record


def raw(record: Any) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


def ingest(payload: bytes | None, limits: IngestSettings = LIMITS) -> MailFeatures | DeadLetter:
    settings = SETTINGS.model_copy(update={"ingest": limits})
    return ingest_record(payload, POSITION, 1, settings, PSEUDONYMS, NOW)


def refused(payload: bytes | None, limits: IngestSettings = LIMITS) -> str:
    """The dead letter's reason for ``payload`` (fails the test if it was accepted)."""
    outcome = ingest(payload, limits)
    assert isinstance(outcome, DeadLetter), "a hostile record was accepted"
    assert outcome.reason
    assert "\n" not in outcome.reason
    assert not outcome.reason.startswith("internal error"), outcome.reason
    # The letter keeps the record whole, or (above its bound) an excerpt, its length and its digest.
    whole = payload or b""
    assert (outcome.payload_bytes, outcome.payload_sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    if outcome.payload_complete:
        assert outcome.payload() == whole
    else:
        assert len(whole) > DEAD_LETTER_WHOLE_BYTES
        assert whole.startswith(outcome.excerpt())
    assert outcome.source == POSITION
    return outcome.reason


def test_the_good_record_is_accepted() -> None:
    assert isinstance(ingest(raw(good())), MailFeatures)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(payload=st.binary(max_size=400))
@example(payload=b"\xff\xfe{}")
@example(payload=b'{"event_id": "\xed\xa0\x80"}')
def test_arbitrary_bytes_never_escape_as_an_exception(payload: bytes) -> None:
    outcome = ingest(payload)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason
    assert "\n" not in outcome.reason


@given(value=json_values)
def test_arbitrary_json_is_a_dead_letter_with_a_reason(value: Any) -> None:
    reason = refused(raw(value))
    assert len(reason) <= 300


@given(field=st.sampled_from(sorted(good())), value=json_values)
def test_wrong_types_in_any_field_never_raise(field: str, value: Any) -> None:
    outcome = ingest(raw(good(**{field: value})))
    if isinstance(outcome, DeadLetter):
        assert outcome.reason
        assert not outcome.reason.startswith("internal error"), outcome.reason
    else:  # the mutation happened to be valid: then the event holds exactly that value
        event = decode_mail_event(raw(good(**{field: value})), LIMITS, NOW)
        assert json.loads(event.model_dump_json())[field] == value


@given(
    timestamp=st.one_of(
        st.floats(max_value=LIMITS.min_event_time - 1e-3),
        st.floats(min_value=NOW + LIMITS.max_clock_skew_s + 1),
        st.just(float("nan")),
        st.integers(min_value=10**20, max_value=10**400),
        st.integers(max_value=-1),
    )
)
@example(timestamp=float("inf"))
@example(timestamp=float("-inf"))
def test_absurd_timestamps_are_refused(timestamp: float) -> None:
    assert "timestamp" in refused(raw(good(timestamp=timestamp)).replace(b"Infinity", b"1e999"))


@given(
    local=st.from_regex(r"[a-z]{1,10}", fullmatch=True),
    label=st.from_regex(r"[a-z]{2,12}", fullmatch=True),
    at=st.integers(0, 100),
    mark=st.sampled_from(INVISIBLE),
    where=st.sampled_from(["sender", "recipients", "urls"]),
)
def test_invisible_characters_in_identifiers_are_refused(
    local: str, label: str, at: int, mark: str, where: str
) -> None:
    address = f"{local}@{label}.com"
    at %= len(address) + 1
    disguised = address[:at] + mark + address[at:]
    record = {
        "sender": good(sender=disguised),
        "recipients": good(recipients=["bob@example.org", disguised]),
        "urls": good(urls=[f"https://{label}.com/{mark}login"]),
    }[where]
    reason = refused(raw(record))
    assert "invisible" in reason
    assert f"U+{ord(mark):04X}" in reason
    assert disguised not in reason
    assert f"{label}.com" not in reason


@given(
    label=st.from_regex(r"[a-z]{3,12}", fullmatch=True).filter(lambda s: any(c in HOMOGLYPHS for c in s)),
    pick=st.integers(0, 100),
    where=st.sampled_from(["sender", "recipients", "urls", "punycode"]),
)
def test_homoglyph_domains_are_refused_also_as_punycode(label: str, pick: int, where: str) -> None:
    positions = [i for i, c in enumerate(label) if c in HOMOGLYPHS]
    i = positions[pick % len(positions)]
    spoofed = label[:i] + HOMOGLYPHS[label[i]] + label[i + 1 :]
    if spoofed == label or len({c.isascii() for c in spoofed}) == 1:
        return  # only mixed labels are a homoglyph
    record = {
        "sender": good(sender=f"security@{spoofed}.com"),
        "recipients": good(recipients=[f"you@{spoofed}.com"]),
        "urls": good(urls=[f"https://www.{spoofed}.com/login"]),
        "punycode": good(urls=[f"https://www.{spoofed.encode('idna').decode()}.com/login"]),
    }[where]
    reason = refused(raw(record))
    assert "homoglyph" in reason, reason
    assert "CYRILLIC" in reason or "GREEK" in reason, reason
    assert spoofed not in reason


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (good(sender="a@xn--zz-.com"), "punycode"),
        (good(urls=["http://xn--999999999999a.example/"]), "punycode"),
        (good(sender="a@\uff50aypal.com"), "NFKC"),  # fullwidth p
        (good(urls=["http://\uff50\uff41ypal.com/"]), "NFKC"),
        (good(recipients=["a@exa\u0000mple.org"]), "control"),
        (good(recipients=["a@exa mple.org"]), "not an e-mail address"),
        (good(sender="p\u0430ypal@example.com"), "local part mixes scripts"),
        (good(urls=["x" * (LIMITS.max_url_chars + 1)]), "URL longer"),
        (good(headers=[["Received", "y" * (LIMITS.max_header_chars + 1)]]), "header longer"),
        (good(subject="s" * (LIMITS.max_text_chars + 1)), "subject: longer"),
        (good(extra={"a": json.loads("[" * 20 + "1" + "]" * 20)}), "nesting depth exceeds"),
    ],
)
def test_identifier_tricks_and_limits_give_clear_reasons(record: dict[str, Any], reason: str) -> None:
    assert reason in refused(raw(record))


def test_east_asian_scripts_and_plain_idna_are_accepted() -> None:
    """Japanese labels mix Han, Hiragana and Katakana legitimately; an IDNA name is no trick."""
    for host in ("\u6771\u4eac\u3068\u30ab\u30bf.jp", "b\u00fccher.de", "xn--bcher-kva.de"):
        assert isinstance(ingest(raw(good(urls=[f"http://{host}/"], sender=f"a@{host}"))), MailFeatures)


def test_ten_megabyte_payload_is_refused_before_parsing() -> None:
    payload = raw(good(text="A" * 10_000_000))
    assert len(payload) > 10_000_000
    assert "exceeds the limit" in refused(payload)


def test_hundred_thousand_recipients_are_refused_by_size_and_by_count() -> None:
    many = [f"r{i}@example.org" for i in range(100_000)]
    assert "exceeds the limit" in refused(raw(good(recipients=many)))
    roomy = LIMITS.model_copy(update={"max_payload_bytes": 20_000_000})
    assert "recipients: 100000 exceeds the limit of 1000" in refused(raw(good(recipients=many)), roomy)


@pytest.mark.parametrize("depth", [17, 199, 201, 5_000, 100_000])
def test_deep_nesting_is_refused_without_recursion(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    for payload in (nested, b'{"event_id": "e", "x": ' + nested + b"}"):
        reason = refused(payload)
        assert "nesting depth exceeds" in reason or "not JSON" in reason


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    record = good(subject="[" * 100, text='"[[[[' * 50 + "\\" * 3)
    assert isinstance(ingest(raw(record)), MailFeatures)


def test_limits_are_settings() -> None:
    tight = LIMITS.model_copy(update={"max_nesting_depth": 3, "max_url_chars": 256})
    assert isinstance(ingest(raw(good()), tight), MailFeatures)
    assert "nesting depth exceeds" in refused(raw(good(extra=[[[1]]])), tight)
    assert "URL longer" in refused(raw(good(urls=["http://e.com/" + "p" * 300])), tight)
    loaded = IngestSettings.model_validate({"max_nesting_depth": 40, "max_header_chars": 300})
    assert loaded.max_nesting_depth == 40


huge_strings = st.text(min_size=0, max_size=50).map(lambda s: s * 20_000)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(field=st.sampled_from(["subject", "text", "html", "sender", "event_id"]), value=huge_strings)
def test_huge_strings_never_raise(field: str, value: str) -> None:
    outcome = ingest(raw(good(**{field: value})))
    if isinstance(outcome, DeadLetter):
        assert outcome.reason
        assert not outcome.reason.startswith("internal error"), outcome.reason


unicode_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


@given(
    subject=unicode_text,
    text=unicode_text,
    html=unicode_text.map(lambda s: f"<a href='http://x.org/{s}'>{s}</a><p>{s}"),
    urls=st.lists(unicode_text.map(lambda s: "http://" + s), max_size=5),
    headers=st.lists(st.tuples(unicode_text, unicode_text), max_size=5),
)
def test_unicode_content_is_scored_or_refused_never_raises(
    subject: str, text: str, html: str, urls: list[str], headers: list[tuple[str, str]]
) -> None:
    record = good(subject=subject, text=text, html=html, urls=urls, headers=headers)
    outcome = ingest(raw(record))
    if isinstance(outcome, DeadLetter):
        assert not outcome.reason.startswith("internal error"), outcome.reason
        with pytest.raises(MalformedRecord):
            decode_mail_event(raw(record), LIMITS, NOW)
    else:
        assert outcome.event_id == "e-1"
        assert MailEvent.model_validate_json(raw(record)).subject == subject


# ---------------------------------------------------------------- calendar and contacts (one validation path)


def _invite(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "c-1",
        "timestamp": 1_767_225_600.0,
        "action": "created",
        "organizer": "alice@example.com",
        "invitees": ["bob@example.org"],
        "title": "Sync",
        "urls": ["https://example.net/agenda"],
        "start": 1_767_229_200.0,
        "end": 1_767_232_800.0,
    }
    record.update(changes)
    return record


def _card(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "k-1",
        "timestamp": 1_767_225_600.0,
        "action": "shared",
        "owner": "alice@example.com",
        "recipients": ["bob@example.org"],
        "card": {"display_name": "Support", "emails": ["help@example.org"], "note": "call"},
        "urls": ["https://example.net/"],
    }
    record.update(changes)
    return record


def _activity_reason(kind: str, record: Any) -> str:
    payload = raw(record) if not isinstance(record, bytes) else record
    position = SourcePosition(topic=f"{kind}.events", partition=0, offset=3)
    outcome = ingest_activity_record(payload, kind, position, 1, SETTINGS, PSEUDONYMS, NOW)  # type: ignore[arg-type]
    assert isinstance(outcome, DeadLetter), "a hostile record was accepted"
    assert not outcome.reason.startswith("internal error"), outcome.reason
    return outcome.reason


@pytest.mark.parametrize(
    ("kind", "record", "reason"),
    [
        ("calendar", _invite(x=json.loads("[" * 20 + "1" + "]" * 20)), "nesting depth exceeds"),
        ("contacts", _card(x=json.loads("[" * 20 + "1" + "]" * 20)), "nesting depth exceeds"),
        ("calendar", b"{" * 17 + b'"' + b'\\"' * 20_000, "nesting depth exceeds"),
        ("contacts", b"[" * 17 + b'"' + b'\\"' * 20_000, "nesting depth exceeds"),
        (
            "calendar",
            _invite(organizer="security@p\u0430ypal.com"),
            "organizer: a domain label mixes scripts",
        ),
        (
            "calendar",
            _invite(invitees=["bob@example.org", "a@exa\u200bmple.org"]),
            "invitees: holds the invisible",
        ),
        (
            "calendar",
            _invite(urls=["https://example.com/\u202egnp.exe"]),
            "urls: holds the invisible character U+202E",
        ),
        ("calendar", _invite(urls=["http://xn--pypal-4ve.com/login"]), "homoglyph"),
        ("calendar", _invite(urls=["x" * (LIMITS.max_url_chars + 1)]), "URL longer"),
        ("contacts", _card(owner="a@xn--zz-.com"), "owner: a domain label is not valid punycode"),
        (
            "contacts",
            _card(recipients=["p\u0430ypal@example.com"]),
            "recipients: the local part mixes scripts",
        ),
        ("contacts", _card(card={"emails": ["help@exa mple.org"]}), "card.emails"),
        (
            "contacts",
            _card(card={"emails": ["help@\uff50aypal.com"]}),
            "card.emails: a domain label is not in",
        ),
        ("contacts", _card(urls=["http://\u0440\u0430ypal.com/"]), "urls: a domain label mixes scripts"),
    ],
)
def test_calendar_and_contacts_take_the_same_checks_as_mail(kind: str, record: Any, reason: str) -> None:
    assert reason in _activity_reason(kind, record)


def test_clean_calendar_and_contacts_records_pass_the_checks() -> None:
    for kind, record in (("calendar", _invite()), ("contacts", _card())):
        position = SourcePosition(topic=f"{kind}.events", partition=0, offset=3)
        outcome = ingest_activity_record(raw(record), kind, position, 1, SETTINGS, PSEUDONYMS, NOW)  # type: ignore[arg-type]
        assert not isinstance(outcome, DeadLetter), outcome


#: Distinct valid punycode labels (xn--bcher0-..., xn--bcher1-...).
_IDN_LABELS = [f"b\u00fccher{i}".encode("idna").decode() for i in range(100)]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (good(urls=["http://" + "a" * 64 + ".xn--p1ai/"]), "a domain label longer than 63"),
        (good(urls=["http://" + "\u00e9." * 130 + "com/"]), "a domain longer than 253"),
        (
            good(urls=[f"http://{_IDN_LABELS[i]}.example/" for i in range(LIMITS.max_punycode_labels + 1)]),
            f"more than {LIMITS.max_punycode_labels} distinct punycode (xn--) labels",
        ),
    ],
)
def test_dns_limits_and_the_punycode_budget(record: dict[str, Any], reason: str) -> None:
    assert reason in refused(raw(record))


def test_repeated_punycode_labels_count_once() -> None:
    repeated = good(urls=["http://www.xn--bcher-kva.example/"] * 500, sender="a@xn--bcher-kva.example")
    assert isinstance(ingest(raw(repeated)), MailFeatures)
