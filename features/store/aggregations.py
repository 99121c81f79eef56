"""Behavioural aggregates, declared once and named from their parameters.

Each aggregate belongs to one *entity* kind (the sender account, its domain,
the sending IP, a URL's registrable domain, a recipient) and yields one number
per event, read at the event's time after the event itself is applied
(point in time: later events never leak into an earlier event's row). Where
an event names several entities of one kind (URL domains, recipients) the
values are combined (the largest, or for ages the youngest) and the name says
so: ``url_domain_events_24h_max``.

The same declarations drive the Redis store, the in-memory reference used for
offline recomputation and training, and the feature schema
(:mod:`features.store.operations` turns them into store operations).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

EntityKind = Literal[
    "sender",
    "sender_domain",
    "ip",
    "url_domain",
    "recipient",
    "organizer",
    "invitee",
    "card_owner",
    "card_recipient",
]
Combine = Literal["one", "max", "min"]

#: Fine buckets per sliding window: a window slides in steps of 1/60 of its length.
WINDOW_BUCKETS = 60
#: HyperLogLog buckets per distinct-count window (each PFCOUNT merges this many sketches).
DISTINCT_BUCKETS = 6
#: Reputation is kept in daily buckets over this many days.
REPUTATION_DAYS = 30


@dataclass(frozen=True)
class Entity:
    """A kind of thing aggregates are kept for, and how many one event may touch."""

    kind: EntityKind
    tag: str
    per_event: int
    #: How a reason on a verdict names it.
    label: str
    #: What its events are called in a reason ("mails", "invites", "shared cards").
    noun: str = "mails"

    @property
    def multiple(self) -> bool:
        return self.per_event > 1


SENDER = Entity("sender", "a", 1, "the sender")
SENDER_DOMAIN = Entity("sender_domain", "d", 1, "the sender's domain")
IP = Entity("ip", "i", 1, "the sending IP")
URL_DOMAIN = Entity("url_domain", "u", 10, "a linked domain")
RECIPIENT = Entity("recipient", "a", 20, "a recipient")
#: Calendar and contacts accounts share the account tag with mail, so one account's keys sit
#: in one slot; their families are their own (an invite is not counted as a mail).
ORGANIZER = Entity("organizer", "a", 1, "the organizer", "invites")
INVITEE = Entity("invitee", "a", 20, "an invitee", "invites")
CARD_OWNER = Entity("card_owner", "a", 1, "the card's owner", "card events")
CARD_RECIPIENT = Entity("card_recipient", "a", 20, "a card's recipient", "shared cards")
ENTITIES: tuple[Entity, ...] = (
    SENDER,
    SENDER_DOMAIN,
    IP,
    URL_DOMAIN,
    RECIPIENT,
    ORGANIZER,
    INVITEE,
    CARD_OWNER,
    CARD_RECIPIENT,
)


def span_name(seconds: int) -> str:
    """``60`` → ``1m``, ``3600`` → ``1h``, ``86400`` → ``24h``, ``604800`` → ``7d``."""
    if seconds % 86400 == 0 and seconds > 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class _Aggregate(ABC):
    entity: Entity

    @property
    @abstractmethod
    def stem(self) -> str:
        """The name without the entity prefix and the combination suffix."""

    @property
    def combine(self) -> Combine:
        return "max" if self.entity.multiple else "one"

    @property
    def name(self) -> str:
        suffix = "" if self.combine == "one" else f"_{self.combine}"
        return f"{self.entity.kind}_{self.stem}{suffix}"

    @property
    def description(self) -> str:
        """What the number means, for a reader (reasons on verdicts)."""
        return f"{self.stem.replace('_', ' ')} of {self.entity.label}"


@dataclass(frozen=True)
class WindowCount(_Aggregate):
    """Events in the sliding window ending at this event (60 buckets per window)."""

    window_s: int

    @property
    def stem(self) -> str:
        return f"events_{span_name(self.window_s)}"

    @property
    def description(self) -> str:
        return f"{self.entity.noun} of {self.entity.label} in the last {span_name(self.window_s)}"

    @property
    def bucket_s(self) -> int:
        return self.window_s // WINDOW_BUCKETS


@dataclass(frozen=True)
class DistinctCount(_Aggregate):
    """Distinct recipients or senders over HyperLogLog buckets covering the window.

    The window slides in steps of 1/:data:`DISTINCT_BUCKETS` of its length (4 h for 24 h).
    """

    field: Literal["recipients", "senders"]
    window_s: int

    @property
    def stem(self) -> str:
        return f"distinct_{self.field}_{span_name(self.window_s)}"

    @property
    def description(self) -> str:
        return f"distinct {self.field} of {self.entity.label} in the last {span_name(self.window_s)}"

    @property
    def buckets(self) -> int:
        return DISTINCT_BUCKETS

    @property
    def bucket_s(self) -> int:
        return self.window_s // DISTINCT_BUCKETS


@dataclass(frozen=True)
class FirstSeen(_Aggregate):
    """Hours since the entity's earliest event (0 for a new entity)."""

    @property
    def stem(self) -> str:
        return "age_h"

    @property
    def description(self) -> str:
        return f"hours since {self.entity.label} was first seen"

    @property
    def combine(self) -> Combine:
        return "min" if self.entity.multiple else "one"


