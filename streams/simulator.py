"""A seeded generative simulator of calendar and contacts traffic, normal use and abuse.

No public data set covers calendar invites or shared contact cards, so these
streams are simulated, and say so. A *population* of accounts on a handful of
organisations' and webmail domains, each with a contact circle (mostly
colleagues, some outsiders), a time zone, an activity level and a start day
(some accounts only join during the run: a new account is not by itself
abuse), lives through ``days`` days:

* on joining, an account creates cards for its circle (that is how it gets
  known contacts), and later creates a few more and shares some with others;
  for the accounts that exist when the run starts, those cards are their
  *history*: created in the 14 days before ``start``, sent through the
  stream like everything else (the store learns the contacts from them) and
  marked ``history``, so training and evaluation leave them out;
* it sends invites on working days in its local working hours (weekends at a
  quarter of the rate), mostly to its circle and now and then to strangers
  (a new client, a candidate); some are updated or cancelled later; a few
  accounts run large webinars for hundreds of outsiders, with a meeting link.

Abuse arrives as *campaigns* (``campaigns_per_day`` on average, their types
drawn by ``mix``), each with a ground-truth label and type on every event:

``fresh_invite_spam``
    a few accounts registered at the campaign's start each invite hundreds of
    strangers within the hour to an "event" whose description is a lure and
    a link on a throwaway domain, mostly through an API client;
``compromised_burst``
    an established account is taken over and, within an hour, sends invites
    and shared cards to its own contacts with a lure and a link;
``low_and_slow``
    many accounts that have been around for days each send one or two quiet
    invites (and the odd card) a day to a few strangers, linking to one
    look-alike domain, all through the run;
``card_spam``
    accounts share "support line" contact cards (scam note, phone, link)
    with dozens of strangers.

The campaigns and their wording live in :mod:`streams.simulated_campaigns`.
Everything is drawn from one ``random.Random(seed)``: the same parameters
give the same events. Events are real :class:`~streams.records.CalendarEvent`
and :class:`~streams.records.ContactsEvent` records and go through the same
topics as real ones (:func:`produce`); labels never go on a topic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from kafka import KafkaProducer
from kafka.errors import KafkaError

from warden.streams.exceptions import BrokerError
from warden.streams.provenance import event_time_header
from warden.streams.records import CalendarEvent, ContactCard, ContactsEvent, encode
from warden.streams.simulated_campaigns import FIRST_NAMES, SPAM_TLDS, WEBMAIL, WORDS, run_campaign
from warden.streams.topics import Topics

CampaignType = Literal["fresh_invite_spam", "compromised_burst", "low_and_slow", "card_spam"]
CAMPAIGN_TYPES: tuple[CampaignType, ...] = get_args(CampaignType)
#: The label of an event that belongs to no campaign.
LEGIT = "legit"
#: 2026-01-01T00:00:00Z: the default first day (accepted by ingest's timestamp range).
DEFAULT_START = 1_767_225_600.0

_LAST = ("smith", "garcia", "kim", "novak", "okafor", "rossi", "silva", "tanaka", "weber", "young", "lopez")
_ORGS = ("northwind.com", "contoso.org", "fabrikam.net", "tailspin.io", "wingtip.co.uk", "litware.de")
_MEETING_LINKS = (
    "https://zoom.us/j/{n}",
    "https://meet.google.com/{w}-{w}",
    "https://teams.microsoft.com/l/{n}",
)
_TITLES = (
    "Weekly sync",
    "1:1 {name}",
    "Project {word} review",
    "Lunch",
    "Interview: {word} engineer",
    "Quarterly planning",
    "Budget {word}",
    "Design review: {word}",
    "Coffee with {name}",
    "Customer call - {word}",
    "Retro",
    "Onboarding {name}",
)
_AGENDA = (
    "",
    "",
    "Agenda: status, blockers, next steps.",
    "Let's go over the numbers before the board meeting.",
    "Notes from last time are in the shared folder.",
    "Bring your questions about the {word} rollout.",
)
_ROOMS = ("Room 4.12", "Main office, 2nd floor", "Cafe downstairs", "", "", "Building B")


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


def _legit(world: World) -> None:
    p, rng = world.p, world.rng
    end = p.start + p.days * 86400
    for account in world.accounts:
        # Joining: a card for each person of the circle, over the first hours of a new account or
        # over the two weeks before the run for an account that already exists.
        history = account.joins < p.start + 3600
        for contact in account.circle:
            ts = p.start - rng.uniform(0, 14 * 86400) if history else account.joins + rng.uniform(0, 6 * 3600)
            if ts < end:
                photo = rng.random() < 0.3
                world.card(ts, account.address, (), world.person_card(contact), photo=photo, history=history)
        for day in range(math.ceil(p.days)):
            weekday = (math.floor(p.start / 86400) + day + 3) % 7 < 5  # 1970-01-01 was a Thursday
            scale = account.activity * (1.0 if weekday else 0.25)
            for _ in range(_poisson(rng, p.invites_per_day * scale)):
                ts = world.work_time(account, day)
                if not account.joins <= ts < end:
                    continue
                size = min(len(account.circle), max(1, int(rng.expovariate(1 / 3))))
                invitees = rng.sample(account.circle, size)
                if rng.random() < 0.15:
                    invitees.append(world.stranger())
                word, name = rng.choice(WORDS), rng.choice(FIRST_NAMES).title()
                link = (
                    rng.choice(_MEETING_LINKS).format(n=rng.randint(10**8, 10**9), w=word)
                    if rng.random() < 0.5
                    else ""
                )
                title = rng.choice(_TITLES).format(name=name, word=word)
                agenda = rng.choice(_AGENDA).format(word=word)
                recurrence = rng.choices(("none", "weekly", "daily", "monthly"), (75, 20, 3, 2))[0]
                client = rng.choices(("web", "ios", "android", "outlook"), (50, 20, 15, 15))[0]
                lead, duration = rng.expovariate(1 / 48) + 0.5, rng.choice((0.5, 0.5, 1.0, 1.0, 1.5))
                common = {
                    "location": link or rng.choice(_ROOMS),
                    "urls": [link] if link else [],
                    "lead_h": lead,
                    "duration_h": duration,
                    "recurrence": recurrence,
                    "client": client,
                }
                world.invite(ts, account.address, invitees, title, agenda, **common)  # type: ignore[arg-type]
                later = ts + rng.uniform(600, 8 * 3600)
                if rng.random() < 0.12 and later < end:
                    action = "cancelled" if rng.random() < 0.3 else "updated"
                    world.invite(later, account.address, invitees, title, agenda, action=action, **common)  # type: ignore[arg-type]
            if account.webinars and weekday and rng.random() < 0.3:
                ts = world.work_time(account, day)
                if account.joins <= ts < end:
                    link = f"https://zoom.us/webinar/{rng.randint(10**8, 10**9)}"
                    crowd = [world.stranger() for _ in range(rng.randint(40, 300))]
                    title = f"Webinar: {rng.choice(WORDS).title()} product update"
                    text = f"Join us for a live demo and Q&A. Register: {link}"
                    world.invite(
                        ts,
                        account.address,
                        crowd,
                        title,
                        text,
                        location=link,
                        urls=[link],
                        lead_h=72,
                        client="web",
                    )
            for _ in range(_poisson(rng, p.cards_per_day * account.activity)):
                ts = world.work_time(account, day)
                if not account.joins <= ts < end:
                    continue
                if rng.random() < 0.5:
                    contact = world.stranger()
                    account.circle.append(contact)
                    world.card(ts, account.address, (), world.person_card(contact))
                else:
                    subject = rng.choice(account.circle)
                    recipients = rng.sample(account.circle, min(len(account.circle), rng.randint(1, 3)))
                    urls = [f"https://www.{subject.rpartition('@')[2]}/team"] if rng.random() < 0.2 else []
                    world.card(ts, account.address, recipients, world.person_card(subject), urls=urls)


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth; means here are small)."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def simulate(params: SimulationParams) -> list[Simulated]:
    """The whole simulated stream, in time order (calendar and contacts interleaved)."""
    world = World(params)
    _legit(world)
    weights = [params.mix.get(kind, 0.0) for kind in CAMPAIGN_TYPES]
    if sum(weights) > 0 and params.campaigns_per_day > 0:
        at = params.start + world.rng.expovariate(params.campaigns_per_day) * 86400
        number = 0
        while at < params.start + params.days * 86400:
            number += 1
            kind = world.rng.choices(CAMPAIGN_TYPES, weights)[0]
            run_campaign(world, kind, at, f"{kind}-{params.seed}-{number}")
            at += world.rng.expovariate(params.campaigns_per_day) * 86400
    return sorted(world.out, key=lambda s: (s.event.timestamp, s.event.event_id))


Progress = Callable[[int, int], None]


def produce(
    events: Sequence[Simulated], producer: KafkaProducer, topics: Topics, *, progress: Progress | None = None
) -> int:
    """Send the events (not their labels) to ``calendar.events`` / ``contacts.events`` in order.

    Each record carries its simulated time in the event-time header
    (:mod:`streams.provenance`): the simulator is the recorder of this traffic.
    Blocks until every record is acknowledged; raises BrokerError otherwise.
    """
    futures = []
    try:
        for index, item in enumerate(events, start=1):
            topic = topics.calendar_events if item.event.kind == "calendar" else topics.contacts_events
            key = item.event.event_id.encode("utf-8")
            headers = event_time_header(item.event.timestamp)
            futures.append(producer.send(topic.name, key=key, value=encode(item.event), headers=headers))
            if progress is not None and (index % 500 == 0 or index == len(events)):
                progress(index, len(events))
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)
    except KafkaError as exc:
        raise BrokerError(f"the broker did not take every simulated event: {exc}") from exc
    return len(futures)
