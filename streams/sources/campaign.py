"""A simulated abuse campaign the first model has never seen, for the demo's feedback loop.

Invoice fraud: short, polite mails from freshly registered look-alike
domains, asking finance staff to pay an "updated" invoice to new bank
details via a link. No stock spam phrases, plain text, well-formed headers:
the kind of campaign a content filter trained on 2002 spam lets through until
operators label it. Seeded, so every demo run sees the same campaign.

It comes in two waves (:data:`WAVES`): the demo's operators label part of
the first; the second is the same fraud rewritten (other wording, subjects,
brands, senders and link domains), so that catching it measures what the
labels taught rather than recall of memorised templates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from warden.streams.records import MailEvent


@dataclass(frozen=True)
class Templates:
    """What one wave of the campaign is written from; no two waves share a template, brand or sender."""

    greetings: tuple[str, ...]
    asks: tuple[str, ...]
    closings: tuple[str, ...]
    names: tuple[str, ...]
    brands: tuple[str, ...]
    #: The word after the brand in the look-alike domain (``northwind-billing42.com``).
    domain_words: tuple[str, ...]
    top_level: str
    mailboxes: tuple[str, ...]
    #: ``{n}`` is the invoice number; ``{domain}`` the look-alike domain.
    subjects: tuple[str, ...]
    link: str
    follow_up: str


#: Wave 1: what operators see and label first.
FIRST = Templates(
    greetings=("Hi", "Hello", "Good morning", "Dear colleague", "Hi team"),
    asks=(
        "please find the updated remittance details for invoice {n} attached to our portal",
        "our bank details changed this quarter, invoice {n} should be remitted to the new account",
        "kindly settle invoice {n} using the revised beneficiary account on the portal",
        "as discussed, invoice {n} is now payable to our new supplier account",
    ),
    closings=("Thanks, {name}", "Best regards, {name}", "Kind regards, {name} (Accounts)", "{name}, finance"),
    names=("Laura Pike", "Mark Denton", "Sofia Reyes", "Tom Baxter", "Nina Clarke", "Owen Hale"),
    brands=("northwind", "contoso", "fabrikam", "tailspin", "adventureworks", "wingtip"),
    domain_words=("billing", "payments", "accounts", "invoices"),
    top_level="com",
    mailboxes=("ap", "billing", "accounts", "finance"),
    subjects=("Invoice {n} - updated payment details",),
    link="https://portal.{domain}/inv/{n}",
    follow_up="Let me know once the transfer is scheduled.",
)
#: Wave 2: the same fraud after it was labelled, rewritten: other wording, brands, senders and links.
SECOND = Templates(
    greetings=("Good afternoon", "Dear accounts payable", "Hello there", "Greetings", "Morning all"),
    asks=(
        "we moved our banking to a new provider; statement {n} now settles to the account listed at",
        "a remittance for statement {n} bounced back, please re-send it to the beneficiary shown on",
        "our auditors require statement {n} to be cleared today through the updated instructions at",
        "could you confirm the outstanding balance on statement {n} and pay it via",
        "treasury has switched accounts, so the transfer for statement {n} needs the new details on",
    ),
    closings=("Regards, {name}", "Many thanks, {name} | Treasury", "Sincerely, {name}", "Cheers, {name}"),
    names=("Derek Moss", "Helen Ward", "Rajesh Patel", "Claire Dubois", "Victor Lang", "Amy Chen"),
    brands=("globex", "initech", "umbrella", "hooli", "vandelay", "stark"),
    domain_words=("treasury", "remit", "settlement", "ledger"),
    top_level="net",
    mailboxes=("treasury", "controller", "remittance", "ar"),
    subjects=(
        "Statement {n}: new beneficiary account",
        "Remittance advice {n}",
        "Action required today - statement {n}",
        "Re: overdue balance on {n}",
        "Change of bank details ({n})",
    ),
    link="https://secure-{domain}/settle?ref={n}",
    follow_up="Please reply with the payment confirmation.",
)
WAVES: dict[int, Templates] = {1: FIRST, 2: SECOND}


def campaign(
    count: int, start: float, recipients: list[str], seed: int = 2026, wave: int = 1
) -> list[MailEvent]:
    """``count`` mails of ``wave`` (:data:`WAVES`), one every 20-90 seconds from ``start``."""
    rng = random.Random(seed if wave == 1 else seed * 1000 + wave)
    templates = WAVES[wave]
    events = []
    ts = start
    for index in range(count):
        ts += rng.uniform(20, 90)
        brand = rng.choice(templates.brands)
        domain = f"{brand}-{rng.choice(templates.domain_words)}{rng.randint(2, 99)}.{templates.top_level}"
        sender = f"{rng.choice(templates.mailboxes)}@{domain}"
        number = rng.randint(10_000, 99_999)
        link = templates.link.format(domain=domain, n=number)
        name = rng.choice(templates.names)
        greeting = rng.choice(templates.greetings)
        ask = rng.choice(templates.asks).format(n=number).capitalize()
        closing = rng.choice(templates.closings).format(name=name)
        text = f"{greeting},\n\n{ask}: {link}\n\n{templates.follow_up}\n\n{closing}\n"
        subjects = templates.subjects
        # One subject template draws nothing: wave 1 stays the campaign earlier demos showed.
        subject = subjects[0] if len(subjects) == 1 else rng.choice(subjects)
        events.append(
            MailEvent(
                event_id=f"campaign-{seed}-{index}" if wave == 1 else f"campaign-{seed}-w{wave}-{index}",
                timestamp=ts,
                sender=sender,
                recipients=[rng.choice(recipients)],
                subject=subject.format(n=number),
                text=text,
                urls=[link],
                headers=[
                    (
                        "Received",
                        f"from mail.{domain} (mail.{domain} [203.0.113.{rng.randint(1, 254)}]) "
                        "by mx.example.org; Mon, 2 Dec 2002 10:00:00 +0000",
                    ),
                    ("Message-ID", f"<{number}.{index}@mail.{domain}>"),
                    ("Date", "Mon, 2 Dec 2002 10:00:00 +0000"),
                    ("From", f"{name} <{sender}>"),
                    ("To", "accounts@example.org"),
                    ("MIME-Version", "1.0"),
                    ("Content-Type", "text/plain; charset=us-ascii"),
                ],
            )
        )
    return events
