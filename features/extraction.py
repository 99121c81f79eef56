"""The ingest transform: a validated raw mail becomes pseudonyms and numbers.

This is the last place raw identifiers and text exist. Training and the
ingest agent both call :func:`to_features`, so what a model learns from is
exactly what it is served.
"""

from __future__ import annotations

from features.definitions import content_features, message_words
from features.pseudonym import Pseudonymiser, address_domain
from features.tokens import BUCKETS, MAX_TOKENS_PER_MESSAGE
from streams.records import MailEvent, MailFeatures, SourcePosition


def to_features(
    event: MailEvent,
    pseudonymiser: Pseudonymiser,
    source: SourcePosition,
    produced_at_ms: int,
) -> MailFeatures:
    """Pseudonymise the identifiers of ``event`` and compute its content features."""
    recipients = sorted({pseudonymiser.address(r) for r in event.recipients})
    return MailFeatures(
        event_id=event.event_id,
        timestamp=event.timestamp,
        key_id=pseudonymiser.key_id,
        sender=pseudonymiser.address(event.sender),
        sender_domain=pseudonymiser.domain(address_domain(event.sender)),
        recipients=recipients,
        content=content_features(event),
        tokens=pseudonymiser.token_buckets(message_words(event), BUCKETS, MAX_TOKENS_PER_MESSAGE),
        source=source,
        produced_at_ms=produced_at_ms,
    )
