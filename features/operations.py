"""How an event becomes feature-store operations, and what those operations mean.

:func:`plan` turns one pseudonymised event into *calls*, one per entity it
names (its sender, their domain, the sending IP, each URL domain, each
recipient), each a short list of operations derived from the declarations in
:mod:`features.aggregations`. The Redis store runs every call as one atomic
server-side script (:data:`LUA`); the in-memory reference runs the very same
calls through :func:`interpret`. Both implementations of each operation sit
side by side in this module, and the contract suite runs them against each
other.

Operations (``ARGV`` after event id, event time, TTL and memo TTL: code,
key index, parameter count, parameters):

====  ==========================================================  =========
code  effect                                                      returns
====  ==========================================================  =========
W     count the event in its window bucket; trim old buckets      events in the window
D     read a window's buckets, each weighted 2^(-age/half-life)   decayed rate
H     add values to this hour's HyperLogLog                       distinct count over the buckets
F     keep the earliest event time                                hours since it
N     count recipients not yet in the "sent to" set, then add     share new
Y     count recipients in the "heard from" set                    share known
A     add values to a set                                         nothing
R     read decayed abuse reports (``a:<day>`` fields)             weight
S     read decayed abuse share                                    abuse / (abuse + legit + 1)
K     add a report's weight to its day bucket; trim old days      nothing
====  ==========================================================  =========
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from features.aggregations import (
    AGGREGATES,
    ENTITIES,
    IP,
    RECIPIENT,
    REPUTATION_DAYS,
    SENDER,
    SENDER_DOMAIN,
    URL_DOMAIN,
    WINDOW_BUCKETS,
    AbuseReports,
    AbuseShare,
    Aggregate,
    DecayedRate,
    DistinctCount,
    Entity,
    FirstSeen,
    NewRecipientShare,
    ReplyShare,
    WindowCount,
)
from features.keys import Keys
from streams.records import MailFeatures

Label = Literal["abuse", "legit"]


@dataclass(frozen=True)
class Call:
    """One atomic script run: one entity's updates and reads for one event."""

    entity: Entity
    pseudonym: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    outputs: tuple[Aggregate, ...]


class _Builder:
    def __init__(self, keys: Keys, entity: Entity, pseudonym: str, hour: int) -> None:
        self.keys = keys
        self.entity = entity
        self.pseudonym = pseudonym
        self.index: dict[str, int] = {keys.memo(entity, pseudonym, hour): 1}
        self.ops: list[str] = []
        self.outputs: list[Aggregate] = []

    def key(self, name: str) -> int:
        index = self.index.get(name)
        if index is None:
            index = self.index[name] = len(self.index) + 1
        return index

    def op(self, code: str, key: str, *params: object, output: Aggregate | None = None) -> None:
        self.ops += [code, str(self.key(key)), str(len(params)), *map(str, params)]
        if output is not None:
            self.outputs.append(output)

    def call(self, head: Sequence[str]) -> Call:
        return Call(self.entity, self.pseudonym, tuple(self.index), (*head, *self.ops), tuple(self.outputs))


#: The aggregates of each entity kind, in declaration order (looked up once, not per event).
_BY_ENTITY: dict[str, tuple[Aggregate, ...]] = {
    e.kind: tuple(a for a in AGGREGATES if a.entity.kind == e.kind) for e in ENTITIES
}


def _entities(event: MailFeatures) -> list[tuple[Entity, str]]:
    found = [(SENDER, event.sender), (SENDER_DOMAIN, event.sender_domain)]
    if event.sending_ip:
        found.append((IP, event.sending_ip))
    found += [(URL_DOMAIN, d) for d in event.url_domains[: URL_DOMAIN.per_event]]
    found += [(RECIPIENT, r) for r in event.recipients[: RECIPIENT.per_event]]
    return found


