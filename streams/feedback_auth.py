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

Records workers pass each other are sealed with the same key: with
``WorkerSettings.split_stages`` the ingesting worker puts
``HMAC-SHA256(key, "warden-features-v1" + record bytes)`` in the
:data:`~streams.topics.SEAL_HEADER` of each features record, and the scoring
agent dead-letters a features record without a valid seal. Without it,
anyone able to produce to ``mail.features`` would write aggregates at any time
for any pseudonym, and a served row that a later real label turns into a
signed example. (The prefix keeps a seal from ever being a valid signature of
another kind of record.)

Training examples are signed the same way (:class:`ExampleKeys`). A verified
label becomes a :class:`~streams.records.TrainingExample` on
``training-examples``, and ``warden retrain`` learns from that topic: without a
signature there, anyone able to produce to it would skip the label check, the
weights and the caps. The feedback agent signs every example with
``FeedbackSettings.training_example_key`` (held by workers and retrain only);
every reader that learns from examples verifies it in constant time and
refuses the rest (:meth:`ExampleKeys.authentic`). The canonical form is the same
framing (:func:`frame`) applied to every field but the signature, in declared
order, nested records and lists framed as the concatenation of their framed
items; an integer is its decimal text, a float the 16 hex digits of its IEEE-754
binary64 big-endian bytes (exact: a feature value changed by one ulp is another
example), NaN the text ``nan``, a boolean ``1`` or ``0``. Fields are walked from
the record types, so a field added later is signed without a change here.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Mapping
from typing import get_args

from pydantic import BaseModel

from warden.streams.exceptions import MalformedRecord, SettingsError
from warden.streams.provenance import Headers
from warden.streams.records import Feedback, FeedbackSource, TrainingExample, decode
from warden.streams.settings import (
    KEY_HINT,
    WardenSettings,
    development_feedback_key,
    development_training_example_key,
)
from warden.streams.topics import SEAL_HEADER

#: Names the canonical form (a new form gets a new name).
FORMAT = b"warden-feedback-v1"
#: Every field of a label but the signature, in signing order (tests check none is left out).
FIELDS = ("feedback_id", "event_id", "kind", "label", "source", "reporter", "at", "reason")
SOURCES: tuple[str, ...] = get_args(FeedbackSource)
#: Names the canonical form of a training example.
EXAMPLE_FORMAT = b"warden-training-example-v1"
#: Names what a features record's seal covers (the record's bytes follow).
SEAL_FORMAT = b"warden-features-v1"


def frame(data: bytes | None) -> bytes:
    """One value of a canonical form: ``~`` when absent, else ``<byte length>:<bytes>``."""
    if data is None:
        return b"~"
    return b"%d:%s" % (len(data), data)


def canonical(feedback: Feedback) -> bytes:
    """The bytes a label's signature covers: every field but the signature, unambiguously framed."""
    parts = [FORMAT]
    for name in FIELDS:
        value = getattr(feedback, name)
        if value is None:
            parts.append(frame(None))
            continue
        text = str(math.floor(value * 1000)) if name == "at" else str(value)
        parts.append(frame(text.encode("utf-8")))
    return b"".join(parts)


