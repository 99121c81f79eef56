"""The two implementations of every feature-store operation, side by side.

:data:`LUA` (and its batch form :data:`BATCH_LUA`) is what Redis runs, one
atomic script per call; :class:`Interpreter` is the reference over plain
dictionaries that the in-memory store, training and the contract suite run.
What the operations mean, and how events become calls, is in
:mod:`features.operations`; the key layout in :mod:`features.keys`.

Each implementation has two ways to run a call: *apply* (the stream: once per
memo field, then remembered) and *preview* (:data:`PREVIEW_LUA`,
:meth:`Interpreter.preview`): the values applying would serve, with nothing
changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from warden.features.operations import Call, parse


def _fmt(value: float) -> str:
    """What Lua's ``string.format('%.17g', v)`` prints, so both sides parse the same double."""
    return f"{value:.17g}"


#: A key that did not exist before a preview (it is removed again afterwards).
_ABSENT = object()


def _copy(value: object) -> object:
    """A copy of one key's value that a call's operations cannot change."""
    if isinstance(value, dict | set):
        return value.copy()
    return value


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
        """Apply a call once per memo field; afterwards, serve what it served then."""
        field = call.args[0]
        memo = self.memos.setdefault(call.keys[0], {})
        if field not in memo:
            memo[field] = self._program(call)
        return parse(memo[field])

    def preview(self, call: Call) -> list[float]:
        """What :meth:`run` would return for ``call`` now, changing nothing (not even the memo)."""
        prior = self.memos.get(call.keys[0], {}).get(call.args[0])
        if prior is not None:
            return parse(prior)
        families: tuple[dict[str, Any], ...] = (self.windows, self.reputations, self.sets, self.strings)
        saved = [
            (family, key, _copy(family[key]) if key in family else _ABSENT)
            for family in families
            for key in call.keys[1:]
        ]
        try:
            return parse(self._program(call))
        finally:
            for family, key, value in saved:
                if value is _ABSENT:
                    family.pop(key, None)
                else:
                    family[key] = value

    def _program(self, call: Call) -> str:
        """Run a call's operations; its reply as the script prints it."""
        tokens: list[str] = json.loads(call.args[1])
        ts_text = tokens[0]
        out: list[str] = []
        i = 3
        while i < len(tokens):
            code, index, count = tokens[i], int(tokens[i + 1]), int(tokens[i + 2])
            params = tokens[i + 3 : i + 3 + count]
            i += 3 + count
            if code == "E":
                out.extend(_fmt(float(p)) for p in params)
                continue
            value = self._op(code, call.keys, index, params, call.args, ts_text)
            if value is not None:
                out.append(_fmt(value))
        return ",".join(out)

    def _op(
        self, code: str, keys: Sequence[str], index: int, p: list[str], args: Sequence[str], ts_text: str
    ) -> float | None:
        key = keys[index - 1]
        ts = float(ts_text)

        def members(at: int) -> Sequence[str]:
            """The set members that parameters ``at`` and ``at + 1`` name (ARGV index, length)."""
            first = int(p[at]) - 1
            return args[first : first + int(p[at + 1])]

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
            self.sets.setdefault(key, set()).update(members(1))
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
            given = members(0)
            known = self.sets.get(key, set())
            hits = sum(1 for r in given if r in known)
            share = ((len(given) - hits) if code == "N" else hits) / len(given) if given else 0.0
            if code == "N" and given:
                self.sets.setdefault(key, set()).update(given)
            return share
        if code == "A":
            given = members(0)
            if given:
                self.sets.setdefault(key, set()).update(given)
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


