"""How an event becomes feature-store operations, and what those operations mean.

:func:`plan` turns one pseudonymised event into *calls*, one per entity it
names (its sender, their domain, the sending IP, each URL domain, each
recipient), each a short program of operations derived from the declarations
in :mod:`features.aggregations`. The Redis store runs every call as one atomic
server-side script (:data:`LUA`); the in-memory reference runs the very same
calls through :class:`Interpreter`. Both implementations of each operation sit
side by side in this module, and the contract suite runs them against each
other.

A call's ``KEYS`` are the entity's memo hash for the event's hour, then every
key its operations touch (all in one hash tag, :mod:`features.keys`). Its
``ARGV`` are few, because every argument costs the client an encoding and the
server a string:

1. the event id (a report id for feedback);
2. the *program*, a JSON array of strings (the server decodes it with
   ``cjson``, in C): event time, TTL and memo TTL, then each operation as
   code, key index, parameter count, parameters. Only numbers, codes and
   labels ever go into it, so nothing in it needs escaping;
3. onwards, set members (recipients, senders), each list once per call.
   Operations name a list by its first ``ARGV`` index and its length, so a
   member is never parsed out of the program, whatever it contains.

====  ==========================================================  =========
code  effect (parameters)                                         returns
====  ==========================================================  =========
W     count the event in its window bucket; trim old buckets      events in the window
      (bucket, buckets)
D     read a window's buckets, each weighted 2^(-age/half-life)   decayed rate
      (bucket, bucket width, half-life)
H     add members to this bucket's HyperLogLog; the keys of the   distinct count over the buckets
      older buckets follow it (buckets, members)
F     keep the earliest event time                                hours since it
N     count recipients not yet in the "sent to" set, then add     share new
      (members)
Y     count recipients in the "heard from" set (members)          share known
A     add members to a set (members)                              nothing
R     read decayed abuse reports (``a:<day>`` fields)             weight
      (day, days, half-life in days)
S     read decayed abuse share (day, days, half-life in days)     abuse / (abuse + legit + 1)
K     add a report's weight to its day bucket; trim old days      nothing
      (day, label ``a``/``l``, weight, days)
====  ==========================================================  =========

"members" is two parameters: the first ``ARGV`` index of the list and its length.
A recipient's call, for example (``KEYS``: memo, ``w86400``, ``account:in``)::

    ARGV[1]  e17
    ARGV[2]  ["1700000000.25","172800","86400","W","2","2","1180555","60","A","3","2","3","1"]
    ARGV[3]  k1.9f2c

counts the event in bucket 1180555 of the 60-bucket window in KEYS[2], then
adds ARGV[3] (the sender) to the set in KEYS[3].
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from features.aggregations import (
    AGGREGATES_BY_KIND,
    CARD_OWNER,
    CARD_RECIPIENT,
    ENTITIES,
    INVITEE,
    IP,
    ORGANIZER,
    RECIPIENT,
    REPUTATION_DAYS,
    SENDER,
    SENDER_DOMAIN,
    URL_DOMAIN,
    WINDOW_BUCKETS,
    AbuseReports,
    AbuseShare,
    AccountAge,
    Aggregate,
    DecayedRate,
    DistinctCount,
    Entity,
    FirstSeen,
    NewRecipientShare,
    ReplyShare,
    UnknownContactShare,
    WindowCount,
)
from features.keys import Keys
from streams.records import ActivityFeatures, EventFeatures, EventKind, MailFeatures

Label = Literal["abuse", "legit"]

#: The ``ARGV`` index of a call's first set member (after the id and the program).
_FIRST_MEMBER = 3


@dataclass(frozen=True)
class Call:
    """One atomic script run: one entity's updates and reads for one event.

    ``args`` is the script's ``ARGV``: the event (or report) id, the program,
    then the set members the program names (see the module docstring).
    """

    entity: Entity
    pseudonym: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    outputs: tuple[Aggregate, ...]


def _items(tokens: Iterable[object]) -> str:
    """Tokens as the items of a JSON array of strings (numbers, codes, labels: no escaping)."""
    return ",".join(f'"{token}"' for token in tokens)


#: A key of a call, from the store's key builder, the entity, its pseudonym and the event's
#: time divisions (``t["t<s>"]`` is the event time divided by ``s`` seconds, rounded down).
_KeyOf: TypeAlias = Callable[[Keys, Entity, str, Mapping[str, int]], str]
#: The member lists a call may carry: the event's recipients, or its sender.
_MemberList = Literal["recipients", "senders", "contacts"]


@dataclass(frozen=True)
class _Recipe:
    """Every call for one entity kind, worked out once from the declarations.

    ``program`` is the operations (the part after the head) with each event's
    numbers left as ``str.format`` fields: ``{t<s>}`` is the event time divided
    by ``s`` seconds and rounded down (a bucket, a day); ``{<list>_first}`` and
    ``{<list>_count}`` place a member list in ``ARGV``. ``keys`` make ``KEYS``
    after the memo hash, in index order.
    """

    keys: tuple[_KeyOf, ...]
    program: str
    lists: tuple[_MemberList, ...]
    divisors: frozenset[int]
    outputs: tuple[Aggregate, ...]


def _window_key(window_s: int) -> _KeyOf:
    return lambda keys, entity, pseudonym, t: keys.window(entity, pseudonym, window_s)


def _distinct_key(field: str, bucket_s: int, back: int) -> _KeyOf:
    name = f"t{bucket_s}"
    return lambda keys, entity, pseudonym, t: keys.distinct(entity, pseudonym, field, t[name] - back)


def _account_key(family: str) -> _KeyOf:
    return lambda keys, entity, pseudonym, t: keys.account(pseudonym, family)


def _first_seen_key(keys: Keys, entity: Entity, pseudonym: str, t: Mapping[str, int]) -> str:
    return keys.first_seen(entity, pseudonym)


def _reputation_key(keys: Keys, entity: Entity, pseudonym: str, t: Mapping[str, int]) -> str:
    return keys.reputation(entity, pseudonym)


class _RecipeBuilder:
    def __init__(self) -> None:
        self.index: dict[tuple[object, ...], int] = {}
        self.keys: list[_KeyOf] = []
        self.program: list[str] = []
        self.lists: list[_MemberList] = []
        self.divisors: set[int] = set()
        self.outputs: list[Aggregate] = []

    def key(self, shape: tuple[object, ...], key_of: _KeyOf) -> int:
        """The ``KEYS`` index of a key (``shape`` tells keys apart); KEYS[1] is the memo hash."""
        index = self.index.get(shape)
        if index is None:
            index = self.index[shape] = len(self.index) + 2
            self.keys.append(key_of)
        return index

    def time(self, seconds: int) -> str:
        """The field for the event time divided by ``seconds``, rounded down (``plan`` fills it)."""
        self.divisors.add(seconds)
        return f"{{t{seconds}}}"

    def members(self, name: _MemberList) -> tuple[str, str]:
        """The two parameters that place a member list in ``ARGV``."""
        if name not in self.lists:
            self.lists.append(name)
        return f"{{{name}_first}}", f"{{{name}_count}}"

    def op(self, code: str, key: int, *params: object, output: Aggregate | None = None) -> None:
        self.program.append(_items((code, key, len(params), *params)))
        if output is not None:
            self.outputs.append(output)

    def recipe(self) -> _Recipe:
        return _Recipe(
            tuple(self.keys),
            ",".join(self.program),
            tuple(self.lists),
            frozenset(self.divisors),
            tuple(self.outputs),
        )


#: Every aggregate of every event kind, once each, in first-declared order. An entity kind's
#: recipe is the same whichever event kind names it (linked domains are shared).
_ALL_AGGREGATES: tuple[Aggregate, ...] = tuple(
    dict.fromkeys(a for kind in AGGREGATES_BY_KIND.values() for a in kind)
)


def _recipe(entity: Entity) -> _Recipe:
    b = _RecipeBuilder()
    for aggregate in _ALL_AGGREGATES:
        if aggregate.entity.kind != entity.kind:
            continue
        if isinstance(aggregate, WindowCount):
            window = b.key(("window", aggregate.window_s), _window_key(aggregate.window_s))
            b.op("W", window, b.time(aggregate.bucket_s), WINDOW_BUCKETS, output=aggregate)
        elif isinstance(aggregate, DecayedRate):
            w = aggregate.window
            window = b.key(("window", w.window_s), _window_key(w.window_s))
            b.op("D", window, b.time(w.bucket_s), w.bucket_s, aggregate.half_life_s, output=aggregate)
        elif isinstance(aggregate, DistinctCount):
            b.time(aggregate.bucket_s)  # the keys name buckets
            # This bucket's key first: H reads the buckets as consecutive KEYS.
            shape = ("distinct", aggregate.field, aggregate.bucket_s)
            first, *_ = [
                b.key((*shape, back), _distinct_key(aggregate.field, aggregate.bucket_s, back))
                for back in range(aggregate.buckets)
            ]
            values = b.members("recipients" if aggregate.field == "recipients" else "senders")
            b.op("H", first, aggregate.buckets, *values, output=aggregate)
        elif isinstance(aggregate, FirstSeen):
            b.op("F", b.key(("first",), _first_seen_key), output=aggregate)
        elif isinstance(aggregate, AccountAge):
            b.op("F", b.key(("account-first",), _account_key("first")), output=aggregate)
        elif isinstance(aggregate, UnknownContactShare):
            contacts = b.key(("contacts",), _account_key("contacts"))
            b.op("N", contacts, *b.members("recipients"), output=aggregate)
        elif isinstance(aggregate, NewRecipientShare):
            b.op("N", b.key(("out",), _account_key("out")), *b.members("recipients"), output=aggregate)
        elif isinstance(aggregate, ReplyShare):
            b.op("Y", b.key(("in",), _account_key("in")), *b.members("recipients"), output=aggregate)
        elif isinstance(aggregate, AbuseReports | AbuseShare):
            b.op(
                "R" if isinstance(aggregate, AbuseReports) else "S",
                b.key(("reputation",), _reputation_key),
                b.time(86400),
                REPUTATION_DAYS,
                aggregate.half_life_s / 86400,
                output=aggregate,
            )
    if entity is RECIPIENT:
        # The recipient has now heard from the sender: their own replies will show it.
        b.op("A", b.key(("in",), _account_key("in")), *b.members("senders"))
    if entity is CARD_OWNER:
        # The emails of a card the owner created become the owner's known contacts.
        b.op("A", b.key(("contacts",), _account_key("contacts")), *b.members("contacts"))
    return b.recipe()


_RECIPES: dict[str, _Recipe] = {e.kind: _recipe(e) for e in ENTITIES}
#: Every division of the event time that a recipe or the memo key (hours) needs, by field name.
_DIVISIONS: tuple[tuple[str, int], ...] = tuple(
    (f"t{s}", s) for s in sorted({3600}.union(*(r.divisors for r in _RECIPES.values())))
)


def _entities(event: EventFeatures) -> list[tuple[Entity, str]]:
    if isinstance(event, ActivityFeatures):
        account, recipient = (
            (ORGANIZER, INVITEE) if event.kind == "calendar" else (CARD_OWNER, CARD_RECIPIENT)
        )
        activity = [(account, event.sender)]
        activity += [(URL_DOMAIN, d) for d in event.url_domains[: URL_DOMAIN.per_event]]
        activity += [(recipient, r) for r in event.recipients[: recipient.per_event]]
        return activity
    found = [(SENDER, event.sender), (SENDER_DOMAIN, event.sender_domain)]
    if event.sending_ip:
        found.append((IP, event.sending_ip))
    found += [(URL_DOMAIN, d) for d in event.url_domains[: URL_DOMAIN.per_event]]
    found += [(RECIPIENT, r) for r in event.recipients[: RECIPIENT.per_event]]
    return found


def _head(ts: float, ttl_s: int, memo_ttl_s: int) -> str:
    """The program's first items. ``repr`` keeps every bit of the time (F stores it as text)."""
    return _items((repr(ts), ttl_s, memo_ttl_s))


