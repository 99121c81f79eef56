"""Decoding the raw input events at ingest: JSON parsed under the limits, checked against the
schemas of :mod:`streams.records`, addresses and URLs validated (:mod:`features.ingest.validation`).

Every refusal is a :class:`~streams.exceptions.MalformedRecord` whose reason
becomes the record's dead letter. Each check is linear in the record's size.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from warden.features.ingest.validation import check_identifiers, check_nesting
from warden.streams.exceptions import MalformedRecord
from warden.streams.provenance import reserved_id
from warden.streams.records import (
    ActivityKind,
    CalendarEvent,
    ContactsEvent,
    MailEvent,
    reason_of,
)
from warden.streams.settings import IngestSettings


def decode_mail_event(raw: bytes | None, limits: IngestSettings, now: float) -> MailEvent:
    """Validate one raw input record against the schema and the limits.

    Called by the ingest agent for every record on ``mail.events``; a
    :class:`MalformedRecord` means the record goes to dead letters.
    """
    event = _parsed(raw, MailEvent, limits)
    _check_limits(event, limits, now)
    return event


_Event = TypeVar("_Event", MailEvent, CalendarEvent, ContactsEvent)


def _parsed(raw: bytes | None, record_type: type[_Event], limits: IngestSettings) -> _Event:
    """The steps every kind takes first: size, UTF-8, nesting, then JSON into ``record_type``.

    Each is one pass at C speed over the bytes (see :mod:`features.ingest.validation`
    for the nesting check); the JSON decoder (pydantic's, in Rust) is linear.
    """
    if raw is None:
        raise MalformedRecord("empty record (no value)")
    if len(raw) > limits.max_payload_bytes:
        raise MalformedRecord(f"payload of {len(raw)} bytes exceeds the limit of {limits.max_payload_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRecord(f"payload is not UTF-8 (byte {exc.start})") from None
    check_nesting(raw, limits.max_nesting_depth)
    try:
        event = record_type.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise MalformedRecord(f"payload is not JSON: {first['msg'][:120]}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise MalformedRecord("payload is JSON but not an object") from None
        raise MalformedRecord(reason_of(exc)) from None
    if reserved_id(event.event_id):
        raise MalformedRecord("event_id: ends like a derived id (':r' and 12 hex digits), which is reserved")
    return event


def _check_identifiers(
    addresses: list[tuple[str, list[str]]], urls: list[str], limits: IngestSettings
) -> None:
    """URL lengths, then the address and URL checks of :mod:`features.ingest.validation`: the one path for
    identifiers, taken by every kind of event."""
    for url in urls:
        if len(url) > limits.max_url_chars:
            raise MalformedRecord(f"urls: a URL longer than {limits.max_url_chars} characters")
    check_identifiers(addresses, urls, limits.max_punycode_labels)


def _check_limits(
    event: MailEvent | CalendarEvent | ContactsEvent, limits: IngestSettings, now: float
) -> None:
    """The limits every kind of event is held to, then the one path for its identifiers."""
    addresses: list[tuple[str, list[str]]]
    if isinstance(event, MailEvent):
        people, name = len(event.recipients), "recipients"
        texts = {"subject": event.subject, "text": event.text, "html": event.html}
        addresses = [("sender", [event.sender]), ("recipients", event.recipients)]
        if len(event.headers) > limits.max_headers:
            raise MalformedRecord(f"headers: {len(event.headers)} exceeds the limit of {limits.max_headers}")
        for header, value in event.headers:
            if len(header) > limits.max_header_chars or len(value) > limits.max_header_chars:
                raise MalformedRecord(f"headers: a header longer than {limits.max_header_chars} characters")
    elif isinstance(event, CalendarEvent):
        people, name = len(event.invitees), "invitees"
        texts = {"title": event.title, "description": event.description, "location": event.location}
        addresses = [("organizer", [event.organizer]), ("invitees", event.invitees)]
        if event.end < event.start:
            raise MalformedRecord("end: before start")
    else:
        people, name = len(event.recipients), "recipients"
        texts = {"card.note": event.card.note}
        addresses = [
            ("owner", [event.owner]),
            ("recipients", event.recipients),
            ("card.emails", event.card.emails),
        ]
        if event.action == "shared" and not event.recipients:
            raise MalformedRecord("recipients: a shared card needs at least one recipient")
    if people > limits.max_recipients:
        raise MalformedRecord(f"{name}: {people} exceeds the limit of {limits.max_recipients}")
    if len(event.urls) > limits.max_urls:
        raise MalformedRecord(f"urls: {len(event.urls)} exceeds the limit of {limits.max_urls}")
    for field_name, text in texts.items():
        if len(text) > limits.max_text_chars:
            raise MalformedRecord(f"{field_name}: longer than {limits.max_text_chars} characters")
    if not (limits.min_event_time <= event.timestamp <= now + limits.max_clock_skew_s):
        raise MalformedRecord(f"timestamp: {event.timestamp!r} is outside the accepted range")
    _check_identifiers(addresses, event.urls, limits)


def decode_activity_event(
    raw: bytes | None, kind: ActivityKind, limits: IngestSettings, now: float
) -> CalendarEvent | ContactsEvent:
    """Validate one raw calendar or contacts record, like :func:`decode_mail_event`.

    Called by the ingest agent of ``calendar.events`` and ``contacts.events``;
    a :class:`MalformedRecord` means the record goes to dead letters. The same
    steps as mail: size, UTF-8, nesting, JSON, limits, and the same address and
    URL checks.
    """
    event: CalendarEvent | ContactsEvent = (
        _parsed(raw, CalendarEvent, limits) if kind == "calendar" else _parsed(raw, ContactsEvent, limits)
    )
    _check_limits(event, limits, now)
    return event
