"""The ops review queue in Redis: campaign groups ranked by the value of a review.

Fed from the scoring path once per micro-batch (:meth:`ReviewQueue.enqueue`,
two round trips: one script reads the groups claiming the batch's group keys
with their aliases, values and counts; then the merges as commands and one
script with the claims and every event's own writes), read by ``warden
review``. Every key holds pseudonyms and numbers only, lives in one Redis
Cluster slot (hash tag ``{rq}``), and expires ``ReviewSettings.ttl_seconds``
after its last write.

Keys (after ``<prefix>.review:{rq}:``; outside ``<prefix>:*``, so scans of the
feature store's aggregates never meet them):

=================  ======  ====================================================
key                type    holds
=================  ======  ====================================================
``q``              zset    group id -> value of reviewing it (serving.review.ranking);
                           at most ``max_groups`` (the least valuable dropped)
``g:<group>``      hash    counts (``n``, per action), score sum, first/last
                           event time, how it was grouped, ``label`` once done
``m:<group>``      zset    member event id -> event time; at most
                           ``max_members`` (the oldest dropped)
``e:<event id>``   string  the :class:`Candidate` (JSON) a reviewer sees
``k:<group key>``  string  the group that claimed a key (serving.review.campaigns)
``a:<group>``      string  the group it was merged into
=================  ======  ====================================================

A group whose hash has expired is dropped from ``q`` when the queue is read.
Merges and counts are not atomic across workers: two workers merging the
same groups at once can leave a count or a value slightly off (the ranking
tolerates it; labels always go to the member list).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, ConfigDict

from warden.features.definitions import FEATURE_NAMES
from warden.features.store.redis import RedisClient
from warden.serving.exceptions import ReviewError
from warden.serving.review.campaigns import GroupedBy, assign, group_keys, resolve
from warden.serving.review.ranking import RankingModel, review_features
from warden.streams.records import FeatureLogEntry, MailFeatures, Reason, Verdict
from warden.streams.settings import ReviewSettings

#: Actor aggregates a reviewer sees beside each candidate (names from the feature schema).
ACTOR_AGGREGATES: tuple[str, ...] = (
    "sender_events_24h",
    "sender_distinct_recipients_24h",
    "sender_age_h",
    "sender_domain_age_h",
    "url_domain_distinct_senders_24h_max",
    "ip_distinct_senders_24h",
)
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


class Candidate(BaseModel):
    """One verdict as a reviewer sees it: no raw identifier or text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    kind: str
    action: str
    score: float
    model_version: str
    timestamp: float
    reasons: list[Reason]
    #: Pseudonym of the sender account.
    actor: str
    actor_aggregates: dict[str, float]
    group: str
    grouped_by: GroupedBy
    #: P(this verdict is wrong) under the ranking model.
    p_wrong: float


@dataclass(frozen=True)
class QueuedGroup:
    """A campaign group at the top of the queue."""

    group: str
    value: float
    size: int
    actions: dict[str, int]
    mean_score: float
    first_seen: float
    last_seen: float
    grouped_by: str
    label: str | None
    #: The newest member candidates (what the table shows).
    examples: list[Candidate]

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "value": self.value,
            "size": self.size,
            "actions": self.actions,
            "mean_score": self.mean_score,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "grouped_by": self.grouped_by,
            "label": self.label,
            "examples": [c.model_dump() for c in self.examples],
        }


#: The reads of one batch, in one script. KEYS: ``q`` (declared so that a cluster routes the
#: script to the primary of the ``{rq}`` slot, where every key it reads lives). ARGV: the key
#: base, then one JSON array of the batch's distinct group keys. Returns the group claiming each
#: key (nil where none), the distinct claiming groups, and for each of those its alias, its
#: value in ``q`` and its hash as a flat array.
_READ_LUA = """
local base = ARGV[1]
local claimed, owners, seen = {}, {}, {}
for i, key in ipairs(cjson.decode(ARGV[2])) do
  local owner = redis.call('GET', base .. 'k:' .. key)
  claimed[i] = owner
  if owner and not seen[owner] then
    seen[owner] = true
    owners[#owners + 1] = owner
  end
end
local aliases, values, stats = {}, {}, {}
for i, owner in ipairs(owners) do
  aliases[i] = redis.call('GET', base .. 'a:' .. owner)
  values[i] = redis.call('ZSCORE', KEYS[1], owner)
  stats[i] = redis.call('HGETALL', base .. 'g:' .. owner)
end
return {claimed, owners, aliases, values, stats}
"""