# The server side of the same operations. Values are returned as one string,
# printed with %.17g so that both sides parse exactly the same doubles. Set
# members are unpacked straight from ARGV, never from the program.
_APPLY = """
-- A call's operations: its reply, the keys written with their TTL, and the memo TTL (or an error reply).
local function run(KEYS, ARGV)
  local a = cjson.decode(ARGV[2])
  local size = #a
  local ts_text, ttl, memo_ttl = a[1], a[2], a[3]
  local ts = tonumber(ts_text)
  local out = {}
  local written = {}
  local function fmt(v) return string.format('%.17g', v) end
  local function by_label_then_day(x, y)
    if string.sub(x, 1, 1) ~= string.sub(y, 1, 1) then return x < y end
    return tonumber(string.sub(x, 3)) < tonumber(string.sub(y, 3))
  end
  local i = 4
  while i <= size do
    local code, index, count = a[i], tonumber(a[i + 1]), tonumber(a[i + 2])
    local q = i + 2
    i = i + 3 + count
    local key = KEYS[index]
    if code == 'W' then
      local bucket, n = tonumber(a[q + 1]), tonumber(a[q + 2])
      -- One read of the hash: the newest bucket first, then stale buckets and the total. A
      -- stale bucket is older than any the window counts, and the event's own bucket is new.
      local all = redis.call('HGETALL', key)
      local buckets = {}
      local newest = bucket
      for j = 1, #all, 2 do
        local f = tonumber(all[j])
        buckets[j] = f
        if f > newest then newest = f end
      end
      local oldest = newest - n + 1
      local total = 0
      if bucket >= oldest then
        redis.call('HINCRBY', key, a[q + 1], 1)
        total = 1
      end
      local stale = {}
      for j = 1, #all, 2 do
        local f = buckets[j]
        if f < oldest then
          stale[#stale + 1] = all[j]
        elseif f > bucket - n and f <= bucket then
          total = total + tonumber(all[j + 1])
        end
      end
      if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
      out[#out + 1] = fmt(total)
      written[key] = ttl
    elseif code == 'D' then
      local bucket, width, half_life = tonumber(a[q + 1]), tonumber(a[q + 2]), tonumber(a[q + 3])
      local all = redis.call('HGETALL', key)
      local buckets = {}
      local counts = {}
      for j = 1, #all, 2 do
        local f = tonumber(all[j])
        buckets[#buckets + 1] = f
        counts[f] = tonumber(all[j + 1])
      end
      table.sort(buckets)
      local total = 0.0
      for _, f in ipairs(buckets) do
        if f <= bucket then total = total + counts[f] * 2 ^ (-(ts - f * width) / half_life) end
      end
      out[#out + 1] = fmt(total)
    elseif code == 'H' then
      local n, first, m = tonumber(a[q + 1]), tonumber(a[q + 2]), tonumber(a[q + 3])
      redis.call('PFADD', key, unpack(ARGV, first, first + m - 1))
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
      local first, m = tonumber(a[q + 1]), tonumber(a[q + 2])
      local share = 0.0
      if m > 0 then
        local hits = 0
        local members = redis.call('SMISMEMBER', key, unpack(ARGV, first, first + m - 1))
        for _, member in ipairs(members) do hits = hits + member end
        if code == 'N' then share = (m - hits) / m else share = hits / m end
        if code == 'N' then
          redis.call('SADD', key, unpack(ARGV, first, first + m - 1))
          written[key] = ttl
        end
      end
      out[#out + 1] = fmt(share)
    elseif code == 'A' then
      local first, m = tonumber(a[q + 1]), tonumber(a[q + 2])
      if m > 0 then
        redis.call('SADD', key, unpack(ARGV, first, first + m - 1))
        written[key] = ttl
      end
    elseif code == 'R' or code == 'S' then
      local day, days, half_life = tonumber(a[q + 1]), tonumber(a[q + 2]), tonumber(a[q + 3])
      local all = redis.call('HGETALL', key)
      local fields = {}
      local weights = {}
      for j = 1, #all, 2 do
        fields[#fields + 1] = all[j]
        weights[all[j]] = tonumber(all[j + 1])
      end
      table.sort(fields, by_label_then_day)
      local w = {a = 0.0, l = 0.0}
      for _, f in ipairs(fields) do
        local d = tonumber(string.sub(f, 3))
        if d > day - days and d <= day then
          local label = string.sub(f, 1, 1)
          w[label] = w[label] + weights[f] * 2 ^ (-(day - d) / half_life)
        end
      end
      if code == 'R' then out[#out + 1] = fmt(w.a) else out[#out + 1] = fmt(w.a / (w.a + w.l + 1.0)) end
    elseif code == 'K' then
      local day, label, weight, days = tonumber(a[q + 1]), a[q + 2], a[q + 3], tonumber(a[q + 4])
      local fields = redis.call('HKEYS', key)
      local newest = day
      for _, f in ipairs(fields) do
        local d = tonumber(string.sub(f, 3))
        if d > newest then newest = d end
      end
      if day > newest - days then
        -- Added here in double precision (HINCRBYFLOAT adds in long double), so Redis and the
        -- reference interpreter hold the very same sum.
        local field = label .. ':' .. a[q + 1]
        local sum = (tonumber(redis.call('HGET', key, field)) or 0) + tonumber(weight)
        redis.call('HSET', key, field, string.format('%.17g', sum))
      end
      for _, f in ipairs(fields) do
        if tonumber(string.sub(f, 3)) <= newest - days then redis.call('HDEL', key, f) end
      end
      written[key] = ttl
    elseif code == 'E' then
      for j = 1, count do out[#out + 1] = fmt(tonumber(a[q + j])) end
    else
      return redis.error_reply('unknown operation ' .. tostring(code))
    end
  end
  return table.concat(out, ','), written, memo_ttl
end

-- Once per memo field: the first run's reply is remembered and served to every later one.
local function apply(KEYS, ARGV)
  local prior = redis.call('HGET', KEYS[1], ARGV[1])
  if prior then return prior end
  local reply, written, memo_ttl = run(KEYS, ARGV)
  if type(reply) == 'table' then return reply end
  redis.call('HSET', KEYS[1], ARGV[1], reply)
  redis.call('EXPIRE', KEYS[1], memo_ttl)
  for key, seconds in pairs(written) do redis.call('EXPIRE', key, seconds) end
  return reply
end
"""

