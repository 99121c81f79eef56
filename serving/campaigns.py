"""Campaign grouping: events that share a content fingerprint, URL domain or sending IP.

Every event names a few *group keys*, in priority order: its content band
keys (:mod:`features.fingerprint`), the pseudonyms of its URL registrable
domains, and the pseudonym of its sending IP. A key is *claimed* by the first
group that uses it. An event joins the group of its first claimed key (or
starts a group of its own), then claims its unclaimed keys for that group,
so a campaign that rotates domains but keeps its template, or keeps its
relay while rotating text, still lands in one group. Groups never merge:
an event that touches two groups joins the higher-priority one.

:func:`assign` is the pure rule; the Redis queue (:mod:`serving.review`)
and the offline measurement (:mod:`infra.review_measure`) both call it.
All keys are pseudonyms or digests of keyed token buckets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from features.fingerprint import band_keys
from streams.records import MailFeatures

GroupedBy = Literal["content", "url_domain", "sending_ip", "alone"]
_KIND: dict[str, GroupedBy] = {"c": "content", "u": "url_domain", "i": "sending_ip"}


def group_keys(features: MailFeatures) -> list[str]:
    """The event's group keys in priority order: content, URL domains, sending IP."""
    keys = [f"c:{band}" for band in band_keys(features.tokens)]
    keys.extend(f"u:{domain}" for domain in features.url_domains)
    if features.sending_ip:
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


def assign(
    events: Sequence[tuple[str, Sequence[str]]], claimed: Mapping[str, str]
) -> tuple[list[Assignment], dict[str, str]]:
    """Groups for ``(event id, keys)`` in order, given the keys already claimed.

    Returns each event's assignment and the new claims (key -> group) to
    store. Events of one batch see each other's claims, in order.
    """
    new: dict[str, str] = {}
    out = []
    for event_id, keys in events:
        group: str | None = None
        grouped_by: GroupedBy = "alone"
        for key in keys:
            found = new.get(key) or claimed.get(key)
            if found:
                group, grouped_by = found, _KIND[key[0]]
                break
        if group is None:
            group = new_group_id(event_id)
        for key in keys:
            if key not in new and key not in claimed:
                new[key] = group
        out.append(Assignment(event_id, group, grouped_by))
    return out, new
