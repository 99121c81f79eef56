"""Mail traffic with forged claimed times, for the tests of the trusted clock (unit and integration).

:func:`honest` is a few senders writing every 20 s, each mail claiming the time
it was sent; :func:`forged` is the same mails where some claim a time a week
ahead (``now + 6.9 days``, inside ingest's accepted range) or in 1990: the
two attacks of issue 17 (zeroing a sender's windows, aging a new sender).
"""

from __future__ import annotations

import random

from warden.streams.records import MailEvent

#: Seconds between two mails of the stream.
STEP_S = 20.0
FUTURE_S = 6.9 * 86400
#: 1990-06-01T00:00:00Z, after ingest's earliest accepted time.
PAST = 644_198_400.0


def honest(start: float, n: int, prefix: str, seed: int = 1) -> list[MailEvent]:
    """``n`` mails from 4 senders to 30 recipients, one every :data:`STEP_S` from ``start``."""
    rng = random.Random(seed)
    return [
        MailEvent(
            event_id=f"{prefix}-{i}",
            timestamp=start + i * STEP_S,
            sender=f"sender{rng.randrange(4)}@{prefix}.example.com",
            recipients=sorted({f"r{rng.randrange(30)}@example.org" for _ in range(rng.randint(1, 3))}),
            subject=f"report {i}",
            text="the weekly numbers are attached",
            headers=[("Received", f"from mx{i % 3}.example.com by mx.example.org")],
        )
        for i in range(n)
    ]


def forged(events: list[MailEvent], now: float) -> tuple[list[MailEvent], set[str]]:
    """The same mails, every 5th claiming a week ahead of ``now`` or 1990; and the forged ids."""
    out, ids = [], set()
    for i, event in enumerate(events):
        if i % 5 == 2:
            claimed = now + FUTURE_S if i % 10 == 2 else PAST
            event = event.model_copy(update={"timestamp": claimed})
            ids.add(event.event_id)
        out.append(event)
    return out, ids