# A preview runs the operations and puts back every key they could have touched: each key's
# serialised value and its TTL in milliseconds are kept first (script time stands still, so the
# TTL comes back exact), and a key that did not exist is deleted again. Only keys whose value
# changed are written back, so a preview that only reads writes nothing.
_PREVIEW = """
local function preview(KEYS, ARGV)
  local prior = redis.call('HGET', KEYS[1], ARGV[1])
  if prior then return prior end
  local saved = {}
  for k = 2, #KEYS do
    local ttl = redis.call('PTTL', KEYS[k])
    if ttl ~= -2 then saved[k] = {redis.call('DUMP', KEYS[k]), ttl} end
  end
  local reply = run(KEYS, ARGV)
  for k = 2, #KEYS do
    local kept = saved[k]
    if not kept then
      redis.call('DEL', KEYS[k])
    elseif redis.call('DUMP', KEYS[k]) ~= kept[1] then
      local ttl = kept[2]
      if ttl == -1 then ttl = 0 elseif ttl < 1 then ttl = 1 end
      redis.call('RESTORE', KEYS[k], ttl, kept[1], 'REPLACE')
    end
  end
  return reply
end
"""

#: One event's call for one entity: ``EVALSHA sha len(keys) *keys *args`` (a Redis Cluster runs it
#: on the primary owning the keys' shared hash tag).
LUA = _APPLY + "return apply(KEYS, ARGV)\n"

#: A whole batch of calls in one script run, for a standalone server: ``ARGV[1]`` is one JSON
#: array with, per call, its keys and its arguments. Replies come back as one array, one reply
#: per call. One command with one argument, against one command per call with an argument per
#: key and set member (~60 per event), saves the client most of the packing (see
#: :meth:`features.store.RedisStore.apply_calls`); the calls still run one after another, each
#: with its own once-only memo. The keys are not declared as ``KEYS``: a standalone server does
#: not need them to be, and a cluster, which does, gets :data:`LUA` per call.
BATCH_LUA = (
    _APPLY
    + """
local replies = {}
for c, call in ipairs(cjson.decode(ARGV[1])) do
  local reply = apply(call[1], call[2])
  if type(reply) == 'table' and reply.err then return reply end
  replies[c] = reply
end
return replies
"""
)

#: What one call would serve, with nothing changed: the same ``KEYS`` and ``ARGV`` as :data:`LUA`.
PREVIEW_LUA = _APPLY + _PREVIEW + "return preview(KEYS, ARGV)\n"

__all__ = ["BATCH_LUA", "LUA", "PREVIEW_LUA", "Interpreter"]
