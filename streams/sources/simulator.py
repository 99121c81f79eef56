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

The world (parameters, accounts, emitted events) lives in :mod:`streams.sources.simulated_world`, the
campaigns and their wording in :mod:`streams.sources.simulated_campaigns`.
Everything is drawn from one ``random.Random(seed)``: the same parameters
give the same events. Events are real :class:`~streams.records.CalendarEvent`
and :class:`~streams.records.ContactsEvent` records and go through the same
topics as real ones (:func:`produce`); labels never go on a topic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

from warden.streams.exceptions import BrokerError
from warden.streams.provenance import event_time_header
from warden.streams.records import encode
from warden.streams.sources.simulated_campaigns import run_campaign
from warden.streams.sources.simulated_world import (
    CAMPAIGN_TYPES,
    FIRST_NAMES,
    WORDS,
    Simulated,
    SimulationParams,
    World,
)
from warden.streams.topics import Topics

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
