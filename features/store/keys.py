"""The Redis key layout, built in one place.

Every key is ``<prefix>:{<tag>:<pseudonym>}:<kind>:<family>``. The part in
braces is a Redis Cluster hash tag: all keys of one entity live in one slot,
so one server-side script updates them atomically on a cluster too. Senders
and recipients are both *accounts* (tag ``a``): a recipient's call can record
who wrote to it where that account's own sender call will later look.

=============================================  ======  =========================================
key (after ``<prefix>:{<tag>:<pseudonym>}:``)   type    holds
=============================================  ======  =========================================
``<kind>:w<window>``                           hash    bucket index -> events (60 buckets)
``<kind>:hll:<field>:<bucket>``                hll     recipients or senders seen in that bucket
``<kind>:first``                               string  earliest event time seen
``<kind>:rep``                                 hash    ``a:<day>`` / ``l:<day>`` -> report weight
``account:out``                                set     accounts this account wrote to
``account:in``                                 set     accounts that wrote to this account
``account:contacts``                           set     the account's known contacts (calendar, contacts)
``account:first``                              string  the account's first calendar/contacts event time
``<kind>:memo:<hour>``                         hash    ``<event id>@<digest>`` -> the values served
=============================================  ======  =========================================

Besides the entities' keys, each event id has one key of its own,
``<prefix>:{e:<event id>}:digest`` (hash, one field ``d``: the first 16 hex
digits of the content digest it was first seen with, as two 32-bit numbers),
in a slot of its own on a cluster.

Tags: ``a`` account (sender, recipient), ``d`` sender domain, ``i`` sending
IP, ``u`` URL registrable domain; pseudonyms come from
:mod:`features.ingest.pseudonym`, so no raw identifier appears in a key or value.
Tag ``e`` holds an event id, which is not a person's identifier (it is the
key of the ``verdicts`` topic). Every key gets a TTL on every write:
aggregates ``RedisSettings.ttl_seconds`` (retention), memo hashes
``RedisSettings.memo_ttl_seconds``, and event id keys, from the id's first
sight, as long as its served row lives or its memo, whichever is longer
(``max(memo_ttl_seconds, FeedbackSettings.row_ttl_seconds)`` in a worker).

Once-only effects: each call (:mod:`features.store.operations`) first looks up its
memo field, the event id and the first 16 hex digits of the digest of the
input record's bytes (:mod:`streams.provenance`), in the memo hash of the
event's hour. If that content was applied before, it returns the values
stored then and changes nothing; otherwise it applies the updates, stores the
values it served, and refreshes the TTLs, all in one atomic script. An id
that comes again with *other* content is therefore applied as a new event,
and the id's own key, read in the same round trip, says so: it keeps the
digest the id was first seen with. (Events built offline, for training,
carry no digest: their memo field is the id alone and they register nothing.)
Every family's final state is also independent of the order events arrive
in (counters add, sets and HyperLogLogs union, first-seen takes the minimum,
window trimming depends only on the newest bucket), so a replay, a duplicate
or a reordering within the window leaves every aggregate as if each event
had been applied once, in any order.

Memo hashes written before the digest was part of the memo field (bare event
ids) are not found by the new fields: events replayed across that upgrade,
within the memo TTL, are applied once more.
"""

from __future__ import annotations

from dataclasses import dataclass

from warden.features.store.aggregations import Entity


@dataclass(frozen=True)
class Keys:
    """Builds every Redis key Warden writes, under one prefix."""

    prefix: str

    def base(self, entity: Entity, pseudonym: str) -> str:
        return f"{self.prefix}:{{{entity.tag}:{pseudonym}}}:{entity.kind}"

    def memo(self, entity: Entity, pseudonym: str, hour: int) -> str:
        return f"{self.base(entity, pseudonym)}:memo:{hour}"

    def first_digest(self, event_id: str) -> str:
        """The key that keeps the content digest an event id was first seen with (its own slot)."""
        return f"{self.prefix}:{{e:{event_id}}}:digest"

    def window(self, entity: Entity, pseudonym: str, window_s: int) -> str:
        return f"{self.base(entity, pseudonym)}:w{window_s}"

    def distinct(self, entity: Entity, pseudonym: str, field: str, bucket: int) -> str:
        return f"{self.base(entity, pseudonym)}:hll:{field}:{bucket}"

    def first_seen(self, entity: Entity, pseudonym: str) -> str:
        return f"{self.base(entity, pseudonym)}:first"

    def reputation(self, entity: Entity, pseudonym: str) -> str:
        return f"{self.base(entity, pseudonym)}:rep"

    def account(self, pseudonym: str, family: str) -> str:
        """An account-level set (``out``/``in``), shared by the sender and recipient roles."""
        return f"{self.prefix}:{{a:{pseudonym}}}:account:{family}"

    def pattern(self) -> str:
        """A SCAN pattern that matches every key under this prefix."""
        return f"{self.prefix}:*"

    @staticmethod
    def is_memo(key: str) -> bool:
        """True for the once-only bookkeeping (memo hashes and event id keys), not aggregates."""
        return ":memo:" in key or (":{e:" in key and key.endswith("}:digest"))