def plan(event: EventFeatures, keys: Keys, ttl_s: int, memo_ttl_s: int) -> list[Call]:
    """The calls that apply ``event`` and read its aggregates, one per entity."""
    ts = event.timestamp
    t = {name: math.floor(ts / seconds) for name, seconds in _DIVISIONS}
    head = _head(ts, ttl_s, memo_ttl_s)
    lists: dict[_MemberList, tuple[str, ...]] = {
        "recipients": tuple(event.recipients),
        "senders": (event.sender,),
        "contacts": tuple(event.contacts) if isinstance(event, ActivityFeatures) else (),
    }
    # Every entity of one kind runs the same program on its own keys: build it once per kind.
    args: dict[str, tuple[str, ...]] = {}
    calls = []
    for entity, pseudonym in _entities(event):
        recipe = _RECIPES[entity.kind]
        call_args = args.get(entity.kind)
        if call_args is None:
            fields = dict(t)
            members: list[str] = []
            for name in recipe.lists:
                fields[f"{name}_first"] = _FIRST_MEMBER + len(members)
                fields[f"{name}_count"] = len(lists[name])
                members += lists[name]
            program = f"[{head},{recipe.program.format_map(fields)}]"
            call_args = args[entity.kind] = (event.event_id, program, *members)
        call_keys = (
            keys.memo(entity, pseudonym, t["t3600"]),
            *[key_of(keys, entity, pseudonym, t) for key_of in recipe.keys],
        )
        calls.append(Call(entity, pseudonym, call_keys, call_args, recipe.outputs))
    return calls


