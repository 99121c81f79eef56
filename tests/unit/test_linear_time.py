"""Linear time on untrusted bytes (issue 17, invariant 8): static ReDoS checks and doubling tests.

Every regular expression in ``streams`` and ``features`` (the floors that
read what a sender wrote) is found here programmatically, so a new one
cannot escape: module-level compiled patterns, and the literal patterns of
``re.*`` calls found in the source. Each is

* checked by ``regexploit`` (a static ReDoS finder: nested or adjacent
  overlapping repeats; it reports cubic and worse), and
* run over adversarial strings generated from its own pieces (its literal
  runs and characters, and characters that break them), at a size and at
  four times it: a growth past ~8x is confirmed by a doubling test.

Every stage of ingest is then run over the hand-written hostile families of
:mod:`infra.bench.hostile_inputs` (the same inputs ``warden bench --only hostile``
measures) at 64 KB and 128 KB. Doubling an input must not more than ~2.5x its
CPU time. All figures are ratios of CPU time measured in one run, never a
wall-clock limit: other load on the machine stretches both sides alike.
"""

from __future__ import annotations

import ast
import functools
import importlib
import itertools
import pkgutil
import re
import re._constants as sre_constants
import re._parser as sre_parse
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from regexploit.ast.sre import SreOpParser
from regexploit.redos import find as find_redos

from warden import features, streams
from warden.features.ingest import validation
from warden.features.ingest.decode import decode_activity_event, decode_mail_event
from warden.infra.bench.hostile_inputs import LIMITS as _LIMITS
from warden.infra.bench.hostile_inputs import POISON_PILL, STAGES, Family, Stage, size_of
from warden.streams.exceptions import MalformedRecord

REPO = Path(__file__).resolve().parents[2]
#: The floors whose code reads untrusted bytes.
PACKAGES = (streams, features)
#: Subpackages of those floors that never see a sender's bytes, each with why (none: the privacy
#: audit reads Warden's own stores, but what it hunts for is a sender's bytes that leaked into them,
#: so its patterns are held to the same bound).
NOT_UNTRUSTED: dict[str, str] = {}
#: Doubling an input may multiply its CPU time by at most this (linear: 2; quadratic: 4).
MAX_RATIO = 2.5
#: ``re`` functions whose first argument is a pattern.
_RE_CALLS = {"compile", "search", "match", "fullmatch", "findall", "finditer", "sub", "subn", "split"}
#: Patterns built at run time (not literals, not module-level objects), each with why it is safe.
NON_LITERAL = {
    ("features/ingest/text.py", "longest_run"): (
        "a character class of the caller's characters (code, not input) repeated: one pass"
    ),
}
#: Patterns regexploit cannot parse, each with the reason (none today: the list says so explicitly).
UNPARSEABLE: dict[str, str] = {}

validation.warm()


def _untrusted(name: str) -> bool:
    """Whether a module (``warden.features.ingest.text``) or file (``features/ingest/text.py``) reads
    sender bytes."""
    parts = name.replace("/", ".").split(".")
    return not any(part in NOT_UNTRUSTED for part in parts)


def _modules() -> Iterator[Any]:
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if _untrusted(info.name):
                yield importlib.import_module(info.name)


def _module_patterns() -> dict[str, re.Pattern[Any]]:
    """Every module-level compiled pattern of the ingest floors, named ``module.NAME`` (first owner)."""
    found: dict[str, re.Pattern[Any]] = {}
    seen: set[int] = set()
    for module in _modules():
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and id(value) not in seen:
                seen.add(id(value))
                found[f"{module.__name__}.{name}"] = value
    return found


