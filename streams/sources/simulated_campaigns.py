"""The abuse campaigns of the calendar and contacts simulator, and their wording.

Each campaign type has words and link domains of its own, so training
without a type (``mix``) leaves out its wording as well as its behaviour:
what a model then finds of it comes from behaviour alone. The types are
described in :mod:`streams.sources.simulator`, which calls :func:`run_campaign` on its
:class:`~streams.sources.simulated_world.World`.
"""

from __future__ import annotations

from typing import Literal

from warden.streams.records import ContactCard
from warden.streams.sources.simulated_world import FIRST_NAMES, SPAM_TLDS, WEBMAIL, WORDS, World

_LURE_TITLES = (
    "You have won a $500 gift card",
    "Payment overdue - action required",
    "Crypto investment webinar (free bonus)",
    "Your account will be suspended",
    "Claim your refund today",
    "Exclusive offer: verify to receive reward",
)
_LURE_TEXTS = (
    "Congratulations! Click the link to claim your prize before it expires: {url}",
    "Your payment is overdue. Verify your account now at {url} to avoid suspension.",
    "Join our exclusive crypto investment session and receive a 200% bonus: {url}",
    "Unusual sign-in detected. Confirm your password here: {url}",
    "A refund of $349.99 is waiting. Claim it at {url}",
)
_QUIET_TITLES = ("Follow-up on your application", "Re: documents", "Quick question", "Shared file review")
_QUIET_TEXTS = (
    "Hi, following up as discussed. The documents are here: {url}",
    "Please review the shared file before our call: {url}",
    "As promised, details of the position: {url}",
)
#: A taken-over account writes to its own contacts in its own (business) voice: its own words.
_TAKEOVER_TITLES = ("Invoice approval needed", "Updated bank details", "Signed contract - please check")
_TAKEOVER_TEXTS = (
    "Hi, I need this approved before end of day, the document is on our new portal: {url}",
    "Our bank details changed, please use the account in the form here: {url}",
    "Can you sign this for me? I am in meetings all day: {url}",
)
_TAKEOVER_CARDS = ("Accounts Payable", "New Finance Contact", "Payroll Office")
_SUPPORT_NAMES = ("Customer Support 24/7", "Refund Desk 365", "Account Security Team", "Prize Office 2026")
_SUPPORT_NOTES = (
    "Call now to claim your refund! Urgent: account locked. {url}",
    "Official support line. Verify your wallet to receive the bonus: {url}",
    "Winner notification - call within 24 hours to claim: {url}",
)


def run_campaign(world: World, kind: str, at: float, cid: str) -> None:
    """Add one campaign of type ``kind``, starting at ``at``, to the world's events."""
    p, rng = world.p, world.rng
    end = p.start + p.days * 86400
    truth = (1, kind, cid)
    if kind == "fresh_invite_spam":
        domain = world.spam_domain()
        for _ in range(rng.randint(2, 5)):
            spammer = world.local_name() + "@" + rng.choice((*WEBMAIL, f"mail-{domain}"))
            ts = at + rng.uniform(0, 1800)
            for _ in range(rng.randint(4, 15)):
                ts += rng.expovariate(1 / 240)
                if ts >= end:
                    return
                url = world.lure_url(domain)
                text = rng.choice(_LURE_TEXTS).format(url=url)
                crowd = [world.stranger() for _ in range(rng.randint(15, 250))]
                client = "api" if rng.random() < 0.7 else "web"
                recurrence: Literal["none", "daily"] = "daily" if rng.random() < 0.3 else "none"
                world.invite(
                    ts,
                    spammer,
                    crowd,
                    rng.choice(_LURE_TITLES),
                    text,
                    truth=truth,
                    urls=[url],
                    location=url if rng.random() < 0.4 else "",
                    lead_h=rng.uniform(1, 24),
                    recurrence=recurrence,
                    client=client,
                )
    elif kind == "compromised_burst":
        victims = [a for a in world.accounts if a.joins < at - 86400 and len(a.circle) >= 3]
        if not victims:
            return
        victim, domain = rng.choice(victims), world.spam_domain(("com", "net", *SPAM_TLDS))
        ts = at
        for _ in range(rng.randint(8, 30)):
            ts += rng.expovariate(1 / 180)
            if ts >= end:
                return
            url = f"https://{domain}/{rng.choice(('doc', 'sign', 'portal'))}/{rng.randint(1000, 9999)}"
            recipients = rng.sample(victim.circle, min(len(victim.circle), rng.randint(3, 15)))
            if rng.random() < 0.6:
                text = rng.choice(_TAKEOVER_TEXTS).format(url=url)
                world.invite(
                    ts,
                    victim.address,
                    recipients,
                    rng.choice(_TAKEOVER_TITLES),
                    text,
                    truth=truth,
                    urls=[url],
                    lead_h=rng.uniform(1, 12),
                    client=rng.choice(("web", "api")),
                )
            else:
                card = ContactCard(
                    display_name=rng.choice(_TAKEOVER_CARDS),
                    emails=[f"finance@{domain}"],
                    organization=victim.domain.split(".")[0].title(),
                    note=f"Please use this contact for payments from now on: {url}",
                )
                world.card(ts, victim.address, recipients, card, truth=truth, urls=[url])
    elif kind == "low_and_slow":
        domain = f"{rng.choice(WORDS)}-{rng.choice(('careers', 'docs', 'files', 'hr'))}.com"
        senders = [a for a in world.accounts if a.joins < at] or world.accounts
        for account in rng.sample(senders, min(len(senders), rng.randint(15, 40))):
            ts = max(at, account.joins) + rng.uniform(0, 86400)
            while ts < end:
                url = f"https://{domain}/{rng.choice(('apply', 'share', 'view'))}/{rng.randint(1000, 9999)}"
                recipients = [world.stranger() for _ in range(rng.randint(2, 8))]
                if rng.random() < 0.8:
                    text = rng.choice(_QUIET_TEXTS).format(url=url)
                    world.invite(
                        ts,
                        account.address,
                        recipients,
                        rng.choice(_QUIET_TITLES),
                        text,
                        truth=truth,
                        urls=[url],
                        lead_h=rng.uniform(4, 72),
                        client=rng.choice(("web", "android")),
                    )
                else:
                    card = ContactCard(
                        display_name=rng.choice(FIRST_NAMES).title() + " (Recruiting)",
                        emails=[f"jobs@{domain}"],
                        note=f"Open positions: {url}",
                    )
                    world.card(ts, account.address, recipients, card, truth=truth, urls=[url])
                ts += rng.uniform(0.5, 1.5) * 86400
    else:  # card_spam
        domain = world.spam_domain()
        for _ in range(rng.randint(2, 5)):
            spammer = f"{world.local_name()}@{rng.choice(WEBMAIL)}"
            ts = at + rng.uniform(0, 3600)
            for _ in range(rng.randint(3, 12)):
                ts += rng.expovariate(1 / 300)
                if ts >= end:
                    return
                url = world.lure_url(domain)
                card = ContactCard(
                    display_name=rng.choice(_SUPPORT_NAMES),
                    phones=[f"+1 8{rng.randint(10, 99)} 555 {rng.randint(1000, 9999)}"],
                    organization=rng.choice(("", "Support Center", "Refund Dept")),
                    note=rng.choice(_SUPPORT_NOTES).format(url=url),
                )
                crowd = [world.stranger() for _ in range(rng.randint(10, 120))]
                world.card(ts, spammer, crowd, card, truth=truth, urls=[url], photo=rng.random() < 0.2)