def plan_linked(event: EventFeatures, keys: Keys, ttl_s: int, memo_ttl_s: int) -> list[Call]:
    """The write-through calls for the next key generation during a rotation grace period.

    They run in the same round trip as :func:`plan`'s calls; their replies are
    not read (the served generation's aggregates are). A rotation changes every
    stored domain's key id, so these calls never touch a served key.
    """
    if not isinstance(event, MailFeatures):
        return []  # calendar and contacts pseudonyms are not linked across a rotation yet
    linked = event.as_linked()
    return [] if linked is None else plan(linked, keys, ttl_s, memo_ttl_s)


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
    day, letter = math.floor(at / 86400), "a" if label == "abuse" else "l"
    operation = _items(("K", 2, 4, day, letter, repr(float(weight)), REPUTATION_DAYS))
    program = f"[{_head(at, ttl_s, memo_ttl_s)},{operation}]"
    call_keys = (keys.memo(entity, pseudonym, math.floor(at / 3600)), keys.reputation(entity, pseudonym))
    return Call(entity, pseudonym, call_keys, (report_id, program), ())


#: Where each aggregate sits in each event kind's row, and whether its values combine by ``min``.
_POSITION: dict[str, dict[Aggregate, int]] = {
    kind: {a: i for i, a in enumerate(aggregates)} for kind, aggregates in AGGREGATES_BY_KIND.items()
}
_BY_MIN: dict[str, tuple[bool, ...]] = {
    kind: tuple(a.combine == "min" for a in aggregates) for kind, aggregates in AGGREGATES_BY_KIND.items()
}
#: The row positions of each entity kind's outputs as :func:`plan` lists them, per event kind
#: (only the entity kinds an event kind's schema reads).
_POSITIONS: dict[tuple[str, str], tuple[int, ...]] = {
    (kind, entity_kind): tuple(_POSITION[kind][a] for a in recipe.outputs)
    for kind in AGGREGATES_BY_KIND
    for entity_kind, recipe in _RECIPES.items()
    if all(a in _POSITION[kind] for a in recipe.outputs) and recipe.outputs
}


