"""How an event becomes feature-store operations, and what those operations mean.

:func:`plan` turns one pseudonymised event into *calls*, one per entity it
names (its sender, their domain, the sending IP, each URL domain, each
recipient), each a short program of operations derived from the declarations
in :mod:`features.store.aggregations`. The Redis store runs every call as one atomic
server-side script (:data:`features.store.scripts.LUA`); the in-memory reference
runs the very same calls through :class:`features.store.scripts.Interpreter`. Both
implementations of each operation sit side by side in :mod:`features.store.scripts`,
and the contract suite runs them against each other.

A call's ``KEYS`` are the entity's memo hash for the event's hour, then every
key its operations touch (all in one hash tag, :mod:`features.store.keys`). Its
``ARGV`` are few, because every argument costs the client an encoding and the
server a string:

1. the memo field: the event id and the first 16 hex digits of its content
   digest, ``<id>@<digest>`` (the bare id for a report, or for an event built
   offline without a digest);
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
E     nothing (numbers)                                           the numbers
====  ==========================================================  =========

"members" is two parameters: the first ``ARGV`` index of the list and its length.
A recipient's call, for example (``KEYS``: memo, ``w86400``, ``account:in``)::

    ARGV[1]  e17@9c1d70a2b4e85f31
    ARGV[2]  ["1700000000.25","172800","86400","W","2","2","1180555","60","A","3","2","3","1"]
    ARGV[3]  k1.9f2c

counts the event in bucket 1180555 of the 60-bucket window in KEYS[2], then
adds ARGV[3] (the sender) to the set in KEYS[3].

**Once per content.** The memo field names the content, so a redelivery of the
same bytes is served what it was served and changes nothing, while an id that
comes again with other content is a new event for the aggregates. Beside its
entity calls each event has one :func:`register` call, in the same round trip:
its memo hash is the event id's own key (its own slot on a cluster), its one
operation ``E`` returns the event's digest, and the memo keeps the *first*
reply, so it answers with the digest the id was first seen with.
:func:`plan_batch` reads that answer: an event whose id came first with other
content is served as ``reused``, and the scoring stage gives it a derived id
(:func:`streams.provenance.derived_event_id`).

**Preview.** A call can also be *previewed* (``POST /score`` by default): the
scripts answer what the call would serve, from the memo if it was applied,
and otherwise by running it and putting every key it touched back as it was,
within the same atomic script, so nothing changes. An event's calls read no
key another of its calls writes (a recipient's call adds to ``account:in``,
which only a later event's sender call reads), so previewing them one by one
serves exactly what applying them would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from warden.features.store.aggregations import (
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
from warden.features.store.keys import Keys
from warden.streams.records import ActivityFeatures, EventFeatures, EventKind, MailFeatures

Label = Literal["abuse", "legit"]

#: The ``ARGV`` index of a call's first set member (after the id and the program).
_FIRST_MEMBER = 3


#: Hex digits of an event's content digest in its memo fields: enough that nobody can make
#: other content pass for an event's (2^64 tries), few enough to keep the memo small.
_MEMO_DIGEST_CHARS = 16
#: The memo field of an event id's registration (its hash holds that one field).
_FIRST_DIGEST_FIELD = "d"


@dataclass(frozen=True)
class Call:
    """One atomic script run: one entity's updates and reads for one event.

    ``args`` is the script's ``ARGV``: the memo field, the program, then the
    set members the program names (see the module docstring). ``entity`` is
    None for an event id's registration (:func:`register`).
    """

    entity: Entity | None
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


def memo_field(event: EventFeatures) -> str:
    """What an event's calls are remembered under: its id and content digest (the id alone offline)."""
    if not event.digest:
        return event.event_id
    return f"{event.event_id}@{event.digest[:_MEMO_DIGEST_CHARS]}"


def digest_numbers(digest: str) -> tuple[int, int]:
    """The memo's digest digits as two 32-bit numbers (exact in a double, so in a script's reply)."""
    return int(digest[:8], 16), int(digest[8:_MEMO_DIGEST_CHARS], 16)


def register(event: EventFeatures, keys: Keys, ttl_s: int, id_ttl_s: int) -> Call | None:
    """The call that answers with the digest ``event``'s id was first seen with (None without a digest).

    Its memo hash is the id's own key and keeps the first answer for
    ``id_ttl_s`` from the id's first sight (never refreshed): the store's
    ``id_ttl_seconds``, as long as the id's served row lives, so that an id
    reused while its verdict can still be joined is always told apart.
    """
    if not event.digest:
        return None
    operation = _items(("E", 1, 2, *digest_numbers(event.digest)))
    program = f"[{_head(event.timestamp, ttl_s, id_ttl_s)},{operation}]"
    return Call(
        None, event.event_id, (keys.first_digest(event.event_id),), (_FIRST_DIGEST_FIELD, program), ()
    )


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
    field = memo_field(event)
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
            call_args = args[entity.kind] = (field, program, *members)
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
    entity = call.entity
    if entity is not None:
        recipe = _RECIPES.get(entity.kind)
        if recipe is not None and call.outputs is recipe.outputs:
            return _POSITIONS[(kind, entity.kind)]
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


__all__ = [
    "ENTITIES",
    "Call",
    "Label",
    "combine",
    "digest_numbers",
    "memo_field",
    "parse",
    "plan",
    "plan_linked",
    "register",
    "report",
]
