"""The two implementations of every feature-store operation, side by side.

:data:`LUA` (and its batch form :data:`BATCH_LUA`) is what Redis runs, one
atomic script per call, built from the Lua files beside this module (``apply.lua``,
``preview.lua``, ``batch.lua``); :class:`Interpreter` is the reference over plain
dictionaries that the in-memory store, training and the contract suite run.
What the operations mean, and how events become calls, is in
:mod:`features.store.operations`; the key layout in :mod:`features.store.keys`.

Each implementation has two ways to run a call: *apply* (the stream: once per
memo field, then remembered) and *preview* (:data:`PREVIEW_LUA`,
:meth:`Interpreter.preview`): the values applying would serve, with nothing
changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from warden.features.store.operations import Call, parse


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


def _lua(name: str) -> str:
    """A Lua source shipped beside this module (package data: the wheel carries the .lua files)."""
    return resources.files("warden.features.store").joinpath(name).read_text(encoding="utf-8")


# The server side of the same operations. Values are returned as one string,
# printed with %.17g so that both sides parse exactly the same doubles. Set
# members are unpacked straight from ARGV, never from the program.
_APPLY = "\n" + _lua("apply.lua")

# A preview runs the operations and puts back every key they could have touched: each key's
# serialised value and its TTL in milliseconds are kept first (script time stands still, so the
# TTL comes back exact), and a key that did not exist is deleted again. Only keys whose value
# changed are written back, so a preview that only reads writes nothing.
_PREVIEW = "\n" + _lua("preview.lua")

#: One event's call for one entity: ``EVALSHA sha len(keys) *keys *args`` (a Redis Cluster runs it
#: on the primary owning the keys' shared hash tag).
LUA = _APPLY + "return apply(KEYS, ARGV)\n"

#: A whole batch of calls in one script run, for a standalone server: ``ARGV[1]`` is one JSON
#: array with, per call, its keys and its arguments. Replies come back as one array, one reply
#: per call. One command with one argument, against one command per call with an argument per
#: key and set member (~60 per event), saves the client most of the packing (see
#: :meth:`features.store.redis.RedisStore.apply_calls`); the calls still run one after another, each
#: with its own once-only memo. The keys are not declared as ``KEYS``: a standalone server does
#: not need them to be, and a cluster, which does, gets :data:`LUA` per call.
BATCH_LUA = _APPLY + "\n" + _lua("batch.lua")

#: What one call would serve, with nothing changed: the same ``KEYS`` and ``ARGV`` as :data:`LUA`.
PREVIEW_LUA = _APPLY + _PREVIEW + "return preview(KEYS, ARGV)\n"

__all__ = ["BATCH_LUA", "LUA", "PREVIEW_LUA", "Interpreter"]
