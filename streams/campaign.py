"""A simulated abuse campaign the first model has never seen, for the demo's feedback loop.

Invoice fraud: short, polite mails from freshly registered look-alike
domains, asking finance staff to pay an "updated" invoice to new bank
details via a link. No stock spam phrases, plain text, well-formed headers:
the kind of campaign a content filter trained on 2002 spam lets through until
operators label it. Seeded, so every demo run sees the same campaign.
"""

from __future__ import annotations

import random

from streams.records import MailEvent

_GREETINGS = ("Hi", "Hello", "Good morning", "Dear colleague", "Hi team")
_ASKS = (
    "please find the updated remittance details for invoice {n} attached to our portal",
    "our bank details changed this quarter, invoice {n} should be remitted to the new account",
    "kindly settle invoice {n} using the revised beneficiary account on the portal",
    "as discussed, invoice {n} is now payable to our new supplier account",
)
_CLOSINGS = ("Thanks, {name}", "Best regards, {name}", "Kind regards, {name} (Accounts)", "{name}, finance")
_NAMES = ("Laura Pike", "Mark Denton", "Sofia Reyes", "Tom Baxter", "Nina Clarke", "Owen Hale")
_BRANDS = ("northwind", "contoso", "fabrikam", "tailspin", "adventureworks", "wingtip")


def campaign(count: int, start: float, recipients: list[str], seed: int = 2026) -> list[MailEvent]:
    """``count`` campaign mails, one every 20-90 seconds from ``start``."""
    rng = random.Random(seed)
    events = []
    ts = start
    for index in range(count):
        ts += rng.uniform(20, 90)
        brand = rng.choice(_BRANDS)
        domain = (
            f"{brand}-{rng.choice(('billing', 'payments', 'accounts', 'invoices'))}{rng.randint(2, 99)}.com"
        )
        sender = f"{rng.choice(('ap', 'billing', 'accounts', 'finance'))}@{domain}"
        number = rng.randint(10_000, 99_999)
        link = f"https://portal.{domain}/inv/{number}"
        name = rng.choice(_NAMES)
        text = (
            f"{rng.choice(_GREETINGS)},\n\n{rng.choice(_ASKS).format(n=number).capitalize()}: {link}\n\n"
            f"Let me know once the transfer is scheduled.\n\n{rng.choice(_CLOSINGS).format(name=name)}\n"
        )
        events.append(
            MailEvent(
                event_id=f"campaign-{seed}-{index}",
                timestamp=ts,
                sender=sender,
                recipients=[rng.choice(recipients)],
                subject=f"Invoice {number} - updated payment details",
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