def plan(event: MailFeatures, keys: Keys, ttl_s: int, memo_ttl_s: int) -> list[Call]:
    """The calls that apply ``event`` and read its aggregates, one per entity."""
    ts = event.timestamp
    hour = math.floor(ts / 3600)
    day = math.floor(ts / 86400)
    head = (event.event_id, repr(ts), str(ttl_s), str(memo_ttl_s))
    calls = []
    for entity, pseudonym in _entities(event):
        b = _Builder(keys, entity, pseudonym, hour)
        for aggregate in _BY_ENTITY[entity.kind]:
            if isinstance(aggregate, WindowCount):
                b.op(
                    "W",
                    keys.window(entity, pseudonym, aggregate.window_s),
                    math.floor(ts / aggregate.bucket_s),
                    WINDOW_BUCKETS,
                    output=aggregate,
                )
            elif isinstance(aggregate, DecayedRate):
                window = aggregate.window
                b.op(
                    "D",
                    keys.window(entity, pseudonym, window.window_s),
                    math.floor(ts / window.bucket_s),
                    window.bucket_s,
                    aggregate.half_life_s,
                    output=aggregate,
                )
            elif isinstance(aggregate, DistinctCount):
                values = event.recipients if aggregate.field == "recipients" else [event.sender]
                bucket = math.floor(ts / aggregate.bucket_s)
                # This bucket's key first: H reads the buckets as consecutive KEYS.
                first = keys.distinct(entity, pseudonym, aggregate.field, bucket)
                b.key(first)
                for back in range(1, aggregate.buckets):
                    b.key(keys.distinct(entity, pseudonym, aggregate.field, bucket - back))
                b.op("H", first, aggregate.buckets, *values, output=aggregate)
            elif isinstance(aggregate, FirstSeen):
                b.op("F", keys.first_seen(entity, pseudonym), output=aggregate)
            elif isinstance(aggregate, NewRecipientShare):
                b.op("N", keys.account(pseudonym, "out"), *event.recipients, output=aggregate)
            elif isinstance(aggregate, ReplyShare):
                b.op("Y", keys.account(pseudonym, "in"), *event.recipients, output=aggregate)
            elif isinstance(aggregate, AbuseReports):
                b.op(
                    "R",
                    keys.reputation(entity, pseudonym),
                    day,
                    REPUTATION_DAYS,
                    aggregate.half_life_s / 86400,
                    output=aggregate,
                )
            elif isinstance(aggregate, AbuseShare):
                b.op(
                    "S",
                    keys.reputation(entity, pseudonym),
                    day,
                    REPUTATION_DAYS,
                    aggregate.half_life_s / 86400,
                    output=aggregate,
                )
        if entity is RECIPIENT:
            # The recipient has now heard from the sender: their own replies will show it.
            b.op("A", keys.account(pseudonym, "in"), event.sender)
        calls.append(b.call(head))
    return calls


def report(
    entity: Entity,
    pseudonym: str,
    label: Label,
    weight: float,
    at: float,
    report_id: str,
    keys: Keys,
    ttl_s: int,
    memo_ttl_s: int,
) -> Call:
    """A call that adds one feedback report about an entity (once per report id)."""
    b = _Builder(keys, entity, pseudonym, math.floor(at / 3600))
    b.op(
        "K",
        keys.reputation(entity, pseudonym),
        math.floor(at / 86400),
        "a" if label == "abuse" else "l",
        repr(float(weight)),
        REPUTATION_DAYS,
    )
    return b.call((report_id, repr(at), str(ttl_s), str(memo_ttl_s)))


def combine(calls: Sequence[Call], results: Sequence[Sequence[float]]) -> list[float]:
    """One event's aggregate values in :data:`AGGREGATES` order, from its calls' results.

    Values of entities an event does not name (no sending IP, no URL) are 0.
    """
    seen: dict[Aggregate, list[float]] = {}
    for call, values in zip(calls, results, strict=True):
        for aggregate, value in zip(call.outputs, values, strict=True):
            seen.setdefault(aggregate, []).append(value)
    out = []
    for aggregate in AGGREGATES:
        values = seen.get(aggregate, [])
        if not values:
            out.append(0.0)
        elif aggregate.combine == "min":
            out.append(min(values))
        else:
            out.append(max(values))
    return out


def parse(raw: bytes | str) -> list[float]:
    """A script's reply: comma-separated values printed with 17 significant digits."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [float(v) for v in text.split(",")] if text else []


def _fmt(value: float) -> str:
    """What Lua's ``string.format('%.17g', v)`` prints, so both sides parse the same double."""
    return f"{value:.17g}"


