"""Content features of calendar invites and contact cards: numbers computed at ingest.

:class:`ActivityView` parses one raw calendar or contacts event once; each
:class:`ActivityFeature` reads one number off it. :data:`CALENDAR_CONTENT`
and :data:`CONTACTS_CONTENT` are the content parts of those kinds' schemas in
:mod:`features.definitions`. Raw text exists only here, inside the ingest stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from warden.features.ingest.content import _RISKY_TLDS, _SHORTENERS, spam_phrases
from warden.features.ingest.pseudonym import address_domain
from warden.features.ingest.text import extract_urls, fold_case, is_ip_literal, longest_run, url_hosts, words
from warden.streams.records import CalendarEvent, ContactsEvent

#: Words of lures common to invite and card scams (prizes, payments, account threats).
_LURES = re.compile(
    r"\b(prize|winner|won|claim|verify|verification|suspended|locked|payment|invoice|gift ?card|"
    r"bitcoin|crypto|investment|urgent|password|refund|reward|bonus|loan|lottery|click|"
    r"confirm|unpaid|overdue|wallet|airdrop|exclusive offer)\b",
    re.IGNORECASE,
)
#: :data:`_LURES` for :func:`~features.ingest.text.fold_case` text (the same matches, at C speed).
_LURES_FOLDED = re.compile(_LURES.pattern)
_KNOWN_CLIENTS = frozenset({"web", "ios", "android", "outlook", "desktop", "thunderbird"})
_RECURRENCE = {"none": 0.0, "daily": 1.0, "weekly": 2.0, "monthly": 3.0, "yearly": 4.0}


@dataclass(frozen=True)
class ActivityView:
    """A calendar or contacts event parsed once (ingest stage only: holds raw text)."""

    event: CalendarEvent | ContactsEvent
    account_domain: str
    recipients: tuple[str, ...]
    #: All free text of the event (title, description, location / name, organisation, note).
    text: str
    #: Hosts of the event's URLs and of URLs written in its text, in order.
    hosts: tuple[str, ...]
    #: The trusted event time (:func:`streams.provenance.trusted_event_time`), not the claimed one.
    at: float

    @classmethod
    def of(cls, event: CalendarEvent | ContactsEvent, *, at: float) -> ActivityView:
        if isinstance(event, CalendarEvent):
            account, recipients = event.organizer, tuple(event.invitees)
            text = "\n".join((event.title, event.description, event.location))
        else:
            account, recipients = event.owner, tuple(event.recipients)
            card = event.card
            text = "\n".join((card.display_name, card.organization, card.note))
        found = extract_urls(text[:100_000], limit=200)
        return cls(
            event=event,
            account_domain=address_domain(account),
            recipients=recipients,
            text=text,
            hosts=url_hosts([*event.urls[:200], *found]),
            at=at,
        )

    @property
    def calendar(self) -> CalendarEvent:
        if not isinstance(self.event, CalendarEvent):
            raise TypeError("not a calendar event")
        return self.event

    @property
    def contacts(self) -> ContactsEvent:
        if not isinstance(self.event, ContactsEvent):
            raise TypeError("not a contacts event")
        return self.event


@dataclass(frozen=True)
class ActivityFeature:
    """A number computed from one calendar or contacts event alone."""

    name: str
    compute: Callable[[ActivityView], float]
    doc: str


def _external_share(view: ActivityView) -> float:
    if not view.recipients:
        return 0.0
    return sum(address_domain(r) != view.account_domain for r in view.recipients) / len(view.recipients)


# Character counts iterate in C (``map`` of a ``str`` method), never a Python loop per character.


def _upper_ratio(text: str) -> float:
    letters = "".join(filter(str.isalpha, text[:5_000]))
    return sum(map(str.isupper, letters)) / len(letters) if letters else 0.0


def _digit_share(text: str) -> float:
    sample = text[:5_000]
    return sum(map(str.isdigit, sample)) / len(sample) if sample else 0.0


def _non_ascii(text: str) -> int:
    # Encoding drops every non-ASCII character (lone surrogates too) and keeps every ASCII one.
    return len(text) - len(text.encode("ascii", "ignore"))


def _hosts_where(view: ActivityView, test: Callable[[str], bool]) -> float:
    return float(sum(1 for host in view.hosts if host and test(host)))


def _tld(host: str) -> str:
    return host.rsplit(".", 1)[-1] if "." in host else ""


_SHARED: tuple[ActivityFeature, ...] = (
    ActivityFeature("recipient_count", lambda v: float(len(v.recipients)), "number of recipients"),
    ActivityFeature(
        "recipient_external_share", _external_share, "share of recipients outside the sender's domain"
    ),
    ActivityFeature(
        "recipient_domains",
        lambda v: float(len({address_domain(r) for r in v.recipients})),
        "distinct domains among the recipients",
    ),
    ActivityFeature("links", lambda v: float(len(v.hosts)), "links in the event"),
    ActivityFeature("link_domains", lambda v: float(len({h for h in v.hosts if h})), "distinct linked hosts"),
    ActivityFeature(
        "shortener_links",
        lambda v: _hosts_where(v, lambda h: h in _SHORTENERS),
        "links through a URL shortener",
    ),
    ActivityFeature("ip_links", lambda v: _hosts_where(v, is_ip_literal), "links to a bare IP address"),
    ActivityFeature(
        "risky_tld_links",
        lambda v: _hosts_where(v, lambda h: _tld(h) in _RISKY_TLDS),
        "links to a top-level domain abuse favours",
    ),
    ActivityFeature("text_chars", lambda v: float(len(v.text)), "length of the event's text"),
    ActivityFeature("text_upper_ratio", lambda v: _upper_ratio(v.text), "share of letters in capitals"),
    ActivityFeature("text_digit_share", lambda v: _digit_share(v.text), "share of digits in the text"),
    ActivityFeature(
        "text_punct_run", lambda v: float(longest_run(v.text[:5_000], "!?$*")), "longest run of ! ? $ *"
    ),
    ActivityFeature(
        "lure_words", lambda v: float(len(_LURES_FOLDED.findall(fold_case(v.text[:20_000])))), "lure words"
    ),
    ActivityFeature("spam_phrases", lambda v: float(spam_phrases(v.text[:20_000])), "classic spam phrases"),
    ActivityFeature(
        "non_ascii",
        lambda v: float(_non_ascii(v.text[:5_000])),
        "non-ASCII characters in the text",
    ),
)

CALENDAR_CONTENT: tuple[ActivityFeature, ...] = (
    *_SHARED,
    ActivityFeature(
        "action_code",
        lambda v: {"created": 0.0, "updated": 1.0, "cancelled": 2.0}[v.calendar.action],
        "created 0, updated 1, cancelled 2",
    ),
    ActivityFeature("title_chars", lambda v: float(len(v.calendar.title)), "title length"),
    ActivityFeature(
        "title_upper_ratio", lambda v: _upper_ratio(v.calendar.title), "share of title letters in capitals"
    ),
    ActivityFeature("description_chars", lambda v: float(len(v.calendar.description)), "description length"),
    ActivityFeature(
        "location_is_link",
        lambda v: float(bool(extract_urls(v.calendar.location[:2_000], limit=1))),
        "the location is a link",
    ),
    ActivityFeature(
        "duration_h", lambda v: (v.calendar.end - v.calendar.start) / 3600.0, "length of the meeting (hours)"
    ),
    ActivityFeature(
        "lead_time_h",
        # From the time the invite reached us: the claimed send time is the sender's to choose.
        lambda v: (v.calendar.start - v.at) / 3600.0,
        "hours between the invite and the meeting",
    ),
    ActivityFeature(
        "start_hour_utc",
        lambda v: float(int(v.calendar.start // 3600) % 24),
        "hour of day the meeting starts",
    ),
    ActivityFeature(
        "recurrence_code", lambda v: _RECURRENCE[v.calendar.recurrence], "none 0, daily 1 ... yearly 4"
    ),
    ActivityFeature(
        "client_known",
        lambda v: float(v.calendar.client.lower() in _KNOWN_CLIENTS),
        "sent from a known calendar app (not an API or unknown client)",
    ),
)

CONTACTS_CONTENT: tuple[ActivityFeature, ...] = (
    *_SHARED,
    ActivityFeature("action_shared", lambda v: float(v.contacts.action == "shared"), "the card was shared"),
    ActivityFeature(
        "card_emails", lambda v: float(len(v.contacts.card.emails)), "e-mail addresses on the card"
    ),
    ActivityFeature("card_phones", lambda v: float(len(v.contacts.card.phones)), "phone numbers on the card"),
    ActivityFeature(
        "card_email_external",
        lambda v: float(any(address_domain(e) != v.account_domain for e in v.contacts.card.emails)),
        "the card names an address outside the owner's domain",
    ),
    ActivityFeature(
        "name_digits",
        lambda v: float(sum(map(str.isdigit, v.contacts.card.display_name))),
        "digits in the card's name",
    ),
    ActivityFeature(
        "organization_present",
        lambda v: float(bool(v.contacts.card.organization)),
        "the card names an organisation",
    ),
    ActivityFeature("note_chars", lambda v: float(len(v.contacts.card.note)), "length of the card's note"),
    ActivityFeature("photo_present", lambda v: float(v.contacts.photo), "the card carries a photo"),
)


def activity_words(view: ActivityView) -> list[str]:
    """The words text evidence is learned from (turned into keyed buckets at ingest)."""
    event = view.event
    if isinstance(event, CalendarEvent):
        found = [f"t:{w}" for w in words(event.title, limit=50)]
        found += words(event.description[:100_000])
        found += [f"l:{w}" for w in words(event.location, limit=20)]
        found.append(f"client:{event.client.lower()[:32]}")
    else:
        card = event.card
        found = [f"n:{w}" for w in words(card.display_name, limit=20)]
        found += [f"o:{w}" for w in words(card.organization, limit=20)]
        found += words(card.note[:100_000])
    found += [f"host:{host}" for host in view.hosts[:50]]
    found.append(f"from:{view.account_domain}")
    return found
