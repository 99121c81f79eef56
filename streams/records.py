"""Every record type that travels on Warden's topics, and their codecs.

Input records (:class:`MailEvent`) are validated strictly at ingest: any
record that is not JSON, has a wrong type, misses a field or breaks a limit
raises :class:`~streams.exceptions.MalformedRecord` with a one-line reason.
Derived records hold pseudonyms and numbers only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from warden.streams.exceptions import IncompleteDeadLetter, MalformedRecord

EventKind = Literal["mail", "calendar", "contacts"]
#: The event kinds of the simulated streams (calendar invites and shared contact cards).
ActivityKind = Literal["calendar", "contacts"]
Action = Literal["allow", "junk", "block"]

_EVENT_ID = r"^[A-Za-z0-9._:-]{1,128}$"
#: White space as ``str.isspace`` sees it (the regular expression runs at C speed).
_SPACE = re.compile(r"\s")
#: A content digest (streams.provenance.content_digest), or none.
_DIGEST = r"^(?:[0-9a-f]{32})?$"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class MailEvent(_Record):
    """A mail as the mail system reports it (raw identifiers; ingest input only)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    kind: Literal["mail"] = "mail"
    event_id: str = Field(pattern=_EVENT_ID)
    #: When the sender says the mail was sent (epoch seconds, from its Date header). Validated,
    #: never used by the aggregates: they advance on the broker's clock (streams.provenance).
    timestamp: float
    sender: str = Field(min_length=3, max_length=320)
    recipients: list[str] = Field(min_length=1)
    subject: str = ""
    text: str = ""
    html: str = ""
    urls: list[str] = Field(default_factory=list)
    #: Selected headers in message order, repeated names kept (the Received chain).
    headers: list[tuple[str, str]] = Field(default_factory=list)

    @field_validator("sender")
    @classmethod
    def _sender_is_address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("recipients")
    @classmethod
    def _recipients_are_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value


def _check_address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or len(value) > 320 or _SPACE.search(value) is not None:
        raise ValueError("is not an e-mail address")
    return value


class CalendarEvent(_Record):
    """A calendar invite as the calendar service reports it (raw; ingest input only).

    ``action`` says whether the invite was created, updated or cancelled;
    ``start`` and ``end`` are epoch seconds; ``recurrence`` is a closed set.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    kind: Literal["calendar"] = "calendar"
    event_id: str = Field(pattern=_EVENT_ID)
    #: When the sender says the invite was sent (epoch seconds; not used by the aggregates).
    timestamp: float
    action: Literal["created", "updated", "cancelled"]
    organizer: str = Field(min_length=3, max_length=320)
    invitees: list[str] = Field(min_length=1)
    title: str = ""
    description: str = ""
    location: str = ""
    urls: list[str] = Field(default_factory=list)
    start: float
    end: float
    recurrence: Literal["none", "daily", "weekly", "monthly", "yearly"] = "none"
    #: The client that sent it (``web``, ``ios``, ``android``, ``api``, ...).
    client: str = Field(default="", max_length=64)

    @field_validator("organizer")
    @classmethod
    def _organizer_is_address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("invitees")
    @classmethod
    def _invitees_are_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value


class ContactCard(_Record):
    """The fields of one contact card (raw; ingest input only)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    display_name: str = Field(default="", max_length=500)
    emails: list[str] = Field(default_factory=list, max_length=50)
    phones: list[str] = Field(default_factory=list, max_length=50)
    organization: str = Field(default="", max_length=500)
    note: str = ""

    @field_validator("emails")
    @classmethod
    def _emails_are_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value


