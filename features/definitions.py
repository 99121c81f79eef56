"""The feature definitions: one ordered schema for training and serving.

A model row has three parts, in this order:

1. ``CONTENT`` (:mod:`features.ingest.content`): numbers computed at ingest from the
   raw mail, which never leaves that stage;
2. ``EVIDENCE`` (:mod:`features.tokens`): text evidence from the model's
   token table, applied at scoring to the keyed token buckets ingest emits;
3. ``AGGREGATES``: behavioural aggregates kept in the feature store.

Both the offline trainer and the stream processors build rows through this
module; :data:`SCHEMA_HASH` identifies the exact schema, is stored with every
model, and the registry and scorer refuse a model trained on another.
Aggregate names are derived from their parameters (``sender_events_1h``),
never typed twice.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from warden.features.ingest.activity import CALENDAR_CONTENT, CONTACTS_CONTENT, ActivityFeature
from warden.features.ingest.content import CONTENT, ContentFeature, MailView
from warden.features.ingest.text import url_host, words
from warden.features.store.aggregations import AGGREGATES, CALENDAR_AGGREGATES, CONTACTS_AGGREGATES, Aggregate
from warden.features.tokens import BUCKETS, EVIDENCE_NAMES, MAX_TOKENS_PER_MESSAGE
from warden.streams.records import EventKind, MailEvent

__all__ = [
    "AGGREGATES",
    "CONTENT",
    "EVIDENCE_NAMES",
    "FEATURE_DOCS",
    "FEATURE_NAMES",
    "SCHEMAS",
    "SCHEMA_HASH",
    "Aggregate",
    "ContentFeature",
    "MailView",
    "Schema",
    "content_features",
    "message_words",
    "row",
]

#: Bump when a definition changes meaning without changing its name.
DEFINITIONS_VERSION = 4


FEATURE_NAMES: tuple[str, ...] = (
    tuple(f.name for f in CONTENT) + EVIDENCE_NAMES + tuple(a.name for a in AGGREGATES)
)


def _schema_hash(names: Sequence[str], kind: str = "mail") -> str:
    # Mail's document is unchanged from before kinds existed, so mail models keep their hash.
    extra = {} if kind == "mail" else {"kind": kind}
    document = json.dumps(
        {
            **extra,
            "version": DEFINITIONS_VERSION,
            "features": list(names),
            "token_buckets": BUCKETS,
            "tokens_per_message": MAX_TOKENS_PER_MESSAGE,
        }
    )
    return hashlib.sha256(document.encode("utf-8")).hexdigest()[:16]


SCHEMA_HASH: str = _schema_hash(FEATURE_NAMES)

_EVIDENCE_DOCS = {
    "token_linear_logit": "words of the mail, weighed by the model's learned token weights",
    "token_known_share": "share of the mail's words the model has weights for",
}

#: A reader's description of every feature, for the reasons on a verdict.
FEATURE_DOCS: dict[str, str] = {
    **{f.name: f.doc for f in CONTENT},
    **_EVIDENCE_DOCS,
    **{a.name: a.description for a in AGGREGATES},
}


def content_features(event: MailEvent) -> list[float]:
    """The content part of a row, in schema order. Called once per mail at ingest."""
    view = MailView.of(event)
    return [float(feature.compute(view)) for feature in CONTENT]


_TOKEN_HEADERS = frozenset(
    {"x-mailer", "user-agent", "content-type", "x-mailing-list", "list-id", "precedence"}
)


def message_words(event: MailEvent, url_hosts: Sequence[str] | None = None) -> list[str]:
    """The words text evidence is learned from: subject, body, URL hosts and a few headers.

    Subject words and header words carry a prefix so they are told apart from
    body words; everything here is turned into keyed buckets at ingest.
    ``url_hosts`` is :func:`~features.ingest.text.url_host` of each of ``event.urls``
    when the caller has them already (:attr:`MailView.hosts`).
    """
    body = event.text if event.text else event.html
    hosts = url_hosts[:50] if url_hosts is not None else [url_host(u) for u in event.urls[:50]]
    # The subject's first 20,000 characters (the body's first 100,000): a huge subject without words
    # would be scanned to its end for them.
    found = [f"s:{w}" for w in words(event.subject[:20_000], limit=50)]
    found += words(body[:100_000])
    found += [f"host:{host}" for host in hosts]
    found.append(f"from:{event.sender.rpartition('@')[2].lower()}")
    for name, value in event.headers[:100]:
        lowered = name.lower()
        if lowered in _TOKEN_HEADERS:
            found += [f"h:{lowered}:{w}" for w in words(value, limit=8)]
    return found


def row(content: Sequence[float], evidence: Sequence[float], aggregates: Sequence[float]) -> list[float]:
    """A full model row: content, evidence, then aggregates, in schema order."""
    if (len(content), len(evidence), len(aggregates)) != (len(CONTENT), len(EVIDENCE_NAMES), len(AGGREGATES)):
        raise ValueError(
            f"row parts have {len(content)}+{len(evidence)}+{len(aggregates)} values, "
            f"schema wants {len(CONTENT)}+{len(EVIDENCE_NAMES)}+{len(AGGREGATES)}"
        )
    return [*content, *evidence, *aggregates]


@dataclass(frozen=True)
class Schema:
    """One event kind's ordered model row: content, text evidence, aggregates; and its hash.

    Every kind has its own schema and hash; a model carries the hash of the
    schema it was trained on and the scorer of that kind refuses any other.
    """

    kind: EventKind
    content_names: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    docs: dict[str, str]

    # Cached: both are read per scored batch, and the hash is a JSON document's SHA-256.
    @functools.cached_property
    def feature_names(self) -> tuple[str, ...]:
        return self.content_names + EVIDENCE_NAMES + tuple(a.name for a in self.aggregates)

    @functools.cached_property
    def schema_hash(self) -> str:
        return _schema_hash(self.feature_names, self.kind)

    def row(
        self, content: Sequence[float], evidence: Sequence[float], aggregates: Sequence[float]
    ) -> list[float]:
        """A full model row of this kind, in schema order."""
        wanted = (len(self.content_names), len(EVIDENCE_NAMES), len(self.aggregates))
        if (len(content), len(evidence), len(aggregates)) != wanted:
            raise ValueError(
                f"{self.kind} row parts have {len(content)}+{len(evidence)}+{len(aggregates)} values, "
                f"schema wants {wanted[0]}+{wanted[1]}+{wanted[2]}"
            )
        return [*content, *evidence, *aggregates]


def _schema(
    kind: EventKind,
    content: Sequence[ContentFeature] | Sequence[ActivityFeature],
    aggregates: tuple[Aggregate, ...],
) -> Schema:
    return Schema(
        kind=kind,
        content_names=tuple(f.name for f in content),
        aggregates=aggregates,
        docs={
            **{f.name: f.doc for f in content},
            **_EVIDENCE_DOCS,
            **{a.name: a.description for a in aggregates},
        },
    )


#: The schema of every event kind; ``SCHEMAS["mail"]`` is exactly FEATURE_NAMES / SCHEMA_HASH.
SCHEMAS: dict[str, Schema] = {
    "mail": _schema("mail", CONTENT, AGGREGATES),
    "calendar": _schema("calendar", CALENDAR_CONTENT, CALENDAR_AGGREGATES),
    "contacts": _schema("contacts", CONTACTS_CONTENT, CONTACTS_AGGREGATES),
}
