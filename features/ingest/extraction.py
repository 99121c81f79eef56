"""The ingest transform: a validated raw mail becomes pseudonyms and numbers.

This is the last place raw identifiers and text exist. Training and the
ingest agent both call :func:`to_features`, so what a model learns from is
exactly what it is served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import tldextract
import tldextract.tldextract

from warden.features.definitions import message_words
from warden.features.exceptions import IncompatibleLibrary
from warden.features.ingest.activity import CALENDAR_CONTENT, CONTACTS_CONTENT, ActivityView, activity_words
from warden.features.ingest.content import CONTENT, MailView
from warden.features.ingest.pseudonym import KeyRing, Pseudonymiser, address_domain
from warden.features.ingest.text import is_ip_literal
from warden.features.store.aggregations import URL_DOMAIN
from warden.features.tokens import BUCKETS, MAX_TOKENS_PER_MESSAGE
from warden.streams.records import (
    ActivityFeatures,
    CalendarEvent,
    ContactsEvent,
    LinkedPseudonyms,
    MailEvent,
    MailFeatures,
    SourcePosition,
)

# The public-suffix snapshot bundled with tldextract: never fetched from the network.
_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

# tldextract decodes each ``xn--`` label it looks at with the idna package, up to ~1.3 ms for a
# label of 60 characters, and again for every host that repeats the label: 2,000 hosts under one
# such domain cost 2.6 s. Within one url_domains call each distinct label is decoded once (the
# same function, its results kept for the length of the call only: no host text outlives it).
# That replaces tldextract's private module function ``_decode_punycode``, which its suffix lookup
# calls by its global name; pyproject.toml pins the versions this was checked on, and an import
# that does not find the function stops here rather than run without the bound.


def _library_decoder() -> Callable[[str], str]:
    """tldextract's label decoder, the function replaced below; IncompatibleLibrary if it is gone."""
    found = getattr(tldextract.tldextract, "_decode_punycode", None)
    if not callable(found):
        raise IncompatibleLibrary(
            f"tldextract {getattr(tldextract, '__version__', '?')} has no _decode_punycode: "
            "warden.features.ingest.extraction bounds IDNA decoding through it; "
            "install the tldextract version range of pyproject.toml"
        )
    return cast(Callable[[str], str], found)


_decode_label = _library_decoder()
_decoded_labels: dict[str, str] | None = None


def _decode_label_once(label: str) -> str:
    if _decoded_labels is None:
        return _decode_label(label)
    found = _decoded_labels.get(label)
    if found is None:
        found = _decoded_labels[label] = _decode_label(label)
    return found


setattr(tldextract.tldextract, "_decode_punycode", _decode_label_once)  # noqa: B010 (a library function)


def registrable_domain(host: str) -> str:
    """``www.bbc.co.uk`` → ``bbc.co.uk``; IP literals and bare names stay as they are."""
    if not host or is_ip_literal(host):
        return host
    parts = _SUFFIXES(host)
    return parts.top_domain_under_public_suffix or host


def sending_ip(view: MailView) -> str:
    """The first public relay IP in the Received chain, newest hop first ("" when none)."""
    return view.public_ips[0] if view.public_ips else ""


def url_domains(hosts: tuple[str, ...], limit: int) -> list[str]:
    """Registrable domains of ``hosts``, first-seen order, until ``limit`` are found."""
    global _decoded_labels
    domains: dict[str, None] = {}
    seen: set[str] = set()
    _decoded_labels = {}
    try:
        for host in hosts:
            if host and host not in seen:  # a repeated host adds no domain: look each up once
                seen.add(host)
                domains.setdefault(registrable_domain(host), None)
            if len(domains) >= limit:
                break
    finally:
        _decoded_labels = None
    return list(domains)


def to_features(
    event: MailEvent,
    pseudonymiser: Pseudonymiser | KeyRing,
    source: SourcePosition,
    produced_at_ms: int,
    now: float | None = None,
    *,
    event_time: float,
    digest: str = "",
) -> MailFeatures:
    """Pseudonymise the identifiers of ``event`` and compute its content features.

    ``event_time`` is the trusted time the aggregates advance on (ingest:
    :func:`streams.provenance.trusted_event_time`; training: the corpus
    mail's receiving server's clock), never the ``timestamp`` the sender
    claims. ``digest`` names the input record's bytes (ingest:
    :func:`streams.provenance.content_digest`; "" offline).

    ``now`` (the worker's clock, given by ingest) picks the served key
    generation of the pseudonymiser's key ring and, during a rotation's grace
    period, the linked one. Without ``now`` (training) the generation served
    by wall clock is used and nothing is linked.
    """
    view = MailView.of(event)
    ring = pseudonymiser if isinstance(pseudonymiser, KeyRing) else pseudonymiser.ring
    stamp = _Stamp(source, produced_at_ms, event_time, digest)
    if ring is not None and now is None:
        return _to_features(event, view, ring.current(), stamp)
    if ring is not None and now is not None:
        chosen = ring.at(now)
        served = _to_features(event, view, chosen.served, stamp)
        if chosen.linked is None:
            return served
        return served.model_copy(update={"linked": linked_pseudonyms(event, chosen.linked, view)})
    assert isinstance(pseudonymiser, Pseudonymiser)  # a KeyRing always has a ring (itself)
    return _to_features(event, view, pseudonymiser, stamp)