class Interpreter:
    """The reference implementation of every operation, over plain dictionaries.

    One dictionary per Redis type: window and reputation hashes, sets (a
    HyperLogLog is an exact set here), strings, and the memo hashes.
    """

    def __init__(self) -> None:
        self.windows: dict[str, dict[int, int]] = {}
        self.reputations: dict[str, dict[str, float]] = {}
        self.sets: dict[str, set[str]] = {}
        self.strings: dict[str, str] = {}
        self.memos: dict[str, dict[str, str]] = {}

    def run(self, call: Call) -> list[float]:
        event_id, ts_text = call.args[0], call.args[1]
        memo = self.memos.setdefault(call.keys[0], {})
        if event_id in memo:
            return parse(memo[event_id])
        out: list[str] = []
        args = call.args[4:]
        i = 0
        while i < len(args):
            code, index, count = args[i], int(args[i + 1]), int(args[i + 2])
            params = list(args[i + 3 : i + 3 + count])
            i += 3 + count
            value = self._op(code, call.keys, index, params, ts_text)
            if value is not None:
                out.append(_fmt(value))
        memo[event_id] = ",".join(out)
        return parse(memo[event_id])

    def _op(self, code: str, keys: Sequence[str], index: int, p: list[str], ts_text: str) -> float | None:
        key = keys[index - 1]
        ts = float(ts_text)
        if code == "W":
            bucket, n = int(p[0]), int(p[1])
            counts = self.windows.setdefault(key, {})
            oldest = max([bucket, *counts]) - n + 1
            if bucket >= oldest:
                counts[bucket] = counts.get(bucket, 0) + 1
            for stale in [f for f in counts if f < oldest]:
                del counts[stale]
            return float(sum(c for f, c in counts.items() if bucket - n < f <= bucket))
        if code == "D":
            bucket, width, half_life = int(p[0]), int(p[1]), float(p[2])
            window = self.windows.get(key, {})
            total = 0.0
            for f in sorted(window):
                if f <= bucket:
                    total += window[f] * 2.0 ** (-(ts - f * width) / half_life)
            return total
        if code == "H":
            n = int(p[0])
            self.sets.setdefault(key, set()).update(p[1:])
            union: set[str] = set()
            for k in keys[index - 1 : index - 1 + n]:
                union |= self.sets.get(k, set())
            return float(len(union))
        if code == "F":
            first = self.strings.get(key)
            if first is None or ts < float(first):
                first = self.strings[key] = ts_text
            return (ts - float(first)) / 3600.0
        if code in ("N", "Y"):
            members = self.sets.get(key, set())
            hits = sum(1 for r in p if r in members)
            share = ((len(p) - hits) if code == "N" else hits) / len(p) if p else 0.0
            if code == "N" and p:
                self.sets.setdefault(key, set()).update(p)
            return share
        if code == "A":
            if p:
                self.sets.setdefault(key, set()).update(p)
            return None
        if code in ("R", "S"):
            day, days, half_life = int(p[0]), int(p[1]), float(p[2])
            reports = self.reputations.get(key, {})
            weights = {"a": 0.0, "l": 0.0}
            for name in sorted(reports, key=lambda f: (f[0], int(f[2:]))):
                d = int(name[2:])
                if day - days < d <= day:
                    weights[name[0]] += reports[name] * 2.0 ** (-(day - d) / half_life)
            if code == "R":
                return weights["a"]
            return weights["a"] / (weights["a"] + weights["l"] + 1.0)
        if code == "K":
            day, label, weight, days = int(p[0]), p[1], float(p[2]), int(p[3])
            reports = self.reputations.setdefault(key, {})
            newest = max([day, *(int(f[2:]) for f in reports)])
            if day > newest - days:
                reports[f"{label}:{day}"] = reports.get(f"{label}:{day}", 0.0) + weight
            for expired in [f for f in reports if int(f[2:]) <= newest - days]:
                del reports[expired]
            return None
        raise ValueError(f"unknown operation {code!r}")


def aggregate_keys(calls: Iterable[Call]) -> set[str]:
    """Every aggregate key the calls touch (memo hashes excluded)."""
    return {k for call in calls for k in call.keys[1:]}


