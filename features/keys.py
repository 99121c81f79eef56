"""The Redis key layout, built in one place.

Every key is ``<prefix>:{<entity tag>}:<family>[:<bucket>]``. The part in
braces is a Redis Cluster hash tag: all keys of one entity live in one slot,
so one server-side script can update them atomically on a cluster too.

=========================================  ======  ===================================
key                                        type    holds
=========================================  ======  ===================================
``<p>:{s:<sender>}:ev``                    zset    event ids scored by event time
``<p>:{s:<sender>}:res``                   hash    event id -> the values served for it
``<p>:{s:<sender>}:rcpt:<hour>``           hll     recipients seen in that hour bucket
=========================================  ======  ===================================

``<sender>`` is the sender's pseudonym (``features.pseudonym``); hours are
``floor(event time / 3600)``. No raw identifier appears in a key or value.
Every key gets the retention TTL (``RedisSettings.ttl_seconds``) on every
write, so an idle entity disappears after that long.

Once-only effects: one script per event (``features.store``) first looks the
event id up in the results hash. If the event was applied before, it returns
the values stored then and changes nothing; otherwise it applies the update,
stores the values it served, and refreshes the TTLs, all atomically. The
families are idempotent besides (a zset member is the event id; re-adding
recipients to a HyperLogLog leaves it unchanged). Replaying input after a
crash therefore leaves every key as if each event had been applied once, and
a replayed event is served exactly the features it was served the first time.
Results are trimmed with their events (older than twice the count window).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Builds every Redis key Warden writes, under one prefix."""

    prefix: str

    def _entity(self, kind: str, pseudonym: str) -> str:
        return f"{self.prefix}:{{{kind}:{pseudonym}}}"

    def sender_events(self, sender: str) -> str:
        return f"{self._entity('s', sender)}:ev"

    def sender_results(self, sender: str) -> str:
        return f"{self._entity('s', sender)}:res"

    def sender_recipients(self, sender: str, hour: int) -> str:
        return f"{self._entity('s', sender)}:rcpt:{hour}"

    def pattern(self) -> str:
        """A SCAN pattern that matches every key under this prefix."""
        return f"{self.prefix}:*"