def linked_pseudonyms(
    event: MailEvent, pseudonymiser: Pseudonymiser, view: MailView | None = None
) -> LinkedPseudonyms:
    """The event's identifiers under another key generation (the linked one of a rotation)."""
    view = view or MailView.of(event)
    ip = sending_ip(view)
    return LinkedPseudonyms(
        key_id=pseudonymiser.key_id,
        sender=pseudonymiser.address(event.sender),
        sender_domain=pseudonymiser.domain(address_domain(event.sender)),
        recipients=sorted({pseudonymiser.address(r) for r in event.recipients}),
        sending_ip=pseudonymiser.ip(ip) if ip else "",
        url_domains=[pseudonymiser.host(d) for d in url_domains(view.hosts, URL_DOMAIN.per_event)],
    )


@dataclass(frozen=True)
class _Stamp:
    """Where and when a record was read, and its digest: what a features record carries besides content."""

    source: SourcePosition
    produced_at_ms: int
    event_time: float
    digest: str


def _to_features(
    event: MailEvent, view: MailView, pseudonymiser: Pseudonymiser, stamp: _Stamp
) -> MailFeatures:
    recipients = sorted({pseudonymiser.address(r) for r in event.recipients})
    domains = url_domains(view.hosts, URL_DOMAIN.per_event)
    ip = sending_ip(view)
    return MailFeatures(
        event_id=event.event_id,
        timestamp=stamp.event_time,
        key_id=pseudonymiser.key_id,
        sender=pseudonymiser.address(event.sender),
        sender_domain=pseudonymiser.domain(address_domain(event.sender)),
        recipients=recipients,
        sending_ip=pseudonymiser.ip(ip) if ip else "",
        url_domains=[pseudonymiser.host(d) for d in domains],
        content=[float(feature.compute(view)) for feature in CONTENT],
        tokens=pseudonymiser.token_buckets(
            message_words(event, url_hosts=view.hosts), BUCKETS, MAX_TOKENS_PER_MESSAGE
        ),
        source=stamp.source,
        produced_at_ms=stamp.produced_at_ms,
        digest=stamp.digest,
    )


def to_activity_features(
    event: CalendarEvent | ContactsEvent,
    pseudonymiser: Pseudonymiser,
    source: SourcePosition,
    produced_at_ms: int,
    *,
    event_time: float,
    digest: str = "",
) -> ActivityFeatures:
    """Pseudonymise a calendar or contacts event and compute its content features.

    ``event_time`` and ``digest`` as for :func:`to_features`.

    The same pseudonymiser as mail: one account has one pseudonym across all
    three kinds, and a linked domain one pseudonym, so they join in the store.
    """
    view = ActivityView.of(event, at=event_time)
    if isinstance(event, CalendarEvent):
        account, content, contacts = event.organizer, CALENDAR_CONTENT, []
    else:
        account, content = event.owner, CONTACTS_CONTENT
        contacts = (
            sorted({pseudonymiser.address(e) for e in event.card.emails}) if event.action == "created" else []
        )
    return ActivityFeatures(
        kind=event.kind,
        event_id=event.event_id,
        timestamp=event_time,
        key_id=pseudonymiser.key_id,
        action=event.action,
        sender=pseudonymiser.address(account),
        sender_domain=pseudonymiser.domain(address_domain(account)),
        recipients=sorted({pseudonymiser.address(r) for r in view.recipients}),
        contacts=contacts,
        url_domains=[pseudonymiser.host(d) for d in url_domains(view.hosts, URL_DOMAIN.per_event)],
        content=[float(feature.compute(view)) for feature in content],
        tokens=pseudonymiser.token_buckets(activity_words(view), BUCKETS, MAX_TOKENS_PER_MESSAGE),
        source=source,
        produced_at_ms=produced_at_ms,
        digest=digest,
    )
