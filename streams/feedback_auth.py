"""Authenticated label sources: every label carries an HMAC-SHA256 under its source's key.

A label's ``source`` decides its weight and caps (an ``ops_review`` label
weighs five user reports and is never capped), so it must not be whatever
the sender writes. Each source has its own secret key
(``FeedbackSettings.key_<source>``); a sender holds only the keys of the
sources it speaks for (the app backend that forwards user reports holds
``key_user_report`` and cannot write ``ops_review`` labels). The sender signs
the label; the feedback agent recomputes the HMAC under the key of the source
the label names and compares in constant time. A label with no signature,
a source this worker has no key for, or a signature that does not match
(another key, another source, any field edited after signing) is a dead
letter, and changes neither reputation nor training.

Why a signature in the record rather than one topic per source with broker
ACLs: the signature binds the whole label (the reporter, the event, the
label) and not just the producing connection, so a label copied, mirrored
or replayed from another topic stays verifiable and an edited one does not;
it needs no broker feature (the embedded broker has no ACLs, so ACLs could
not be tested with real parts); and a sender needs no broker account per
source. It does not stop a sender from replaying its own valid label: the
feedback ledger counts a ``feedback_id`` once.

The signed bytes (:func:`canonical`) are language-neutral: ``warden-feedback-v1``
then each field of :data:`FIELDS` in that order as ``<byte length>:<UTF-8 bytes>``
(``~`` for an absent reason), with ``at`` written as the integer
``floor(at * 1000)`` (milliseconds). The signature is the lowercase hex digest.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from typing import get_args

from infra.exceptions import SettingsError
from infra.settings import KEY_HINT, WardenSettings, development_feedback_key
from streams.records import Feedback, FeedbackSource

#: Names the canonical form (a new form gets a new name).
FORMAT = b"warden-feedback-v1"
#: Every field of a label but the signature, in signing order (tests check none is left out).
FIELDS = ("feedback_id", "event_id", "kind", "label", "source", "reporter", "at", "reason")
SOURCES: tuple[str, ...] = get_args(FeedbackSource)


def canonical(feedback: Feedback) -> bytes:
    """The bytes a label's signature covers: every field but the signature, unambiguously framed."""
    parts = [FORMAT]
    for name in FIELDS:
        value = getattr(feedback, name)
        if value is None:
            parts.append(b"~")
            continue
        text = str(math.floor(value * 1000)) if name == "at" else str(value)
        data = text.encode("utf-8")
        parts.append(b"%d:%s" % (len(data), data))
    return b"".join(parts)


def signature(feedback: Feedback, key: bytes) -> str:
    """The hex HMAC-SHA256 of ``feedback`` under ``key``."""
    return hmac.new(key, canonical(feedback), hashlib.sha256).hexdigest()


class SourceKeys:
    """The keys of the label sources this process may sign or verify; built once at the entry point."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)

    def __repr__(self) -> str:
        return f"SourceKeys(sources={sorted(self._keys)})"

    @classmethod
    def from_settings(cls, settings: WardenSettings) -> SourceKeys:
        """The configured keys; in development a public development key for each unset source."""
        keys = {}
        for source in SOURCES:
            key = settings.feedback.key(source)
            if key is None and settings.environment == "development":
                key = development_feedback_key(source)
            if key is not None:
                keys[source] = key.get_secret_value().encode("utf-8")
        return cls(keys)

    @property
    def sources(self) -> list[str]:
        """The sources with a key here."""
        return sorted(self._keys)

    def sign(self, feedback: Feedback) -> Feedback:
        """``feedback`` signed with its source's key (any signature it had is replaced).

        Raises :class:`SettingsError` when this process holds no key for that source.
        """
        key = self._keys.get(feedback.source)
        if key is None:
            raise SettingsError(
                f"no key to sign {feedback.source} labels: set "
                f"WARDEN_FEEDBACK__KEY_{feedback.source.upper()} ({KEY_HINT})"
            )
        return feedback.model_copy(update={"signature": signature(feedback, key)})

    def problem(self, feedback: Feedback) -> str | None:
        """Why ``feedback`` is not an authentic label of its source (one line), or None when it is.

        Called by the feedback agent for every decoded label, before it is
        joined, weighed or counted; a reason means a dead letter.
        """
        if feedback.signature is None:
            return f"unauthenticated label: no signature (source {feedback.source})"
        key = self._keys.get(feedback.source)
        if key is None:
            return f"unauthenticated label: no key for source {feedback.source} on this worker"
        if not hmac.compare_digest(signature(feedback, key), feedback.signature):
            return f"unauthenticated label: signature does not match source {feedback.source}"
        return None