class ContactsEvent(_Record):
    """A contact card created by its owner, or shared with recipients (raw; ingest input only)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    kind: Literal["contacts"] = "contacts"
    event_id: str = Field(pattern=_EVENT_ID)
    timestamp: float
    action: Literal["created", "shared"]
    owner: str = Field(min_length=3, max_length=320)
    #: Who the card was shared with (empty for ``created``; at least one for ``shared``).
    recipients: list[str] = Field(default_factory=list)
    card: ContactCard
    urls: list[str] = Field(default_factory=list)
    photo: bool = False

    @field_validator("owner")
    @classmethod
    def _owner_is_address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("recipients")
    @classmethod
    def _recipients_are_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value


ActivityEvent = CalendarEvent | ContactsEvent


class SourcePosition(_Record):
    """Where a record was read: enough to find it again."""

    topic: str
    partition: int
    offset: int


class LinkedPseudonyms(_Record):
    """The same mail's identifiers under the next key generation, during a rotation grace period.

    The store writes these too (and reads only the served ones), so the next
    generation's aggregates are complete when it starts being served.
    """

    key_id: str
    sender: str
    sender_domain: str
    recipients: list[str]
    sending_ip: str = ""
    url_domains: list[str] = Field(default_factory=list)


class MailFeatures(_Record):
    """A mail after ingest: pseudonyms and content features, no raw identifier or text."""

    kind: EventKind = "mail"
    event_id: str
    #: The trusted event time (epoch seconds) the aggregates advance on: the broker's timestamp
    #: of the input record, bounded by the worker's clock (streams.provenance), not the
    #: ``timestamp`` the sender claimed.
    timestamp: float
    key_id: str
    sender: str
    sender_domain: str
    recipients: list[str]
    #: Pseudonym of the first public relay IP in the Received chain ("" when none).
    sending_ip: str = ""
    #: Pseudonyms of the registrable domains of the mail's URLs (first-seen order).
    url_domains: list[str] = Field(default_factory=list)
    content: list[float]
    #: Keyed-hash buckets of the mail's words (numbers only; see features.tokens).
    tokens: list[int] = Field(default_factory=list)
    source: SourcePosition
    #: Broker timestamp of the input record (ms): where end-to-end latency starts.
    produced_at_ms: int
    #: Pseudonyms under the next key generation while a rotation's grace period lasts (else None).
    linked: LinkedPseudonyms | None = None
    #: Digest of the input record's bytes (streams.provenance; "" when built offline).
    digest: str = Field(default="", pattern=_DIGEST)
    #: Set when the event's id was first seen with other content: ``event_id`` is then the
    #: derived id it is scored under, and this the id it came with.
    original_event_id: str | None = None

    def as_linked(self) -> MailFeatures | None:
        """This event with its linked pseudonyms in place of the served ones (None outside a rotation)."""
        if self.linked is None:
            return None
        return self.model_copy(update={**self.linked.model_dump(), "linked": None})


class ActivityFeatures(_Record):
    """A calendar or contacts event after ingest: pseudonyms and numbers, no raw identifier or text.

    ``sender`` is the organizer (calendar) or the card's owner (contacts), and
    ``recipients`` the invitees or the people the card was shared with, so the
    account-level parts of the score path (served rows, feedback reputation)
    read them as they read a mail's. ``contacts`` are the addresses this event
    adds to the sender's known contacts (the emails of a created card).
    """

    kind: ActivityKind
    event_id: str
    #: The trusted event time, as :attr:`MailFeatures.timestamp`.
    timestamp: float
    key_id: str
    action: str
    sender: str
    sender_domain: str
    recipients: list[str]
    contacts: list[str] = Field(default_factory=list)
    url_domains: list[str] = Field(default_factory=list)
    content: list[float]
    tokens: list[int] = Field(default_factory=list)
    source: SourcePosition
    produced_at_ms: int
    #: Mail's sending IP has no counterpart here (kept so both feature records read alike).
    sending_ip: str = ""
    digest: str = Field(default="", pattern=_DIGEST)
    original_event_id: str | None = None


#: What the scoring stage reads: a mail's features or a calendar/contacts event's.
EventFeatures = MailFeatures | ActivityFeatures


class Reason(_Record):
    """One feature that pushed a verdict towards abuse: its value and its contribution."""

    feature: str
    description: str
    value: float
    #: Contribution to the model's log-odds (path contributions, :mod:`models.reasons`).
    contribution: float


class Verdict(_Record):
    """What Warden decided about one event."""

    kind: EventKind = "mail"
    event_id: str
    action: Action
    score: float
    model_version: str
    source: SourcePosition
    produced_at_ms: int
    decided_at_ms: int
    #: For junk and block: the strongest contributions, largest first (empty for allow).
    reasons: list[Reason] = Field(default_factory=list)
    #: The id the event came with, when it was first seen with other content (``event_id``
    #: is then derived from it and the content's digest); None otherwise.
    original_event_id: str | None = None


class FeatureLogEntry(_Record):
    """The exact feature row a verdict was computed from, for training without skew."""

    kind: EventKind = "mail"
    event_id: str
    timestamp: float
    model_version: str
    schema_hash: str
    features: list[float]
    score: float | None = None
    #: A challenger scored on the same row and never acted on (None without a shadow).
    shadow_version: str | None = None
    shadow_score: float | None = None
    #: As :attr:`Verdict.original_event_id`.
    original_event_id: str | None = None


FeedbackLabel = Literal["abuse", "legit"]
FeedbackSource = Literal["user_report", "ops_review", "appeal", "auto"]


class Feedback(_Record):
    """A label for one event, from a user, an operator, an appeal or an automatic rule.

    Input record (``feedback`` topic, key: event id). ``reporter`` is whatever
    identifies the reporter (an address, an operator id); the feedback agent
    pseudonymises it and nothing raw goes further. ``signature`` authenticates
    the source: HMAC-SHA256 under that source's key over every other field
    (:mod:`streams.feedback_auth`); the agent dead-letters a label without a
    valid one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    feedback_id: str = Field(pattern=_EVENT_ID)
    event_id: str = Field(pattern=_EVENT_ID)
    kind: EventKind = "mail"
    label: FeedbackLabel
    source: FeedbackSource
    reporter: str = Field(min_length=1, max_length=320)
    #: When the label was given (epoch seconds; before the year 2286). Signed, and recorded
    #: nowhere else: reputation and training order advance on the label record's broker time.
    at: float = Field(ge=0, le=10_000_000_000, allow_inf_nan=False)
    reason: str | None = Field(default=None, max_length=500)
    #: Lowercase hex HMAC-SHA256 of :func:`streams.feedback_auth.canonical` under the source's key.
    signature: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ServedRow(_Record):
    """What a verdict was computed from, kept (pseudonymous) so feedback can join it."""

    event_id: str
    kind: EventKind = "mail"
    timestamp: float
    model_version: str
    sender: str
    sender_domain: str
    url_domains: list[str]
    content: list[float]
    tokens: list[int]
    aggregates: list[float]
    #: The next key generation's pseudonyms during a rotation: feedback updates their reputation too.
    linked: LinkedPseudonyms | None = None
    #: As :attr:`Verdict.original_event_id`.
    original_event_id: str | None = None