#: The writes of one batch but its merges, in one script. KEYS: ``q`` (for a cluster's routing,
#: as above). ARGV: the key base, then one JSON document: ttl, max_members, max_groups; the
#: group keys claimed now, each with its group; the claimed keys to keep alive; per event its
#: id, candidate JSON, time, action, score, grouped-by, p_wrong and group. Numbers the script
#: stores travel as the strings redis-py would have sent (Lua would print them with 14 digits).
#: One argument instead of ~40 per event: packing them cost the worker more than the rest of
#: the batch's Redis work.
_ENQUEUE_LUA = """
local base, q = ARGV[1], KEYS[1]
local batch = cjson.decode(ARGV[2])
local ttl, max_members, max_groups = batch.ttl, batch.max_members, batch.max_groups
for _, claim in ipairs(batch.claims) do
  redis.call('SET', base .. 'k:' .. claim[1], claim[2], 'EX', ttl)
end
for _, key in ipairs(batch.kept) do
  redis.call('EXPIRE', base .. 'k:' .. key, ttl)
end
local touched = {}
for _, event in ipairs(batch.events) do
  local id, candidate, at, action, score, by, p, group = unpack(event)
  local m, g = base .. 'm:' .. group, base .. 'g:' .. group
  redis.call('SET', base .. 'e:' .. id, candidate, 'EX', ttl)
  redis.call('ZADD', m, at, id)
  redis.call('HINCRBY', g, 'n', 1)
  redis.call('HINCRBY', g, 'a:' .. action, 1)
  redis.call('HINCRBYFLOAT', g, 'score_sum', score)
  redis.call('HSETNX', g, 'first', at)
  redis.call('HSET', g, 'last', at)
  redis.call('HSETNX', g, 'by', by)
  redis.call('ZINCRBY', q, p, group)
  touched[m] = g
end
for m, g in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', m, 0, -(max_members + 1))
  redis.call('EXPIRE', m, ttl)
  redis.call('EXPIRE', g, ttl)
end
redis.call('ZREMRANGEBYRANK', q, 0, -(max_groups + 1))
redis.call('EXPIRE', q, ttl)
return 1
"""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else value


