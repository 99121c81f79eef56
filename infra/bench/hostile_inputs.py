"""Adversarial input families for every ingest stage that reads untrusted bytes.

Each :class:`Stage` is one part of ingest (framing, JSON, the nesting check,
validation, header and body parsing, words and token hashing, URL hosts and
domains, calendar and contacts features, and the whole of ingest) with the
input families an attacker would try against it. A family builds a record of
about ``size`` bytes (its size on the input topic) shaped at the worst case of
that stage: runs of the characters a pattern retries on, openers without
closers, separators that split into many small parts, lookalike labels that
pass every check but the last. A family grows by repeating its shape up to
``grows_to`` bytes, where a limit stops it (a field's length, a count).

Used by ``warden bench --only hostile`` (the worst CPU per 1 MB record) and by
the scaling tests (``tests/unit/test_linear_time.py``: doubling a family must
not more than ~2.5x its CPU), so both look at the same inputs. Every family
stays inside the default :class:`~streams.settings.IngestSettings` limits unless
its name says it tests one, so what it costs is what a sender can make a
worker pay.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warden.features.definitions import content_features, message_words
from warden.features.ingest.decode import _check_limits
from warden.features.ingest.extraction import to_activity_features, url_domains
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.ingest.record import ingest_activity_record, ingest_record
from warden.features.ingest.text import url_hosts
from warden.features.ingest.validation import check_nesting
from warden.features.store.aggregations import URL_DOMAIN
from warden.features.tokens import BUCKETS, MAX_TOKENS_PER_MESSAGE
from warden.streams.records import (
    CalendarEvent,
    ContactCard,
    ContactsEvent,
    MailEvent,
    SourcePosition,
    encode,
)
from warden.streams.settings import WardenSettings

#: The clock the families' records are ingested at (their timestamps are an hour before it).
NOW = 1_800_000_000.0
SETTINGS = WardenSettings()
LIMITS = SETTINGS.ingest
_KEY = Pseudonymiser(SETTINGS.privacy.hmac_key, SETTINGS.privacy.key_id)
_POSITION = SourcePosition(topic="mail.events", partition=0, offset=0)
#: The longest text a family writes into one field (under ``max_text_chars``).
_FIELD = 480_000
#: Room left for the rest of a record, so that a "1 MB" family stays under ``max_payload_bytes``.
_ROOM = 2_000
MB = 1_000_000


@dataclass(frozen=True)
class Family:
    """One shape of hostile input: ``make(size)`` is a stage input of about ``size`` record bytes."""

    name: str
    make: Callable[[int], Any]
    #: The size up to which ``make`` repeats its shape; beyond, a limit caps it.
    grows_to: int = MB


@dataclass(frozen=True)
class Stage:
    """One part of ingest and the hostile families it is measured on."""

    name: str
    doc: str
    run: Callable[[Any], object]
    families: tuple[Family, ...]


def size_of(value: Any) -> int:
    """The bytes of ``value`` on its input topic (raw bytes, or an event's encoded record)."""
    return len(value) if isinstance(value, bytes) else len(encode(value))


def _repeat(unit: str, size: int, cap: int = _FIELD) -> str:
    """``unit`` repeated to about ``size`` UTF-8 bytes, at most ``cap`` characters."""
    count = max(1, (size - _ROOM) // len(unit.encode("utf-8")))
    return (unit * count)[:cap]


def _grows_to(unit: str, cap: int = _FIELD) -> int:
    return min(MB, cap * len(unit.encode("utf-8")) // len(unit))


def mail(**fields: Any) -> MailEvent:
    """A mail event that passes every check, with ``fields`` changed."""
    values: dict[str, Any] = {
        "event_id": "hostile-1",
        "timestamp": NOW - 3600,
        "sender": "alice@example.com",
        "recipients": ["bob@example.org"],
    }
    values.update(fields)
    return MailEvent(**values)


def _fill(field: str, unit: str) -> Family:
    """One text field (``html``, ``text`` or ``subject``) of ``unit`` repeated."""
    return Family(
        f"{field} {unit[:16]!r}", lambda size: mail(**{field: _repeat(unit, size)}), _grows_to(unit)
    )


def _header(name: str, unit: str, length: int = 4_000) -> Family:
    """Up to ``max_headers`` ``name`` headers of ``length`` characters of ``unit``."""

    def make(size: int) -> MailEvent:
        value = (unit * (length // len(unit) + 1))[:length]
        count = max(1, min(LIMITS.max_headers, (size - _ROOM) // len(value.encode("utf-8"))))
        return mail(headers=[(name, value)] * count)

    return Family(f"{name}: {unit[:16]!r}", make, min(MB, LIMITS.max_headers * length))


def _many(
    field: str,
    make_item: Callable[[int], str],
    name: str,
    most: int,
    last: Callable[[str], str] | None = None,
) -> Family:
    """Distinct items ``make_item(i)`` in a list field, up to ``most`` of them (``last`` changes the last)."""

    def make(size: int) -> MailEvent | CalendarEvent:
        items: list[str] = []
        used = 0
        while used < size - _ROOM and len(items) < most:
            items.append(make_item(len(items)))
            used += len(items[-1].encode("utf-8")) + 4
        if last is not None:
            items[-1] = last(items[-1])
        if field == "invitees":
            return _calendar(invitees=items)
        return mail(**{field: items})

    per_item = len(make_item(0).encode("utf-8")) + 4
    return Family(name, make, min(MB, most * per_item))


def _label(i: int, alphabet: str, length: int = 60) -> str:
    """A label of ``length`` letters of ``alphabet``, distinct for each ``i``."""
    letters = []
    for _ in range(length):
        i, digit = divmod(i, len(alphabet))
        letters.append(alphabet[digit])
    return "".join(letters)


_CYRILLIC = "абвгдежзийклмнопрстуфхцчшщ"


def _idn_host(i: int) -> str:
    """Four Cyrillic labels of 60 letters under ``.рф``: a valid internationalised name of 243 characters."""
    return ".".join(_label(i * 4 + j, _CYRILLIC) for j in range(4)) + ".рф"


def _record_with(key: str, value: Any) -> bytes:
    record = json.loads(encode(mail()))
    record[key] = value
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def _raw(name: str, make: Callable[[int], bytes]) -> Family:
    return Family(name, lambda size: make(max(16, size - _ROOM)))


#: Issue 17's poison pill: more brackets than the depth limit, then one string of escaped quotes.
POISON_PILL = _raw('poison pill {x17 "\\"\\"...', lambda n: b"{" * 17 + b'"' + b'\\"' * (n // 2))

RAW_FAMILIES: tuple[Family, ...] = (
    POISON_PILL,
    _raw("open brackets [[[", lambda n: b"[" * n),
    _raw("bracket pairs [][]", lambda n: b"[" * 17 + b"[]" * (n // 2)),
    _raw('brackets in strings "[{"', lambda n: b"{" * 17 + b'"[{"' * (n // 4)),
    _raw('backslash run "\\\\\\', lambda n: b"[" * 17 + b'"' + b"\\" * n),
    _raw('quote run """', lambda n: b"[" * 17 + b'"' * n),
    _raw('quote, escaped backslash "\\\\"', lambda n: b"[" * 17 + b'"\\\\' * (n // 3)),
    _raw("4-byte UTF-8 text", lambda n: _record_with("text", "\U0001f600" * (n // 4))),
    _raw("\\u escapes", lambda n: _record_with("x", "\\u00e9" * (n // 6)).replace(b"\\\\u", b"\\u")),
    _raw("ignored keys", lambda n: _record_with("x", {f"k{i}": i for i in range(n // 12)})),
    _raw("long ignored list [1,1,...]", lambda n: _record_with("x", [1] * (n // 2))),
    _raw("huge integer", lambda n: _record_with("x", 0).replace(b'"x": 0', b'"x": 1' + b"0" * n)),
    _raw("long fraction", lambda n: _record_with("x", 0).replace(b'"x": 0', b'"x": 0.' + b"1" * n)),
    _raw("100k recipients", lambda n: _record_with("recipients", [f"r{i}@x.org" for i in range(n // 12)])),
    _raw("UTF-8 broken at the end", lambda n: b"\xc3\xa9" * (n // 2) + b"\xff"),
)

HEADER_FAMILIES: tuple[Family, ...] = (
    _header("Received", "from " + "(" * 300 + " " * 300),
    _header("Received", "from a (" + " " * 255),
    _header("Received", "from a (b" + " " * 253 + "[1.2.3"),
    _header("Received", "from " + "a" * 255 + "(" * 300),
    _header("Received", "[1.2.3.4 "),
    _header("Received", "from h (h [10.0.0.1]) by x; Mon, 1 Jan 2001 00:00:00 +0000 "),
    _header("Received", ";"),
    _header("From", ":"),
    _header("From", "("),
    _header("From", "@"),
    _header("From", '"'),
    _header("From", "<a"),
    _header("From", "\\"),
    _header("From", "a@"),
    _header("From", "[a"),
    _header("Reply-To", "a"),
    _header("Reply-To", "a."),
    _header("Return-Path", "a" * 64 + "@"),
    _header("Date", "+0000 ("),
    _header("Date", "Mon, 1 Jan 2001 00:00:00 +0000 "),
    _header("Message-ID", "<" + "a" * 60),
    _header("Content-Type", "charset = "),
    _header("Authentication-Results", "fail "),
    _header("X-Mailer", "word "),
)

BODY_FAMILIES: tuple[Family, ...] = tuple(
    _fill("html", unit)
    for unit in (
        "<",
        "<a" + "x" * 1998,
        "<a ",
        "<a href=",
        "<a href=x>" + "a." * 145 + "1",
        "<font",
        "<font size ",
        "<fontsize" + " " * 190,
        "display" + " " * 60,
        "font-size:" + " " * 60,
        "href" + " " * 60,
        "href= " + " " * 60,
        "&#x",
        "<img",
        "http://",
        "www.",
        "\u00e9<",
        "\u00e9<a ",
    )
) + tuple(
    _fill(field, unit)
    for field in ("text", "subject")
    for unit in ("AAA ", "AAA" + " " * 60, "free ", "click ", "$1", "!?$", "\u0130\u017f\u212a ", "\u00e9")
)

WORD_FAMILIES: tuple[Family, ...] = (
    Family("distinct words", lambda n: mail(text=" ".join(f"w{i:x}" for i in range(min(n, _FIELD) // 8)))),
    _fill("subject", "word "),
    _fill("text", "a"),
    _fill("text", "9"),
    Family("money run $1,1,1", lambda n: mail(text="$1" + _repeat(",1", n))),
    _fill("text", "$,"),
    _header("X-Mailer", "word ", 16_000),
    _header("Content-Type", "a$1 ", 16_000),
)

#: A path that brings a URL to about 480 bytes, so that 2,000 URLs (the limit) fill a 1 MB record.
_PAD = "/" + "p" * 400

URL_FAMILIES: tuple[Family, ...] = (
    _many(
        "urls",
        lambda i: f"http://{_label(i, 'abcdefghij', 60)}.example.com{_PAD}",
        "distinct hosts, one domain",
        2000,
    ),
    _many(
        "urls",
        lambda i: (
            "http://" + ".".join(_label(i * 80 + j, "ab", 2) for j in range(80)) + f".example.com{_PAD}"
        ),
        "hosts of 80 labels, one domain",
        2000,
    ),
    _many(
        "urls",
        lambda i: f"http://s{i}.xn--tdaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com{_PAD}",
        "one punycode domain, many hosts",
        2000,
    ),
    _many(
        "urls",
        lambda i: f"http://xn--{_label(i, 'abcdefghij', 50)}.com{_PAD}",
        "punycode-shaped labels",
        2000,
    ),
    _many("urls", lambda i: f"http://u:p@[{i}::1]:80{_PAD}", "user, port, brackets (urlsplit)", 2000),
    _many("urls", lambda i: f"http://{_idn_host(i)}/", "non-ASCII hosts", 2000),
    _many("urls", lambda i: f"http://s{i}.a.com{_PAD}", "short hosts", 2000),
)

VALIDATION_FAMILIES: tuple[Family, ...] = (
    _many("urls", lambda i: f"http://{_idn_host(i)}/", "IDN hosts, one script", 2000),
    _many("urls", lambda i: "http://a.com/" + _label(i, "éè", 4000), "non-ASCII URL paths", 2000),
    _many("urls", lambda i: "http://a.com/xn--" + _label(i, "ab", 4000), "ASCII URLs naming xn--", 2000),
    _many(
        "urls",
        lambda i: "http://" + ".".join(f"xn--{_label(j, 'bc', 5)}-kva" for j in range(i, i + 12)) + ".de/",
        "punycode labels (capped distinct)",
        2000,
    ),
    _many(
        "urls",
        lambda i: f"http://xn--{_label(i, 'abcdefghij', 1000)}.com/",
        "long punycode labels (refused)",
        2000,
    ),
    _many("urls", lambda i: "http://" + "é." * 125 + "com/", "125 one-letter IDN labels", 2000),
    _many("recipients", lambda i: _label(i, "абвгд", 300) + "@пример.рф", "non-ASCII local parts", 1000),
    _many("recipients", lambda i: f"a@{_label(i, _CYRILLIC, 60)}." + "ж" * 60 + ".рф", "IDN domains", 1000),
    _many(
        "urls",
        lambda i: f"http://{_idn_host(i)}/",
        "IDN hosts, U+200B in the last",
        2000,
        lambda u: u + "\u200b",
    ),
)


def _calendar(**fields: Any) -> CalendarEvent:
    values: dict[str, Any] = {
        "event_id": "hostile-c",
        "timestamp": NOW - 3600,
        "action": "created",
        "organizer": "alice@example.com",
        "invitees": ["bob@example.org"],
        "start": NOW,
        "end": NOW + 3600,
    }
    values.update(fields)
    return CalendarEvent(**values)


def _contacts(**fields: Any) -> ContactsEvent:
    values: dict[str, Any] = {
        "event_id": "hostile-k",
        "timestamp": NOW - 3600,
        "action": "created",
        "owner": "alice@example.com",
        "card": ContactCard(),
    }
    values.update(fields)
    return ContactsEvent(**values)


def _activity_text(field: str, unit: str) -> Family:
    def make(size: int) -> CalendarEvent | ContactsEvent:
        text = _repeat(unit, size)
        if field == "note":
            return _contacts(card=ContactCard(note=text))
        return _calendar(**{field: text})

    return Family(f"{field} {unit[:16]!r}", make, _grows_to(unit))


ACTIVITY_FAMILIES: tuple[Family, ...] = (
    *(
        _activity_text("description", unit)
        for unit in ("http://", "www.", "http://" + "a." * 100 + " ", "claim free ", "AAA!", "\u00e9", "$1")
    ),
    _activity_text("title", "AAA "),
    _activity_text("location", "http://"),
    _activity_text("note", "word "),
    _activity_text("note", "https://x" + "y" * 1990 + " "),
    _activity_text("note", "https://s.xn--tdaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com "),
    _many("invitees", lambda i: f"{_label(i, 'abc', 300)}@x{i}.org", "invitees with long addresses", 1000),
)


def _guarded(call: Callable[[Any], object]) -> Callable[[Any], object]:
    """``call``, where an exception ends the stage as the ingest boundary ends it (a dead letter)."""

    def run(value: Any) -> object:
        try:
            return call(value)
        except Exception as exc:  # the boundary's view: any failure is that record's dead letter
            return type(exc).__name__

    return run


def _framing(raw: bytes) -> object:
    return len(raw) <= LIMITS.max_payload_bytes and raw.decode("utf-8")


def _json(raw: bytes) -> object:
    return MailEvent.model_validate_json(raw, strict=True)


def _words(event: MailEvent) -> list[int]:
    return _KEY.token_buckets(message_words(event), BUCKETS, MAX_TOKENS_PER_MESSAGE)


def _activity(event: CalendarEvent | ContactsEvent) -> object:
    return to_activity_features(event, _KEY, _POSITION, 0, event_time=NOW)


def _url_domains(event: MailEvent) -> list[str]:
    return url_domains(url_hosts(event.urls), URL_DOMAIN.per_event)


def _ingest(value: bytes | MailEvent | CalendarEvent | ContactsEvent) -> object:
    if isinstance(value, CalendarEvent | ContactsEvent):
        position = SourcePosition(topic=f"{value.kind}.events", partition=0, offset=0)
        return ingest_activity_record(encode(value), value.kind, position, 0, SETTINGS, _KEY, NOW)
    raw = value if isinstance(value, bytes) else encode(value)
    return ingest_record(raw, _POSITION, 0, SETTINGS, _KEY, NOW)


_MAIL = (*HEADER_FAMILIES, *BODY_FAMILIES, *WORD_FAMILIES, *URL_FAMILIES, *VALIDATION_FAMILIES)

STAGES: tuple[Stage, ...] = (
    Stage("framing", "size and UTF-8 checks", _guarded(_framing), RAW_FAMILIES),
    Stage("nesting", "JSON nesting depth check", _guarded(lambda raw: check_nesting(raw, 16)), RAW_FAMILIES),
    Stage("json", "JSON decoding into a MailEvent", _guarded(_json), RAW_FAMILIES),
    Stage(
        "validation",
        "limits, addresses and URLs (IDNA, scripts)",
        _guarded(lambda event: _check_limits(event, LIMITS, NOW)),
        VALIDATION_FAMILIES,
    ),
    Stage("headers", "header parsing (content features)", _guarded(content_features), HEADER_FAMILIES),
    Stage("body", "body parsing (content features)", _guarded(content_features), BODY_FAMILIES),
    Stage("words", "words and token hashing", _guarded(_words), (*WORD_FAMILIES, *BODY_FAMILIES)),
    Stage(
        "urls",
        "URL hosts, registrable domains",
        _guarded(_url_domains),
        (*URL_FAMILIES, *VALIDATION_FAMILIES),
    ),
    Stage("activity", "calendar and contacts features", _guarded(_activity), ACTIVITY_FAMILIES),
    Stage(
        "ingest",
        "all of ingest: record to features or dead letter",
        _ingest,
        (*RAW_FAMILIES, *_MAIL, *ACTIVITY_FAMILIES),
    ),
)