class TrainingExample(_Record):
    """A served row with its label and weight: what ``warden retrain`` learns from.

    ``signature`` authenticates the feedback agent that made it: HMAC-SHA256
    under the training-example key over every other field
    (:mod:`streams.feedback_auth`); readers that learn refuse an example without a valid one.
    """

    event_id: str
    kind: EventKind = "mail"
    label: int = Field(ge=0, le=1)
    weight: float = Field(ge=0)
    source: FeedbackSource
    labelled_at: float
    row: ServedRow
    signature: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ModelUpdate(_Record):
    """A change of the registry's pointers, announced on ``model-updates``."""

    action: Literal["promote", "rollback", "shadow"]
    version: str | None
    at_ms: int


#: A dead letter keeps its record whole up to this size: every mail of the corpus (the largest
#: is 239 KB) replays from the letter alone, and the letter (base64: 4/3, plus the reason) stays
#: near 350 KB, a third of the 1 MiB a broker accepts by default (Kafka's message.max.bytes).
DEAD_LETTER_WHOLE_BYTES = 256 * 1024
#: Of a larger record only the first bytes are kept, to show what it was; the whole record is
#: on its input topic at ``source`` (:mod:`streams.dead_letters` fetches and checks it).
DEAD_LETTER_EXCERPT_BYTES = 4 * 1024
#: Reasons are Warden's own one-liners; one built from an exception's text is cut here.
DEAD_LETTER_REASON_CHARS = 1000


class DeadLetter(_Record):
    """A record that could not be processed: why, and the record whole or an excerpt of it.

    Bounded whatever the record's size, so that the broker always accepts it:
    ``source`` finds the whole record on its input topic, and its length and
    SHA-256 check the copy found there.
    """

    source: SourcePosition
    reason: str
    #: The record (base64): whole if ``payload_complete``, else its first DEAD_LETTER_EXCERPT_BYTES.
    payload_b64: str
    #: The whole record's length and SHA-256 (hex).
    payload_bytes: int
    payload_sha256: str
    payload_complete: bool
    failed_at_ms: int

    @model_validator(mode="before")
    @classmethod
    def _written_unbounded(cls, data: object) -> object:
        # Letters written before they were bounded hold the whole record and no digest.
        if isinstance(data, dict) and "payload_sha256" not in data:
            payload = data.get("payload_b64")
            if isinstance(payload, str):
                digest = hashlib.sha256(base64.b64decode(payload)).hexdigest()
                return {**data, "payload_sha256": digest, "payload_complete": True}
        return data

    @classmethod
    def of(cls, source: SourcePosition, reason: str, payload: bytes, failed_at_ms: int) -> DeadLetter:
        """The dead letter of ``payload``, read at ``source``: bounded (see DEAD_LETTER_WHOLE_BYTES)."""
        complete = len(payload) <= DEAD_LETTER_WHOLE_BYTES
        kept = payload if complete else payload[:DEAD_LETTER_EXCERPT_BYTES]
        if len(reason) > DEAD_LETTER_REASON_CHARS:
            reason = reason[: DEAD_LETTER_REASON_CHARS - 1] + "…"
        return cls(
            source=source,
            reason=reason,
            payload_b64=base64.b64encode(kept).decode("ascii"),
            payload_bytes=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload_complete=complete,
            failed_at_ms=failed_at_ms,
        )

    def excerpt(self) -> bytes:
        """The bytes the letter holds: the whole record, or its first bytes if it was larger."""
        return base64.b64decode(self.payload_b64)

    def payload(self) -> bytes:
        """The whole record; raises IncompleteDeadLetter if the letter holds only an excerpt."""
        if not self.payload_complete:
            raise IncompleteDeadLetter(
                f"the letter holds {DEAD_LETTER_EXCERPT_BYTES} of {self.payload_bytes} bytes; the record "
                f"is at {self.source.topic}/{self.source.partition}@{self.source.offset}"
            )
        return self.excerpt()


R = TypeVar("R", bound=BaseModel)


def encode(record: BaseModel) -> bytes:
    """The JSON bytes of a record, as sent on its topic."""
    return record.model_dump_json().encode("utf-8")


def decode(record_type: type[R], raw: bytes) -> R:
    """Parse a derived record written by Warden; raises MalformedRecord."""
    try:
        return record_type.model_validate_json(raw)
    except ValidationError as exc:
        raise MalformedRecord(reason_of(exc)) from None


def reason_of(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    more = exc.error_count() - 1
    suffix = f" (and {more} more)" if more else ""
    return f"{where}: {first['msg']}{suffix}"[:300]
