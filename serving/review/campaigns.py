"""Campaign grouping: events that share a content fingerprint, URL domain, sending IP or young account.

Every event names a few *group keys*, in priority order: its content band
keys (:mod:`features.fingerprint`), the pseudonyms of its URL registrable
domains and of its sending IP while those are young (first seen within a
day: campaign infrastructure, not a mailing list's relay); a calendar or
contacts event names its young URL domains and, while the account is young,
the account's pseudonym (a throwaway organizer or card owner). A key is *claimed* by the first
group that uses it. An event joins the group of its first claimed key (or
starts a group of its own), then claims its unclaimed keys for that group, so a
campaign that rotates domains but keeps its template, or keeps its relay
while rotating text, still lands in one group. An event whose content
keys reach two groups strongly (several bands each) bridges them: the other
is merged into the one it joined (early members of a campaign often share
no key with each other yet; the mails after them do).

:func:`assign` is the pure rule; the Redis queue (:mod:`serving.review.queue`)
and the offline measurement (:mod:`serving.review.measure`) both call it.
All keys are pseudonyms or digests of keyed token buckets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from warden.features.definitions import FEATURE_NAMES, SCHEMAS
from warden.features.fingerprint import band_keys
from warden.streams.records import ActivityFeatures, EventFeatures

GroupedBy = Literal["content", "url_domain", "sending_ip", "account", "alone"]
_KIND: dict[str, GroupedBy] = {"c": "content", "u": "url_domain", "i": "sending_ip", "a": "account"}


#: URL domains and sending IPs group events only while this young (first seen within, hours).
YOUNG_HOURS = 24.0
#: An event bridges (merges) another group only if this many of its content keys point there.
MERGE_MIN_CONTENT_KEYS = 3
#: Rows per content band of calendar and contacts events (mail: features.fingerprint.ROWS).
ACTIVITY_ROWS = 8
_URL_AGE = FEATURE_NAMES.index("url_domain_age_h_min")
_IP_AGE = FEATURE_NAMES.index("ip_age_h")
_SENDER_DOMAIN_AGE = FEATURE_NAMES.index("sender_domain_age_h")


def _activity_columns(kind: str) -> tuple[int, int]:
    names = SCHEMAS[kind].feature_names
    account_age = next(i for i, name in enumerate(names) if name.endswith("_account_age_h"))
    return names.index("url_domain_age_h_min"), account_age


def group_keys(features: EventFeatures, row: Sequence[float] | np.ndarray) -> list[str]:
    """The event's group keys in priority order: content, young URL domains, young sending IP.

    ``row`` is the event's served feature row (its kind's schema order). A
    calendar or contacts event has no sending IP; its keys are content, its
    URL domains while the youngest is :data:`YOUNG_HOURS` young, and its
    account (organizer or card owner) while the account is that young.

    For mail, long-established infrastructure (a mailing list's relay, a popular site) is not a campaign
    signal and would chain unrelated mail into one group, so URL domains and
    IPs are keys only for mail from a sender domain first seen within
    :data:`YOUNG_HOURS`, and only while the youngest URL domain (or the IP)
    is that young too. (Measured with ``warden review --measure``'s stream:
    URL-domain keys without the sender-domain condition doubled the share of
    mail grouped against its label.)
    """
    if isinstance(features, ActivityFeatures):
        keys = [f"c:{band}" for band in band_keys(features.tokens, ACTIVITY_ROWS)]
        url_age, account_age = _activity_columns(features.kind)
        if features.url_domains and row[url_age] < YOUNG_HOURS:
            keys.extend(f"u:{domain}" for domain in features.url_domains)
        if row[account_age] < YOUNG_HOURS:
            keys.append(f"a:{features.sender}")
        return keys
    keys = [f"c:{band}" for band in band_keys(features.tokens)]
    if row[_SENDER_DOMAIN_AGE] >= YOUNG_HOURS:
        return keys
    if features.url_domains and row[_URL_AGE] < YOUNG_HOURS:
        keys.extend(f"u:{domain}" for domain in features.url_domains)
    if features.sending_ip and row[_IP_AGE] < YOUNG_HOURS:
        keys.append(f"i:{features.sending_ip}")
    return keys


def new_group_id(event_id: str) -> str:
    """A group started by ``event_id`` (deterministic, so a replay starts the same group)."""
    return "g" + hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Assignment:
    """Where one event went: its group and the key that put it there."""

    event_id: str
    group: str
    grouped_by: GroupedBy


@dataclass(frozen=True)
class Grouping:
    """The outcome of :func:`assign` for a batch of events."""

    assignments: list[Assignment]
    #: Keys to point at a group (new claims, and claims moved to the group an event joined).
    claims: dict[str, str]
    #: Groups absorbed in this batch -> the group they joined (in the order they happened).
    merges: dict[str, str]


def resolve(group: str, aliases: Mapping[str, str]) -> str:
    """The group ``group`` was merged into, following ``aliases`` (bounded, so cycles cannot hang)."""
    for _ in range(16):
        target = aliases.get(group)
        if not target or target == group:
            return group
        group = target
    return group


def assign(
    events: Sequence[tuple[str, Sequence[str]]],
    claimed: Mapping[str, str],
    aliases: Mapping[str, str] | None = None,
) -> Grouping:
    """Groups for ``(event id, keys)`` in order, given the keys already claimed.

    An event joins the group of its highest-priority claimed key (after
    following ``aliases``: groups merged earlier). If at least
    :data:`MERGE_MIN_CONTENT_KEYS` of its content keys reach another group,
    the event bridges them: that group is merged into the one it joined.
    The event claims its unclaimed keys. Events of one batch see each
    other's claims and merges, in order.
    """
    known: dict[str, str] = dict(aliases or {})
    current: dict[str, str] = dict(claimed)
    claims: dict[str, str] = {}
    merges: dict[str, str] = {}
    out = []
    for event_id, keys in events:
        found: list[str] = []
        content_hits: dict[str, int] = {}
        grouped_by: GroupedBy = "alone"
        for key in keys:
            owner = current.get(key)
            if owner:
                root = resolve(owner, known)
                if root not in found:
                    if not found:
                        grouped_by = _KIND[key[0]]
                    found.append(root)
                if key.startswith("c:"):
                    content_hits[root] = content_hits.get(root, 0) + 1
        group = found[0] if found else new_group_id(event_id)
        for other in found[1:]:
            if content_hits.get(other, 0) >= MERGE_MIN_CONTENT_KEYS:
                merges[other] = group
                known[other] = group
        for key in keys:
            if key not in current:
                current[key] = group
                claims[key] = group
        out.append(Assignment(event_id, group, grouped_by))
    return Grouping(out, claims, merges)