def _value(value: object) -> bytes | None:
    """The bytes framed for one value of a record (see the module's docstring)."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return b"".join(frame(_value(getattr(value, name))) for name in type(value).model_fields)
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, float):
        return b"nan" if math.isnan(value) else struct.pack(">d", value).hex().encode("ascii")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list | tuple):
        if value and all(type(item) is float for item in value):
            return _floats(value)
        if value and all(type(item) is int for item in value):  # token ids: one string, one encode
            return "".join(f"{len(text)}:{text}" for text in map(str, value)).encode("ascii")
        return b"".join(frame(_value(item)) for item in value)
    raise TypeError(f"no canonical form for a {type(value).__name__}")


def _floats(values: list[float] | tuple[float, ...]) -> bytes:
    """The framed floats of a list, as :func:`_value` frames each one (a row's features: one pack)."""
    digits = struct.pack(f">{len(values)}d", *values).hex().encode("ascii")
    return b"".join(
        b"3:nan" if value != value else b"16:" + digits[16 * i : 16 * i + 16]  # NaN != NaN
        for i, value in enumerate(values)
    )


def example_canonical(example: TrainingExample) -> bytes:
    """The bytes an example's signature covers: every field but the signature, nested rows included."""
    fields = (name for name in type(example).model_fields if name != "signature")
    return EXAMPLE_FORMAT + b"".join(frame(_value(getattr(example, name))) for name in fields)


def _seal(record: bytes, key: bytes) -> bytes:
    return hmac.new(key, SEAL_FORMAT + record, hashlib.sha256).hexdigest().encode("ascii")


def _header(headers: Headers | None, name: str) -> bytes | None:
    """The value of header ``name`` (the first one), or None."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in pairs:
        if key == name:
            return value if isinstance(value, bytes) else None
    return None


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


def example_signature(example: TrainingExample, key: bytes) -> str:
    """The hex HMAC-SHA256 of ``example`` under ``key``."""
    return hmac.new(key, example_canonical(example), hashlib.sha256).hexdigest()


class ExampleKeys:
    """The training-example key (and the one before a rotation); built once at the entry point.

    Held by the workers (their feedback agent signs) and by every process that
    learns from examples (``warden retrain``, the ranker fit, the demo), which verify.
    """

    def __init__(self, key: bytes, previous: bytes | None = None) -> None:
        self._key = key
        self._previous = previous

    def __repr__(self) -> str:
        return f"ExampleKeys(previous={self._previous is not None})"

    @classmethod
    def from_settings(cls, settings: WardenSettings) -> ExampleKeys:
        """The configured key; in development the public development key when unset.

        Raises :class:`SettingsError` outside development when no key is set: a
        worker could not sign what it learns from, nor retrain tell its examples
        from anyone else's.
        """
        key = settings.feedback.training_example_key
        if key is None and settings.environment == "development":
            key = development_training_example_key()
        if key is None:
            raise SettingsError(
                f"{settings.environment} needs WARDEN_FEEDBACK__TRAINING_EXAMPLE_KEY "
                f"(workers and retrain hold it; {KEY_HINT})"
            )
        previous = settings.feedback.training_example_key_previous
        return cls(
            key.get_secret_value().encode("utf-8"),
            None if previous is None else previous.get_secret_value().encode("utf-8"),
        )

    def derived(self, purpose: bytes) -> bytes:
        """A key for ``purpose`` other than signing, derived from the current key (HMAC-SHA256).

        Called by ``warden retrain`` for the key that draws its gate's holdout,
        so that whoever chooses event ids cannot choose which rows are held out.
        """
        return hmac.new(self._key, b"warden derived key\x00" + purpose, hashlib.sha256).digest()

    def sign(self, example: TrainingExample) -> TrainingExample:
        """``example`` signed with the current key (any signature it had is replaced)."""
        return example.model_copy(update={"signature": example_signature(example, self._key)})

    def problem(self, example: TrainingExample) -> str | None:
        """Why ``example`` was not signed by a Warden worker (one line), or None when it was."""
        if example.signature is None:
            return "unauthenticated training example: no signature"
        for key in (self._key, self._previous):
            if key is not None and hmac.compare_digest(example_signature(example, key), example.signature):
                return None
        return "unauthenticated training example: signature does not match the training-example key"

    def seal(self, record: bytes) -> list[tuple[str, bytes]]:
        """The headers that seal one features record a worker sends to another (current key)."""
        return [(SEAL_HEADER, _seal(record, self._key))]

    def sealed(self, record: bytes, headers: Headers | None) -> bool:
        """True when ``headers`` carry a seal of ``record`` under this key or the previous one."""
        tag = _header(headers, SEAL_HEADER)
        if tag is None:
            return False
        return any(
            key is not None and hmac.compare_digest(_seal(record, key), tag)
            for key in (self._key, self._previous)
        )

    def authentic(self, raw: bytes) -> TrainingExample:
        """Decode one record of ``training-examples`` and check its signature.

        Called by every reader that learns from examples, for each record;
        raises :class:`MalformedRecord` (the caller counts and skips it) when it
        is not an example or not signed with this key.
        """
        example = decode(TrainingExample, raw)
        problem = self.problem(example)
        if problem is not None:
            raise MalformedRecord(problem)
        return example
