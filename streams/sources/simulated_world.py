"""The simulated world of the calendar and contacts simulator: its parameters, its accounts and
the events emitted so far, with the names, domains and words the population and the campaigns share.

:mod:`streams.sources.simulator` drives it through the days (normal use) and
:mod:`streams.sources.simulated_campaigns` adds the abuse campaigns; both read it, it
reads neither.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from warden.streams.records import CalendarEvent, ContactCard, ContactsEvent

CampaignType = Literal["fresh_invite_spam", "compromised_burst", "low_and_slow", "card_spam"]
CAMPAIGN_TYPES: tuple[CampaignType, ...] = get_args(CampaignType)
#: The label of an event that belongs to no campaign.
LEGIT = "legit"
#: 2026-01-01T00:00:00Z: the default first day (accepted by ingest's timestamp range).
DEFAULT_START = 1_767_225_600.0

_LAST = ("smith", "garcia", "kim", "novak", "okafor", "rossi", "silva", "tanaka", "weber", "young", "lopez")
_ORGS = ("northwind.com", "contoso.org", "fabrikam.net", "tailspin.io", "wingtip.co.uk", "litware.de")
#: Shared by the population and the campaigns (names, domains, words).
FIRST_NAMES: tuple[str, ...] = (
    *("ana", "ben", "carla", "dev", "elena", "farid", "grace", "hugo", "ines", "jon", "kira", "liam"),
    *("maya", "noah", "olga", "pavel", "quinn", "rosa", "sam", "tara", "umar", "vera", "wen", "yusuf"),
)
WEBMAIL = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "gmx.net")
WORDS = ("atlas", "beacon", "cedar", "delta", "ember", "falcon", "granite", "harbor", "iris", "juniper")
SPAM_TLDS = ("xyz", "top", "click", "info", "online", "shop")


@dataclass(frozen=True)
class SimulationParams:
    """What the simulator is asked to produce; every field is a ``warden simulate`` option."""

    seed: int = 1
    accounts: int = 400
    days: float = 7.0
    start: float = DEFAULT_START
    #: Average contact-circle size (colleagues and outsiders).
    circle: int = 12
    #: Average invites a day of an ordinary account on a working day.
    invites_per_day: float = 1.2
    #: Average new or shared cards a day of an ordinary account.
    cards_per_day: float = 0.25
    #: Share of accounts that join during the run (not at its start).
    late_joiners: float = 0.15
    #: Share of accounts that now and then run webinars for many outsiders.
    webinar_hosts: float = 0.03
    #: Average abuse campaigns started a day (over all types).
    campaigns_per_day: float = 4.0
    #: Relative weight of each campaign type (0 leaves a type out entirely).
    mix: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CAMPAIGN_TYPES, 1.0))

    def __post_init__(self) -> None:
        unknown = set(self.mix) - set(CAMPAIGN_TYPES)
        if unknown:
            raise ValueError(
                f"unknown campaign type(s) {sorted(unknown)}; known: {', '.join(CAMPAIGN_TYPES)}"
            )
        if any(w < 0 for w in self.mix.values()) or self.accounts < 10 or self.days <= 0:
            raise ValueError("mix weights must be >= 0, accounts >= 10 and days > 0")


@dataclass(frozen=True)
class Simulated:
    """One simulated event and its ground truth (never sent on a topic)."""

    event: CalendarEvent | ContactsEvent
    label: int
    #: The campaign type, or ``legit``.
    campaign: str
    campaign_id: str = ""
    #: Account history from before the simulated window (not trained or evaluated on).
    history: bool = False


@dataclass
class _Account:
    address: str
    domain: str
    tz_h: float
    activity: float
    joins: float
    circle: list[str] = field(default_factory=list)
    webinars: bool = False


class World:
    """The simulation being generated: its accounts, its random generator and the events so far."""

    def __init__(self, params: SimulationParams) -> None:
        self.p = params
        self.rng = random.Random(params.seed)
        self.out: list[Simulated] = []
        self.counter = 0
        self.accounts = [self._account(i) for i in range(params.accounts)]
        for account in self.accounts:
            self._circle(account)

    # -- population ------------------------------------------------------------------------
    def local_name(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)}.{self.rng.choice(_LAST)}{self.rng.randint(1, 999)}"

    def stranger(self) -> str:
        return f"{self.local_name()}@{self.rng.choice(_ORGS + WEBMAIL + ('example.net', 'mailbox.org'))}"

    def _account(self, index: int) -> _Account:
        rng, p = self.rng, self.p
        domain = rng.choice(_ORGS) if rng.random() < 0.7 else rng.choice(WEBMAIL)
        late = rng.random() < p.late_joiners
        return _Account(
            address=f"{self.local_name()}@{domain}",
            domain=domain,
            tz_h=rng.choice((-8.0, -5.0, 0.0, 1.0, 2.0, 5.5, 8.0, 9.0)),
            activity=rng.lognormvariate(0.0, 0.6),
            joins=p.start + (rng.uniform(0.5, p.days * 0.8) * 86400 if late else rng.uniform(0, 3600)),
            webinars=rng.random() < p.webinar_hosts,
        )

    def _circle(self, account: _Account) -> None:
        size = max(2, int(self.rng.gauss(self.p.circle, self.p.circle / 3)))
        colleagues = [a.address for a in self.accounts if a.domain == account.domain and a is not account]
        others = [a.address for a in self.accounts if a is not account]
        for _ in range(size):
            pool = colleagues if colleagues and self.rng.random() < 0.6 else others
            account.circle.append(self.rng.choice(pool) if self.rng.random() < 0.8 else self.stranger())
        account.circle = list(dict.fromkeys(account.circle))

    # -- emitting --------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.p.seed}-{self.counter}"

    def invite(
        self,
        ts: float,
        organizer: str,
        invitees: Sequence[str],
        title: str,
        description: str,
        *,
        truth: tuple[int, str, str] = (0, LEGIT, ""),
        action: Literal["created", "updated", "cancelled"] = "created",
        location: str = "",
        urls: Sequence[str] = (),
        lead_h: float = 24.0,
        duration_h: float = 1.0,
        recurrence: Literal["none", "daily", "weekly", "monthly", "yearly"] = "none",
        client: str = "web",
    ) -> None:
        start = math.floor((ts + lead_h * 3600) / 900) * 900 + 900
        event = CalendarEvent(
            event_id=self._id("cal"),
            timestamp=round(ts, 3),
            action=action,
            organizer=organizer,
            invitees=list(dict.fromkeys(invitees)),
            title=title,
            description=description,
            location=location,
            urls=list(urls),
            start=float(start),
            end=float(start + duration_h * 3600),
            recurrence=recurrence,
            client=client,
        )
        self.out.append(Simulated(event, *truth))

    def card(
        self,
        ts: float,
        owner: str,
        recipients: Sequence[str],
        card: ContactCard,
        *,
        truth: tuple[int, str, str] = (0, LEGIT, ""),
        urls: Sequence[str] = (),
        photo: bool = False,
        history: bool = False,
    ) -> None:
        event = ContactsEvent(
            event_id=self._id("con"),
            timestamp=round(ts, 3),
            action="shared" if recipients else "created",
            owner=owner,
            recipients=list(dict.fromkeys(recipients)),
            card=card,
            urls=list(urls),
            photo=photo,
        )
        self.out.append(Simulated(event, *truth, history=history))

    def person_card(self, address: str) -> ContactCard:
        first, _, rest = address.partition("@")[0].partition(".")
        phones = (
            [f"+44 20 7{self.rng.randint(100, 999)} {self.rng.randint(1000, 9999)}"]
            if self.rng.random() < 0.6
            else []
        )
        return ContactCard(
            display_name=f"{first.title()} {rest.rstrip('0123456789').title()}",
            emails=[address],
            phones=phones,
            organization=address.rpartition("@")[2].split(".")[0].title() if self.rng.random() < 0.5 else "",
            note=self.rng.choice(("", "", "met at the conference", "supplier contact", "school parent")),
        )

    def work_time(self, account: _Account, day: int) -> float:
        hour = min(20.0, max(7.0, self.rng.gauss(13.0, 2.5)))
        return self.p.start + day * 86400 + (hour - account.tz_h) * 3600 + self.rng.uniform(0, 60)

    def spam_domain(self, tlds: Sequence[str] = SPAM_TLDS) -> str:
        word, lure = self.rng.choice(WORDS), self.rng.choice(("prize", "secure", "verify", "pay", "gift"))
        return f"{word}-{lure}{self.rng.randint(1, 99)}.{self.rng.choice(tlds)}"

    def lure_url(self, domain: str) -> str:
        if self.rng.random() < 0.2:
            return f"https://bit.ly/{self.rng.randint(10**5, 10**6)}"
        path = self.rng.choice(("claim", "verify", "login", "r"))
        return f"https://{domain}/{path}/{self.rng.randint(1000, 9999)}"