def _source_patterns() -> tuple[dict[str, re.Pattern[Any]], list[str]]:
    """Literal patterns of ``re.*`` calls in the source (a string, or a module-level name bound to
    one); and the calls whose pattern is none of those, nor a module-level pattern, nor explained
    in :data:`NON_LITERAL`."""
    literals: dict[str, re.Pattern[Any]] = {}
    unexplained = []
    for package in PACKAGES:
        for path in sorted(Path(package.__path__[0]).resolve().rglob("*.py")):
            relative = str(path.relative_to(REPO))
            if not _untrusted(relative):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            constants = {
                target.id: node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            module_level = {id(node.value) for node in tree.body if isinstance(node, ast.Assign)}
            for owner, node in _calls(tree):
                pattern = node.args[0]
                if isinstance(pattern, ast.Name) and isinstance(constants.get(pattern.id), str | bytes):
                    literal = constants[pattern.id]
                elif isinstance(pattern, ast.Constant) and isinstance(pattern.value, str | bytes):
                    literal = pattern.value
                else:
                    if id(node) not in module_level and (relative, owner) not in NON_LITERAL:
                        unexplained.append(f"{relative}:{node.lineno} in {owner}")
                    continue
                literals[f"{relative}:{node.lineno}"] = re.compile(literal, _flags(node))
    return literals, unexplained


def _calls(tree: ast.Module) -> Iterator[tuple[str, ast.Call]]:
    """``(enclosing function or "<module>", call)`` for every ``re.<function>(pattern, ...)`` call."""

    def visit(node: ast.AST, owner: str) -> Iterator[tuple[str, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else owner
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and isinstance(child.func.value, ast.Name)
                and child.func.value.id == "re"
                and child.func.attr in _RE_CALLS
                and child.args
            ):
                yield owner, child
            yield from visit(child, inner)

    yield from visit(tree, "<module>")


def _flags(call: ast.Call) -> int:
    """The ``re`` flags written in a call (``re.IGNORECASE | re.MULTILINE``), 0 when none."""
    flags = 0
    for node in [*call.args[1:], *(k.value for k in call.keywords)]:
        for name in ast.walk(node):
            if isinstance(name, ast.Attribute) and isinstance(name.value, ast.Name) and name.value.id == "re":
                flags |= int(getattr(re, name.attr, 0))
    return flags


MODULE_PATTERNS = _module_patterns()
SOURCE_PATTERNS, UNEXPLAINED = _source_patterns()
ALL_PATTERNS = {**MODULE_PATTERNS, **SOURCE_PATTERNS}


def test_the_patterns_are_found() -> None:
    # The discovery itself must work: the patterns issue 17 named are among what it finds.
    for name in (
        "warden.features.ingest.text._TAG",
        "warden.features.ingest.text._ANCHOR",
        "warden.features.ingest.text._HIDDEN",
        "warden.features.ingest.text._WORD",
    ):
        assert name in MODULE_PATTERNS
    for name in (
        "warden.features.ingest.text._CAPS_RUN",
        "warden.features.ingest.headers._FROM_CLAUSE",
        "warden.features.ingest.content._SPAM_PHRASES",
    ):
        assert name in MODULE_PATTERNS
    assert "warden.features.ingest.text._HOST_IN_TEXT" in MODULE_PATTERNS
    assert len(ALL_PATTERNS) >= 30


def test_every_regex_call_is_a_literal_a_module_pattern_or_explained() -> None:
    assert UNEXPLAINED == [], "a pattern built at run time must be listed in NON_LITERAL with a reason"


def _source(pattern: re.Pattern[Any]) -> str:
    return pattern.pattern if isinstance(pattern.pattern, str) else pattern.pattern.decode("latin-1")


@pytest.mark.parametrize("name", sorted(ALL_PATTERNS))
def test_regexploit_finds_no_redos(name: str) -> None:
    pattern = ALL_PATTERNS[name]
    try:
        parsed = SreOpParser().parse_sre(_source(pattern), pattern.flags & ~re.UNICODE)
    except Exception as exc:  # the checker's own limits: each must be explained, never skipped silently
        failure = f"regexploit cannot parse {name} ({type(exc).__name__}): explain why in UNPARSEABLE"
        parsed = None
    if parsed is None:
        assert name in UNPARSEABLE, failure
        return
    assert name not in UNPARSEABLE, f"{name} parses now: drop it from UNPARSEABLE"
    assert [r.example() for r in find_redos(parsed)] == []


# ---------------------------------------------------------------- generated adversarial strings

#: Characters that start, end or break the usual patterns, tried with every pattern's own pieces.
_GENERIC = [*"a1 .<>\"'\\@:/=-()[]$,#&;!\n", "A", "\u00e9", "\u0130"]


_CATEGORY_EXAMPLES = {
    sre_constants.CATEGORY_DIGIT: "1",
    sre_constants.CATEGORY_NOT_DIGIT: "a",
    sre_constants.CATEGORY_SPACE: " ",
    sre_constants.CATEGORY_NOT_SPACE: "a",
    sre_constants.CATEGORY_WORD: "a",
    sre_constants.CATEGORY_NOT_WORD: " ",
}


def _example(sub: Any) -> str:
    """A short string matched by ``sub`` (a parsed pattern), as far as it is easy to tell."""
    out = []
    for op, av in sub:
        if op is sre_constants.LITERAL:
            out.append(chr(av))
        elif op is sre_constants.ANY:
            out.append("a")
        elif op is sre_constants.IN:
            out.append(_class_examples(av)[:1] or "a")
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            out.append(_example(av[2]) * av[0])
        elif op is sre_constants.SUBPATTERN:
            out.append(_example(av[3]))
        elif op is sre_constants.BRANCH:
            out.append(_example(av[1][0]))
        elif op is sre_constants.ATOMIC_GROUP:
            out.append(_example(av))
    return "".join(out)


def _class_examples(items: Any) -> str:
    found = []
    if items and items[0][0] is sre_constants.NEGATE:
        return ""
    for op, av in items:
        if op is sre_constants.LITERAL:
            found.append(chr(av))
        elif op is sre_constants.RANGE:
            found += [chr(av[0]), chr(av[1])]
        elif op is sre_constants.CATEGORY:
            found.append(_CATEGORY_EXAMPLES.get(av, ""))
    return "".join(found)


def _pieces(pattern: re.Pattern[Any]) -> list[str]:
    """Strings that take ``pattern`` part of the way: an example of each prefix of it (the opener
    an attack repeats), its literal runs, and one character of each class it uses."""
    parsed = sre_parse.parse(_source(pattern), pattern.flags & ~re.UNICODE)
    prefixes = [_example(parsed[:i]) for i in range(1, len(parsed) + 1)]
    runs: list[str] = []
    singles: list[str] = []

    def walk(sub: Any) -> None:
        run = ""
        for op, av in sub:
            if op is sre_constants.LITERAL:
                run += chr(av)
                singles.append(chr(av))
                continue
            if run:
                runs.append(run)
            run = ""
            if op is sre_constants.IN:
                singles.extend(_class_examples(av))
            elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
                walk(av[2])
            elif op is sre_constants.SUBPATTERN:
                walk(av[3])
            elif op is sre_constants.BRANCH:
                for branch in av[1]:
                    walk(branch)
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                walk(av[1])
            elif op is sre_constants.ATOMIC_GROUP:
                walk(av)
        if run:
            runs.append(run)

    walk(parsed)
    own = [p for p in dict.fromkeys([*prefixes[-8:], *runs, *singles]) if p and len(p) < 200]
    return own[:28]


def _shapes(pattern: re.Pattern[Any]) -> Iterator[tuple[str, Callable[[int], str]]]:
    """Adversarial strings of about ``n`` characters: runs of one piece, of two alternating, and a
    prefix or suffix around a run (the opener without a closer, the killer at the end)."""
    own = _pieces(pattern)
    every = list(dict.fromkeys([*own, *_GENERIC]))
    for a in every:
        yield f"{a!r}*n", lambda n, a=a: a * (n // len(a))
    for a, b in itertools.product([*own, " ", "a"], repeat=2):
        if a != b:
            yield f"({a!r}+{b!r})*n", lambda n, a=a, b=b: (a + b) * (n // len(a + b))
    for a, b in itertools.product(own, every):
        if a != b:
            yield f"{a!r}+{b!r}*n", lambda n, a=a, b=b: a + b * (n // len(b))
            yield f"{b!r}*n+{a!r}", lambda n, a=a, b=b: b * (n // len(b)) + a


def _run(pattern: re.Pattern[Any], text: str) -> int:
    """Every match from every position: the worst way the code can use a pattern."""
    subject: Any = text if isinstance(pattern.pattern, str) else text.encode("utf-8")
    return sum(1 for _ in pattern.finditer(subject))


def cpu_per_call(call: Callable[[], object], min_cpu: float = 0.005, rounds: int = 3) -> float:
    """CPU seconds per call: calls repeated to ``min_cpu`` per round, the best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        calls, started = 0, time.process_time()
        while True:
            call()
            calls += 1
            spent = time.process_time() - started
            if spent >= min_cpu:
                break
        best = min(best, spent / calls)
        if spent > 20 * min_cpu:
            break  # one call this long is its own measure: noise is small beside it
    return best


def doubling_ratio(small: Any, large: Any, run: Callable[[Any], object], sizes: tuple[int, int]) -> float:
    """CPU growth from ``small`` to ``large`` normalised to a doubling of size; the least of three
    tries (noise only ever inflates a ratio)."""
    size_small, size_large = sizes
    best = float("inf")
    for _ in range(3):
        ratio = cpu_per_call(lambda: run(large)) / cpu_per_call(lambda: run(small))
        best = min(best, ratio * 2 * size_small / size_large)
        if best <= MAX_RATIO:
            break
    return best


def _least_cpu(call: Callable[[], object], runs: int) -> float:
    """The least process CPU time of ``runs`` calls."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return best


def superlinear_shapes(pattern: re.Pattern[Any], first_only: bool = False) -> list[str]:
    """The generated strings on which ``pattern`` grows faster than linearly: each shape is run at
    2,000 and 8,000 characters (linear: ~4x), and one that grows past 8x is confirmed by a doubling
    test at 8,000 and 16,000 (``first_only``: stop at the first confirmed)."""
    slow = []
    for shape, make in _shapes(pattern):
        short, long = make(2_000), make(8_000)
        # Least of a few runs each: noise only adds CPU time, and a short run it slowed would hide
        # a quadratic long one.
        short_s = _least_cpu(functools.partial(_run, pattern, short), 3)
        long_s = _least_cpu(functools.partial(_run, pattern, long), 2)
        if long_s < 0.001 or long_s < 8 * max(short_s, 1e-6):
            continue
        small, large = make(8_000), make(16_000)
        ratio = doubling_ratio(small, large, lambda text: _run(pattern, text), (len(small), len(large)))
        if ratio > MAX_RATIO:
            slow.append(f"{shape}: x{ratio:.1f}")
            if first_only:
                break
    return slow


@pytest.mark.parametrize("name", sorted(ALL_PATTERNS))
def test_regex_scales_linearly_on_its_own_adversarial_strings(name: str) -> None:
    assert superlinear_shapes(ALL_PATTERNS[name]) == []


def test_the_generator_finds_what_issue_17_found() -> None:
    """The generated strings catch the quadratic patterns this issue replaced (so a new one would be)."""
    for old in (
        re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"'),  # the nesting check's string skipper
        re.compile(r"(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})", re.IGNORECASE),  # a host in link text
        re.compile(r"([+-])(\d{2})(\d{2})\s*(?:\(.*\))?\s*$"),  # the time zone of a Date header
    ):
        assert superlinear_shapes(old, first_only=True), old.pattern


# ---------------------------------------------------------------- every stage over the hostile families

_CASES = [(stage, family) for stage in STAGES for family in stage.families]


@pytest.mark.parametrize(
    ("stage", "family"), _CASES, ids=[f"{stage.name}-{family.name}" for stage, family in _CASES]
)
def test_stage_scales_linearly_on_hostile_family(stage: Stage, family: Family) -> None:
    small, large = family.make(64_000), family.make(128_000)
    sizes = (size_of(small), size_of(large))
    ratio = doubling_ratio(small, large, stage.run, sizes)
    assert ratio <= MAX_RATIO, f"{stage.name} on {family.name}: doubling costs x{ratio:.2f}"


def test_the_poison_pill_scales_linearly_and_is_refused() -> None:
    """Issue 17's payload: 0.48 s at 10 KB, 5.85 s at 40 KB, quadratic, before."""
    small, large = POISON_PILL.make(64_000), POISON_PILL.make(128_000)
    ratio = doubling_ratio(
        small,
        large,
        lambda raw: _refused(lambda: validation.check_nesting(raw, 16)),
        (len(small), len(large)),
    )
    assert ratio <= MAX_RATIO
    for decode in (
        lambda raw: decode_mail_event(raw, _LIMITS, 1_800_000_000.0),
        lambda raw: decode_activity_event(raw, "calendar", _LIMITS, 1_800_000_000.0),
        lambda raw: decode_activity_event(raw, "contacts", _LIMITS, 1_800_000_000.0),
    ):
        with pytest.raises(MalformedRecord, match="nesting depth exceeds"):
            decode(POISON_PILL.make(1_000_000))


def _refused(call: Callable[[], object]) -> bool:
    try:
        call()
    except MalformedRecord:
        return True
    return False


def test_each_punycode_label_is_decoded_once_per_record_through_tldextract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replacement of tldextract's private ``_decode_punycode`` is what its suffix lookup calls."""
    import tldextract.tldextract

    from warden.features.ingest import extraction

    assert tldextract.tldextract._decode_punycode is extraction._decode_label_once
    calls: list[str] = []
    original = extraction._decode_label

    def counted(label: str) -> str:
        calls.append(label)
        return original(label)

    monkeypatch.setattr(extraction, "_decode_label", counted)
    label = "xn--bcher-kva"
    hosts = tuple(f"h{i}.{label}.de" for i in range(50))
    assert extraction.url_domains(hosts, 100) == [f"{label}.de"]
    # Once per record for the 50 hosts under it (tldextract alone: once per host).
    assert calls.count(label) == 1
    calls.clear()
    extraction.url_domains(hosts, 100)
    assert calls.count(label) == 1  # nothing is kept between records


def test_a_tldextract_without_the_patched_function_stops_the_import() -> None:
    # In a fresh interpreter: the import that finds no function to replace fails, in one line.
    import subprocess
    import sys

    script = (
        "import tldextract.tldextract as t; del t._decode_punycode\n"
        "from warden.features.exceptions import IncompatibleLibrary\n"
        "try:\n    import warden.features.ingest.extraction\n"
        "except IncompatibleLibrary as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert "has no _decode_punycode" in line
    assert "pyproject.toml" in line