class ReviewQueue:
    """The review queue under one key prefix, on a standalone or cluster client."""

    def __init__(
        self, client: RedisClient, prefix: str, settings: ReviewSettings, ranker: RankingModel | None = None
    ) -> None:
        self._client = client
        self._base = f"{prefix}.review:{{rq}}:"
        self._settings = settings
        self.ranker = ranker or RankingModel()

    def key(self, part: str) -> str:
        return self._base + part

    async def enqueue(
        self,
        batch: Sequence[MailFeatures],
        verdicts: Sequence[Verdict],
        entries: Sequence[FeatureLogEntry],
        junk_threshold: float,
    ) -> list[Candidate]:
        """Add one scored micro-batch. Called by the scoring agent after its verdicts are sent.

        A RedisError here loses these events' place in the queue, never a verdict.
        """
        if not batch:
            return []
        rows = np.asarray([e.features for e in entries], dtype=np.float64).reshape(
            len(batch), len(FEATURE_NAMES)
        )
        p_wrong = self.ranker.p_wrong(review_features([v.score for v in verdicts], rows, junk_threshold))
        keyed = [(f.event_id, group_keys(f, row)) for f, row in zip(batch, rows, strict=True)]
        distinct = sorted({k for _, keys in keyed for k in keys})
        claimed: dict[str, str] = {}
        aliases: dict[str, str] = {}
        values: dict[str, float] = {}
        stats: dict[str, dict[str, str]] = {}
        if distinct:
            found, owners, owner_aliases, owner_values, owner_stats = await self._client.execute_command(
                "EVAL", _READ_LUA, 1, self.key("q"), self._base, json.dumps(distinct, separators=(",", ":"))
            )
            claimed = {k: _text(g) for k, g in zip(distinct, found, strict=True) if g is not None}
            for raw_owner, alias, value, info in zip(
                owners, owner_aliases, owner_values, owner_stats, strict=True
            ):
                owner = _text(raw_owner)
                if alias is not None:
                    aliases[owner] = _text(alias)
                if value is not None:
                    values[owner] = float(value)
                stats[owner] = {_text(k): _text(v) for k, v in zip(info[::2], info[1::2], strict=True)}
        grouping = assign(keyed, claimed, aliases)
        pipe = self._client.pipeline(transaction=False)
        for absorbed in grouping.merges:
            self._merge(pipe, absorbed, resolve(absorbed, grouping.merges), values, stats)
        events: list[list[str]] = []
        candidates = []
        for features, verdict, row, p, where in zip(
            batch, verdicts, rows, p_wrong, grouping.assignments, strict=True
        ):
            group_id = resolve(where.group, grouping.merges)
            candidate = Candidate(
                event_id=verdict.event_id,
                kind=verdict.kind,
                action=verdict.action,
                score=verdict.score,
                model_version=verdict.model_version,
                timestamp=features.timestamp,
                reasons=verdict.reasons,
                actor=features.sender,
                actor_aggregates={name: float(row[_INDEX[name]]) for name in ACTOR_AGGREGATES},
                group=group_id,
                grouped_by=where.grouped_by,
                p_wrong=float(p),
            )
            candidates.append(candidate)
            events.append(
                [
                    verdict.event_id,
                    candidate.model_dump_json(),
                    repr(float(features.timestamp)),
                    verdict.action,
                    repr(float(verdict.score)),
                    where.grouped_by,
                    repr(float(p)),
                    group_id,
                ]
            )
        document = {
            "ttl": self._settings.ttl_seconds,
            "max_members": self._settings.max_members,
            "max_groups": self._settings.max_groups,
            "claims": [[key, group] for key, group in grouping.claims.items()],
            "kept": sorted(claimed.keys() - grouping.claims.keys()),
            "events": events,
        }
        # A raw EVAL in the same pipeline: one round trip, no script cache to miss after a
        # server restart, and routed by its one key on a cluster (every key is in the {rq} slot).
        pipe.execute_command(
            "EVAL", _ENQUEUE_LUA, 1, self.key("q"), self._base, json.dumps(document, separators=(",", ":"))
        )
        await pipe.execute()
        return candidates

    def _merge(
        self,
        pipe: Any,
        absorbed: str,
        into: str,
        values: dict[str, float],
        stats: dict[str, dict[str, str]],
    ) -> None:
        """Queue the commands that fold group ``absorbed`` into group ``into``."""
        ttl = self._settings.ttl_seconds
        members = self.key(f"m:{into}")
        pipe.zunionstore(members, [members, self.key(f"m:{absorbed}")], aggregate="MIN")
        pipe.delete(self.key(f"m:{absorbed}"))
        if absorbed in values:
            pipe.zincrby(self.key("q"), values[absorbed], into)
        pipe.zrem(self.key("q"), absorbed)
        pipe.set(self.key(f"a:{absorbed}"), into, ex=ttl)
        target = self.key(f"g:{into}")
        for field, value in stats.get(absorbed, {}).items():
            if field == "n" or field.startswith("a:"):
                pipe.hincrby(target, field, int(float(value)))
            elif field == "score_sum":
                pipe.hincrbyfloat(target, field, float(value))
        pipe.delete(self.key(f"g:{absorbed}"))

    async def top(self, count: int, examples: int = 3) -> list[QueuedGroup]:
        """The ``count`` most valuable unlabelled groups, best first (expired groups are dropped)."""
        ranked = cast(
            "list[tuple[bytes | str, float]]",
            await self._client.zrevrange(self.key("q"), 0, max(count * 2, count + 10), withscores=True),
        )
        if not ranked:
            return []
        pipe = self._client.pipeline(transaction=False)
        for group, _ in ranked:
            pipe.hgetall(self.key(f"g:{_text(group)}"))
            pipe.zrevrange(self.key(f"m:{_text(group)}"), 0, examples - 1)
        answers = await pipe.execute()
        out: list[QueuedGroup] = []
        gone: list[str] = []
        wanted: list[str] = []
        for (raw_group, value), info, members in zip(ranked, answers[::2], answers[1::2], strict=True):
            group = _text(raw_group)
            fields = {_text(k): _text(v) for k, v in info.items()}
            if not fields:
                gone.append(group)
                continue
            if len(out) >= count:
                continue
            n = int(fields.get("n", "0"))
            out.append(
                QueuedGroup(
                    group=group,
                    value=float(value),
                    size=n,
                    actions={a: int(fields.get(f"a:{a}", "0")) for a in ("allow", "junk", "block")},
                    mean_score=float(fields.get("score_sum", "0")) / max(n, 1),
                    first_seen=float(fields.get("first", "0")),
                    last_seen=float(fields.get("last", "0")),
                    grouped_by=fields.get("by", "alone"),
                    label=fields.get("label") or None,
                    examples=[],
                )
            )
            wanted.extend(_text(m) for m in members)
        if gone:
            await self._client.zrem(self.key("q"), *gone)
        shown = await self.candidates(wanted)
        by_group: dict[str, list[Candidate]] = {}
        for candidate in shown:
            if candidate is not None:
                by_group.setdefault(candidate.group, []).append(candidate)
        return [replace(g, examples=by_group.get(g.group, [])) for g in out]

    async def candidates(self, event_ids: Sequence[str]) -> list[Candidate | None]:
        """The stored candidates of ``event_ids`` (None where expired or unknown)."""
        if not event_ids:
            return []
        raw = await self._client.mget([self.key(f"e:{e}") for e in event_ids])
        return [Candidate.model_validate_json(r) if r else None for r in raw]

    async def members(self, target: str) -> tuple[str | None, list[str]]:
        """What a label on ``target`` covers: (group, its member event ids) or (None, [event id]).

        Raises ReviewError when ``target`` is neither a queued group nor a known event.
        """
        alias = await self._client.get(self.key(f"a:{target}"))
        if alias is not None:
            target = _text(alias)
        members = cast("list[bytes | str]", await self._client.zrange(self.key(f"m:{target}"), 0, -1))
        if members:
            return target, [_text(m) for m in members]
        (candidate,) = await self.candidates([target])
        if candidate is None:
            raise ReviewError(f"{target!r} is neither a group in the review queue nor a queued event")
        return None, [candidate.event_id]

    async def mark_labelled(self, group: str, label: str, members: Sequence[str]) -> None:
        """Record a group's label and take it and its labelled members off the queue.

        Members that arrive later put the group back, showing its earlier label.
        """
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(
            self.key(f"g:{group}"),
            mapping={"label": label, "n": 0, "a:allow": 0, "a:junk": 0, "a:block": 0, "score_sum": 0},
        )
        if members:
            pipe.zrem(self.key(f"m:{group}"), *members)
        pipe.zrem(self.key("q"), group)
        await pipe.execute()

    async def size(self) -> int:
        """Groups currently in the queue."""
        return int(await self._client.zcard(self.key("q")))


def load_ranker(settings: ReviewSettings) -> RankingModel:
    """The ranking model named by the settings, or the prior. Raises ReviewError for a bad file."""
    if settings.ranker_file is None:
        return RankingModel()
    try:
        return RankingModel.from_json(settings.ranker_file.read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as exc:
        raise ReviewError(f"cannot read the ranking model {settings.ranker_file}: {exc}") from None
