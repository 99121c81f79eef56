"""The feature definitions: one ordered schema for training and serving.

A model row is ``CONTENT`` (computed at ingest from the raw mail, which never
leaves that stage) followed by ``AGGREGATES`` (behavioural aggregates kept in
the feature store). Both the offline trainer and the stream processors build
rows through this module; :data:`SCHEMA_HASH` identifies the exact schema, is
stored with every model, and the scorer refuses a model trained on another.

Aggregate names are derived from their parameters (``sender_events_1h``),
never typed twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from features.pseudonym import address_domain
from features.text import count_images, html_to_text, is_ip_literal, longest_run, url_host
from streams.records import MailEvent

#: Bump when a definition changes meaning without changing its name.
DEFINITIONS_VERSION = 1

_SPAM_PHRASES = re.compile(
    r"\b(free|click here|act now|limited time|100%|guarantee[d]?|winner|cash|credit|"
    r"viagra|mortgage|unsubscribe|remove me|no obligation|risk[- ]free|order now|"
    r"earn \$|\$\$\$|money back|special promotion|lowest price|dear friend)\b",
    re.IGNORECASE,
)
_MESSAGE_ID = re.compile(r"^\s*<[^<>@\s]+@[^<>@\s]+>\s*$")
_REPLY_PREFIX = re.compile(r"^\s*(re|fwd?|aw)\s*:", re.IGNORECASE)
_LIST_HEADERS = frozenset({"list-id", "list-unsubscribe", "list-post", "mailing-list"})


@dataclass(frozen=True)
class MailView:
    """A mail parsed once for all content features (ingest stage only: holds raw text)."""

    subject: str
    body: str
    html: str
    text_chars: int
    hosts: tuple[str, ...]
    urls: tuple[str, ...]
    headers: dict[str, list[str]]
    sender: str
    sender_domain: str
    recipients: int

    @classmethod
    def of(cls, event: MailEvent) -> MailView:
        headers: dict[str, list[str]] = {}
        for name, value in event.headers:
            headers.setdefault(name.lower(), []).append(value)
        body = event.text if event.text else html_to_text(event.html)
        return cls(
            subject=event.subject,
            body=body,
            html=event.html,
            text_chars=len(event.text),
            hosts=tuple(url_host(u) for u in event.urls),
            urls=tuple(event.urls),
            headers=headers,
            sender=event.sender,
            sender_domain=address_domain(event.sender),
            recipients=len(event.recipients),
        )

    def header(self, name: str) -> str:
        values = self.headers.get(name, [])
        return values[0] if values else ""


@dataclass(frozen=True)
class ContentFeature:
    """A number computed from one mail alone."""

    name: str
    compute: Callable[[MailView], float]
    doc: str


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


_UPPER = re.compile(r"[A-Z]")
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"[0-9]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
#: Character statistics look at the first this-many characters of the body.
_SAMPLE = 20_000


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(pattern.findall(text))


def _upper_ratio(text: str) -> float:
    """Share of ASCII letters that are capitals."""
    return _ratio(_count(_UPPER, text), _count(_LETTER, text))


def _domain_differs(view: MailView, header: str) -> float:
    value = view.header(header)
    if not value:
        return 0.0
    match = re.search(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)", value)
    if match is None:
        return 1.0
    return float(match.group(1).lower() != view.sender_domain)


CONTENT: tuple[ContentFeature, ...] = (
    ContentFeature("subject_chars", lambda v: float(len(v.subject)), "subject length"),
    ContentFeature(
        "subject_upper_ratio", lambda v: _upper_ratio(v.subject), "share of subject letters in capitals"
    ),
    ContentFeature(
        "subject_punct_run",
        lambda v: float(longest_run(v.subject, "!?$*")),
        "longest run of ! ? $ * in the subject",
    ),
    ContentFeature(
        "subject_is_reply",
        lambda v: float(bool(_REPLY_PREFIX.match(v.subject))),
        "subject starts with Re:/Fwd:",
    ),
    ContentFeature("body_chars_log", lambda v: math.log1p(len(v.body)), "log body length"),
    ContentFeature("html_chars_log", lambda v: math.log1p(len(v.html)), "log HTML length"),
    ContentFeature(
        "html_only", lambda v: float(bool(v.html) and v.text_chars == 0), "HTML body with no plain-text part"
    ),
    ContentFeature(
        "html_share",
        lambda v: _ratio(len(v.html), len(v.html) + v.text_chars),
        "HTML share of the body bytes",
    ),
    ContentFeature(
        "body_upper_ratio", lambda v: _upper_ratio(v.body[:_SAMPLE]), "share of body letters in capitals"
    ),
    ContentFeature(
        "body_exclaims_per_kchar",
        lambda v: 1000.0 * _ratio(v.body.count("!"), len(v.body)),
        "exclamation marks per 1,000 body characters",
    ),
    ContentFeature(
        "body_digit_ratio",
        lambda v: _ratio(_count(_DIGIT, v.body[:_SAMPLE]), len(v.body[:_SAMPLE])),
        "share of digits in the body",
    ),
    ContentFeature(
        "non_ascii_ratio",
        lambda v: _ratio(
            _count(_NON_ASCII, v.subject + v.body[:_SAMPLE]), len(v.subject) + len(v.body[:_SAMPLE])
        ),
        "share of non-ASCII characters",
    ),
    ContentFeature(
        "spam_phrases",
        lambda v: float(len(_SPAM_PHRASES.findall(v.subject + " " + v.body[:50_000]))),
        "count of stock spam phrases",
    ),
    ContentFeature("url_count", lambda v: float(len(v.urls)), "URLs in the body"),
    ContentFeature("url_hosts", lambda v: float(len(set(v.hosts) - {""})), "distinct URL hosts"),
    ContentFeature(
        "url_ip_literals",
        lambda v: float(sum(is_ip_literal(h) for h in v.hosts)),
        "URLs whose host is an IP address",
    ),
    ContentFeature("url_max_chars", lambda v: float(max((len(u) for u in v.urls), default=0)), "longest URL"),
    ContentFeature("images", lambda v: float(count_images(v.html)), "<img> tags"),
    ContentFeature("recipients", lambda v: float(v.recipients), "recipient count"),
    ContentFeature(
        "received_hops", lambda v: float(len(v.headers.get("received", []))), "Received headers (relay hops)"
    ),
    ContentFeature(
        "message_id_ok",
        lambda v: float(bool(_MESSAGE_ID.match(v.header("message-id")))),
        "Message-ID present and well formed",
    ),
    ContentFeature(
        "reply_to_differs",
        lambda v: _domain_differs(v, "reply-to"),
        "Reply-To domain differs from the sender's",
    ),
    ContentFeature(
        "return_path_differs",
        lambda v: _domain_differs(v, "return-path"),
        "Return-Path domain differs from the sender's",
    ),
    ContentFeature(
        "list_headers",
        lambda v: float(bool(_LIST_HEADERS & v.headers.keys())),
        "carries mailing-list headers",
    ),
    ContentFeature(
        "has_mailer",
        lambda v: float(bool(v.header("x-mailer") or v.header("user-agent"))),
        "names its mail client",
    ),
    ContentFeature(
        "sender_local_digits",
        lambda v: float(sum(c.isdigit() for c in v.sender.rpartition("@")[0])),
        "digits in the sender's local part",
    ),
    ContentFeature(
        "header_count", lambda v: float(sum(len(x) for x in v.headers.values())), "number of headers"
    ),
)


Entity = Literal["sender"]
Field = Literal["recipients"]


def _window_name(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400 * 24}h" if seconds == 86400 else f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class WindowCount:
    """Events by one entity in the sliding window ending at (and including) this event."""

    entity: Entity
    window_s: int

    @property
    def name(self) -> str:
        return f"{self.entity}_events_{_window_name(self.window_s)}"


@dataclass(frozen=True)
class DistinctCount:
    """Distinct values of a field for one entity over hourly buckets covering the window."""

    entity: Entity
    field: Field
    window_s: int

    @property
    def name(self) -> str:
        return f"{self.entity}_distinct_{self.field}_{_window_name(self.window_s)}"

    @property
    def buckets(self) -> int:
        return max(1, self.window_s // 3600)


Aggregate = WindowCount | DistinctCount

SENDER_EVENTS_1H = WindowCount("sender", 3600)
SENDER_DISTINCT_RECIPIENTS_24H = DistinctCount("sender", "recipients", 86400)
AGGREGATES: tuple[Aggregate, ...] = (SENDER_EVENTS_1H, SENDER_DISTINCT_RECIPIENTS_24H)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in CONTENT) + tuple(a.name for a in AGGREGATES)


def _schema_hash(names: Sequence[str]) -> str:
    document = json.dumps({"version": DEFINITIONS_VERSION, "features": list(names)})
    return hashlib.sha256(document.encode("utf-8")).hexdigest()[:16]


SCHEMA_HASH: str = _schema_hash(FEATURE_NAMES)


def content_features(event: MailEvent) -> list[float]:
    """The content part of a row, in schema order. Called once per mail at ingest."""
    view = MailView.of(event)
    return [float(feature.compute(view)) for feature in CONTENT]


def row(content: Sequence[float], aggregates: Sequence[float]) -> list[float]:
    """A full model row: content then aggregates, in schema order."""
    if len(content) != len(CONTENT) or len(aggregates) != len(AGGREGATES):
        raise ValueError(
            f"row parts have {len(content)}+{len(aggregates)} values, "
            f"schema wants {len(CONTENT)}+{len(AGGREGATES)}"
        )
    return [*content, *aggregates]