@dataclass(frozen=True)
class DecayedRate(_Aggregate):
    """Events in the last hour, each weighted 2^(-age/half-life): a rate that forgets."""

    half_life_s: int

    @property
    def stem(self) -> str:
        return f"rate_hl{span_name(self.half_life_s)}"

    @property
    def window(self) -> WindowCount:
        """The window whose buckets the rate is computed from."""
        return WindowCount(self.entity, 3600)


@dataclass(frozen=True)
class NewRecipientShare(_Aggregate):
    """Share of this mail's recipients the sender never wrote to before."""

    @property
    def stem(self) -> str:
        return "new_recipient_share"


@dataclass(frozen=True)
class ReplyShare(_Aggregate):
    """Share of this mail's recipients who wrote to the sender before (a reply signal)."""

    @property
    def stem(self) -> str:
        return "reply_share"


@dataclass(frozen=True)
class AbuseReports(_Aggregate):
    """Feedback reputation: abuse reports about the entity, decayed with a half-life."""

    half_life_s: int

    @property
    def stem(self) -> str:
        return f"abuse_reports_hl{span_name(self.half_life_s)}"


@dataclass(frozen=True)
class AbuseShare(_Aggregate):
    """Feedback reputation: decayed abuse reports / (abuse + legit reports + 1)."""

    half_life_s: int

    @property
    def stem(self) -> str:
        return f"abuse_share_hl{span_name(self.half_life_s)}"


@dataclass(frozen=True)
class UnknownContactShare(_Aggregate):
    """Share of this event's recipients not among the account's known contacts (then learnt).

    The known-contact set is per account and shared by calendar and contacts:
    cards the account created and people it invited or shared a card with.
    """

    @property
    def stem(self) -> str:
        return "unknown_contact_share"

    @property
    def description(self) -> str:
        return f"share of recipients who are not contacts of {self.entity.label}"


@dataclass(frozen=True)
class AccountAge(_Aggregate):
    """Hours since the account's first calendar or contacts event (shared by both kinds)."""

    @property
    def stem(self) -> str:
        return "account_age_h"

    @property
    def description(self) -> str:
        return f"hours since {self.entity.label} was first seen on calendar or contacts"


Aggregate = (
    WindowCount
    | DistinctCount
    | FirstSeen
    | DecayedRate
    | NewRecipientShare
    | ReplyShare
    | AbuseReports
    | AbuseShare
    | UnknownContactShare
    | AccountAge
)

_WEEK = 7 * 86400

AGGREGATES: tuple[Aggregate, ...] = (
    WindowCount(SENDER, 60),
    WindowCount(SENDER, 3600),
    WindowCount(SENDER, 86400),
    DistinctCount(SENDER, "recipients", 86400),
    FirstSeen(SENDER),
    DecayedRate(SENDER, 600),
    NewRecipientShare(SENDER),
    ReplyShare(SENDER),
    AbuseReports(SENDER, _WEEK),
    AbuseShare(SENDER, _WEEK),
    WindowCount(SENDER_DOMAIN, 3600),
    WindowCount(SENDER_DOMAIN, 86400),
    DistinctCount(SENDER_DOMAIN, "senders", 86400),
    FirstSeen(SENDER_DOMAIN),
    AbuseReports(SENDER_DOMAIN, _WEEK),
    AbuseShare(SENDER_DOMAIN, _WEEK),
    WindowCount(IP, 60),
    WindowCount(IP, 3600),
    WindowCount(IP, 86400),
    DistinctCount(IP, "senders", 86400),
    FirstSeen(IP),
    WindowCount(URL_DOMAIN, 86400),
    DistinctCount(URL_DOMAIN, "senders", 86400),
    FirstSeen(URL_DOMAIN),
    AbuseReports(URL_DOMAIN, _WEEK),
    AbuseShare(URL_DOMAIN, _WEEK),
    WindowCount(RECIPIENT, 86400),
)

#: Linked domains are one population across mail, calendar and contacts: an event of any kind
#: counts in the same windows and reads the same feedback reputation.
URL_DOMAIN_AGGREGATES: tuple[Aggregate, ...] = tuple(a for a in AGGREGATES if a.entity is URL_DOMAIN)


def _account_aggregates(account: Entity) -> tuple[Aggregate, ...]:
    return (
        WindowCount(account, 3600),
        WindowCount(account, 86400),
        DistinctCount(account, "recipients", 86400),
        AccountAge(account),
        DecayedRate(account, 600),
        UnknownContactShare(account),
    )


CALENDAR_AGGREGATES: tuple[Aggregate, ...] = (
    *_account_aggregates(ORGANIZER),
    *URL_DOMAIN_AGGREGATES,
    WindowCount(INVITEE, 86400),
)
CONTACTS_AGGREGATES: tuple[Aggregate, ...] = (
    *_account_aggregates(CARD_OWNER),
    *URL_DOMAIN_AGGREGATES,
    WindowCount(CARD_RECIPIENT, 86400),
)
#: Each event kind's aggregates, in its schema order.
AGGREGATES_BY_KIND: dict[str, tuple[Aggregate, ...]] = {
    "mail": AGGREGATES,
    "calendar": CALENDAR_AGGREGATES,
    "contacts": CONTACTS_AGGREGATES,
}