def _positions(call: Call, kind: str) -> tuple[int, ...]:
    # Planned calls share their recipe's outputs; looking each aggregate (a dataclass) up
    # by hash would cost more than the rest of combine().
    recipe = _RECIPES.get(call.entity.kind)
    if recipe is not None and call.outputs is recipe.outputs:
        return _POSITIONS[(kind, call.entity.kind)]
    return tuple(_POSITION[kind][a] for a in call.outputs)


def combine(
    calls: Sequence[Call], results: Sequence[Sequence[float]], kind: EventKind = "mail"
) -> list[float]:
    """One event's aggregate values in its kind's schema order, from its calls' results.

    Values of entities an event does not name (no sending IP, no URL) are 0.
    """
    by_min = _BY_MIN[kind]
    row: list[float | None] = [None] * len(by_min)
    for call, values in zip(calls, results, strict=True):
        for position, value in zip(_positions(call, kind), values, strict=True):
            seen = row[position]
            if seen is None:
                row[position] = value
            elif by_min[position]:
                row[position] = min(seen, value)
            else:
                row[position] = max(seen, value)
    return [0.0 if value is None else value for value in row]


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
        event_id, program = call.args[0], call.args[1]
        memo = self.memos.setdefault(call.keys[0], {})
        if event_id in memo:
            return parse(memo[event_id])
        tokens: list[str] = json.loads(program)
        ts_text = tokens[0]
        out: list[str] = []
        i = 3
        while i < len(tokens):
            code, index, count = tokens[i], int(tokens[i + 1]), int(tokens[i + 2])
            params = tokens[i + 3 : i + 3 + count]
            i += 3 + count
            value = self._op(code, call.keys, index, params, call.args, ts_text)
            if value is not None:
                out.append(_fmt(value))
        memo[event_id] = ",".join(out)
        return parse(memo[event_id])

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
local function apply(KEYS, ARGV)
  local id = ARGV[1]
  local prior = redis.call('HGET', KEYS[1], id)
  if prior then return prior end
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
    else
      return redis.error_reply('unknown operation ' .. tostring(code))
    end
  end
  local reply = table.concat(out, ',')
  redis.call('HSET', KEYS[1], id, reply)
  redis.call('EXPIRE', KEYS[1], memo_ttl)
  for key, seconds in pairs(written) do redis.call('EXPIRE', key, seconds) end
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

__all__ = [
    "BATCH_LUA",
    "ENTITIES",
    "LUA",
    "Call",
    "Interpreter",
    "Label",
    "combine",
    "parse",
    "plan",
    "report",
]