# The server side of the same operations. Values are returned as one string,
# printed with %.17g so that both sides parse exactly the same doubles.
LUA = """
local id = ARGV[1]
local ts_text = ARGV[2]
local ts = tonumber(ts_text)
local ttl = ARGV[3]
local memo_ttl = ARGV[4]
local prior = redis.call('HGET', KEYS[1], id)
if prior then return prior end
local out = {}
local written = {}
local function fmt(v) return string.format('%.17g', v) end
local i = 5
while i <= #ARGV do
  local code = ARGV[i]
  local index = tonumber(ARGV[i + 1])
  local count = tonumber(ARGV[i + 2])
  local p = {}
  for j = 1, count do p[j] = ARGV[i + 2 + j] end
  i = i + 3 + count
  local key = KEYS[index]
  if code == 'W' then
    local bucket, n = tonumber(p[1]), tonumber(p[2])
    local fields = redis.call('HKEYS', key)
    local newest = bucket
    for _, f in ipairs(fields) do if tonumber(f) > newest then newest = tonumber(f) end end
    local oldest = newest - n + 1
    if bucket >= oldest then redis.call('HINCRBY', key, p[1], 1) end
    for _, f in ipairs(fields) do
      if tonumber(f) < oldest then redis.call('HDEL', key, f) end
    end
    local all = redis.call('HGETALL', key)
    local total = 0
    for j = 1, #all, 2 do
      local f = tonumber(all[j])
      if f > bucket - n and f <= bucket then total = total + tonumber(all[j + 1]) end
    end
    out[#out + 1] = fmt(total)
    written[key] = ttl
  elseif code == 'D' then
    local bucket, width, half_life = tonumber(p[1]), tonumber(p[2]), tonumber(p[3])
    local all = redis.call('HGETALL', key)
    local buckets = {}
    for j = 1, #all, 2 do buckets[#buckets + 1] = tonumber(all[j]) end
    table.sort(buckets)
    local counts = {}
    for j = 1, #all, 2 do counts[tonumber(all[j])] = tonumber(all[j + 1]) end
    local total = 0.0
    for _, f in ipairs(buckets) do
      if f <= bucket then total = total + counts[f] * 2 ^ (-(ts - f * width) / half_life) end
    end
    out[#out + 1] = fmt(total)
  elseif code == 'H' then
    local n = tonumber(p[1])
    if count > 1 then
      redis.call('PFADD', key, unpack(p, 2, count))
    else
      redis.call('PFADD', key)
    end
    out[#out + 1] = fmt(redis.call('PFCOUNT', unpack(KEYS, index, index + n - 1)))
    written[key] = ttl
  elseif code == 'F' then
    local first = redis.call('GET', key)
    if (not first) or ts < tonumber(first) then
      redis.call('SET', key, ts_text)
      first = ts_text
    end
    out[#out + 1] = fmt((ts - tonumber(first)) / 3600.0)
    written[key] = ttl
  elseif code == 'N' or code == 'Y' then
    local share = 0.0
    if count > 0 then
      local hits = 0
      for _, member in ipairs(redis.call('SMISMEMBER', key, unpack(p))) do hits = hits + member end
      if code == 'N' then share = (count - hits) / count else share = hits / count end
      if code == 'N' then
        redis.call('SADD', key, unpack(p))
        written[key] = ttl
      end
    end
    out[#out + 1] = fmt(share)
  elseif code == 'A' then
    if count > 0 then
      redis.call('SADD', key, unpack(p))
      written[key] = ttl
    end
  elseif code == 'R' or code == 'S' then
    local day, days, half_life = tonumber(p[1]), tonumber(p[2]), tonumber(p[3])
    local all = redis.call('HGETALL', key)
    local fields = {}
    for j = 1, #all, 2 do fields[#fields + 1] = all[j] end
    table.sort(fields, function(x, y)
      if string.sub(x, 1, 1) ~= string.sub(y, 1, 1) then return x < y end
      return tonumber(string.sub(x, 3)) < tonumber(string.sub(y, 3))
    end)
    local values = {}
    for j = 1, #all, 2 do values[all[j]] = tonumber(all[j + 1]) end
    local w = {a = 0.0, l = 0.0}
    for _, f in ipairs(fields) do
      local d = tonumber(string.sub(f, 3))
      if d > day - days and d <= day then
        local label = string.sub(f, 1, 1)
        w[label] = w[label] + values[f] * 2 ^ (-(day - d) / half_life)
      end
    end
    if code == 'R' then out[#out + 1] = fmt(w.a) else out[#out + 1] = fmt(w.a / (w.a + w.l + 1.0)) end
  elseif code == 'K' then
    local day, label, weight, days = tonumber(p[1]), p[2], p[3], tonumber(p[4])
    local fields = redis.call('HKEYS', key)
    local newest = day
    for _, f in ipairs(fields) do
      local d = tonumber(string.sub(f, 3))
      if d > newest then newest = d end
    end
    if day > newest - days then redis.call('HINCRBYFLOAT', key, label .. ':' .. p[1], weight) end
    for _, f in ipairs(fields) do
      if tonumber(string.sub(f, 3)) <= newest - days then redis.call('HDEL', key, f) end
    end
    written[key] = ttl
  else
    return redis.error_reply('unknown operation ' .. code)
  end
end
local reply = table.concat(out, ',')
redis.call('HSET', KEYS[1], id, reply)
redis.call('EXPIRE', KEYS[1], memo_ttl)
for key, seconds in pairs(written) do redis.call('EXPIRE', key, seconds) end
return reply
"""

__all__ = [
    "ENTITIES",
    "LUA",
    "Call",
    "Interpreter",
    "Label",
    "aggregate_keys",
    "combine",
    "parse",
    "plan",
    "report",
]
