"""What the privacy audit looks for and how it reports: the scanner of raw identifiers and content,
the findings (masked) and the report grouped by key family.

Shared by the audit of topics, files and metrics (:mod:`features.privacy.audit`)
and the audit of Redis (:mod:`features.privacy.audit_redis`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

#: Bounded as RFC 5321 bounds an address (64-character local part, 63-character labels): unbounded,
#: a long run of local-part characters without an ``@`` was rescanned from every position.
#: A longer local part is still found, by its last 64 characters.
_EMAIL = re.compile(
    rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
)
_IPV4 = re.compile(
    rb"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])"
)
_WORD = re.compile(rb"[a-z0-9]+")
_REPLY_PREFIXES = {b"re", b"fw", b"fwd", b"aw", b"sv"}
#: Pseudonyms, hash tags, digit runs: what varies between keys of one family.
_TAG = re.compile(r"\{([^:}]{1,64}):[^}]{0,256}\}")
_NUMBER = re.compile(r"(?<=:)\d+(?=:|$)")


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str
    excerpt: str

    def line(self) -> str:
        return f"FINDING {self.kind:8s} {self.where}: {self.excerpt}"


@dataclass
class Family:
    count: int = 0
    ttl_min: int | None = None
    ttl_max: int | None = None
    no_ttl: int = 0

    def add(self, ttl: int) -> None:
        self.count += 1
        if ttl < 0:
            self.no_ttl += 1
            return
        self.ttl_min = ttl if self.ttl_min is None else min(self.ttl_min, ttl)
        self.ttl_max = ttl if self.ttl_max is None else max(self.ttl_max, ttl)


@dataclass
class AuditReport:
    families: dict[str, Family] = field(default_factory=dict)
    scanned: dict[str, int] = field(default_factory=dict)  # place -> records/keys/files/bytes read in full
    #: place -> (records read, records in scope) where only a sample was read, as asked.
    sampled: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Configured places the caller chose not to read.
    skipped: list[str] = field(default_factory=list)
    #: Places (or keys) that should have been read and could not be: each fails the audit.
    unread: list[str] = field(default_factory=list)
    #: What "everything" meant, place by place (printed with the report).
    scope: list[str] = field(default_factory=list)
    #: Redis keys that expired between the scan and the read.
    expired: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing raw found and nothing left unread (a sample may still have been all that was read)."""
        return not self.findings and not self.unread

    @property
    def passed(self) -> bool:
        """Clean, and every configured store read in full."""
        return self.clean and not self.sampled and not self.skipped

    def verdict(self) -> str:
        """One line: PASSED, FAILED (with what), or what a clean but partial run did not read."""
        if not self.clean:
            parts = []
            if self.findings:
                parts.append(f"{len(self.findings):,} finding(s)")
            if self.unread:
                parts.append(f"{len(self.unread):,} place(s) not read")
            return "FAILED with " + " and ".join(parts)
        if self.passed:
            return "PASSED (every configured store read in full)"
        partial = [f"{place} {read:,} of {total:,} records" for place, (read, total) in self.sampled.items()]
        partial += [f"{place} skipped" for place in self.skipped]
        return "found nothing in a PARTIAL read, not a pass: " + "; ".join(partial)

    def write(self, out: TextIO, limit: int = 50) -> None:
        out.write("== Privacy audit ==\n")
        for line in self.scope:
            out.write(f"scope: {line}\n")
        if self.families:
            out.write(
                f"{'redis key family':58s} {'keys':>8s} {'ttl min':>9s} {'ttl max':>9s} {'no ttl':>7s}\n"
            )
            for name, family in sorted(self.families.items()):
                low = "-" if family.ttl_min is None else str(family.ttl_min)
                high = "-" if family.ttl_max is None else str(family.ttl_max)
                out.write(f"{name[:58]:58s} {family.count:>8,} {low:>9s} {high:>9s} {family.no_ttl:>7,}\n")
        for place, count in self.scanned.items():
            out.write(f"read in full: {place}: {count:,}\n")
        if self.expired:
            out.write(f"redis keys that expired before they could be read: {self.expired:,}\n")
        for place, (read, total) in self.sampled.items():
            out.write(f"SAMPLED: {place}: the first {read:,} of {total:,} records\n")
        for place in self.skipped:
            out.write(f"SKIPPED: {place}\n")
        for place in self.unread[:limit]:
            out.write(f"NOT READ: {place}\n")
        if len(self.unread) > limit:
            out.write(f"... and {len(self.unread) - limit:,} more places not read\n")
        for finding in self.findings[:limit]:
            out.write(finding.line() + "\n")
        if len(self.findings) > limit:
            out.write(f"... and {len(self.findings) - limit:,} more findings\n")
        out.write(f"privacy audit {self.verdict()}\n")
        out.flush()


def mask(value: bytes) -> str:
    """The first two characters and the length: enough to find the value, not to repeat it."""
    text = value.decode("utf-8", "replace")
    return f"{text[:2]}…({len(text)} chars)"


class Scanner:
    """Finds raw identifiers and known subjects in bytes."""

    def __init__(self, subjects: Iterable[str], names: Iterable[str] = ()) -> None:
        #: Known phrases as word sequences, indexed by their first two words: subjects (reply
        #: prefixes dropped; three words and 15 characters or more) and display names (two words
        #: and 8 characters or more).
        self._phrases: dict[tuple[bytes, ...], dict[tuple[bytes, ...], str]] = defaultdict(dict)
        for subject in subjects:
            words = _WORD.findall(subject.strip().lower().encode("utf-8", "ignore"))
            while words and words[0] in _REPLY_PREFIXES:
                words = words[1:]
            if len(words) >= 3 and len(b" ".join(words)) >= 15:
                self._phrases[tuple(words[:2])][tuple(words)] = "subject"
        for name in names:
            words = _WORD.findall(name.strip().lower().encode("utf-8", "ignore"))
            if len(words) >= 2 and len(b" ".join(words)) >= 8:
                self._phrases[tuple(words[:2])].setdefault(tuple(words), "name")

    def scan(self, where: str, data: bytes) -> Iterator[Finding]:
        for match in _EMAIL.finditer(data):
            yield Finding(where, "address", mask(match.group()))
        for match in _IPV4.finditer(data):
            yield Finding(where, "ip", mask(match.group()))
        if self._phrases:
            words = _WORD.findall(data.lower())
            seen: set[tuple[bytes, ...]] = set()
            for i in range(len(words) - 1):
                for phrase, kind in self._phrases.get((words[i], words[i + 1]), {}).items():
                    if phrase not in seen and tuple(words[i : i + len(phrase)]) == phrase:
                        seen.add(phrase)
                        yield Finding(where, kind, mask(b" ".join(phrase)))


def family_of(key: str, prefix: str) -> str:
    """``warden:{a:k1.9f..}:sender:memo:472193`` → ``{a:*}:sender:memo:#``."""
    rest = key[len(prefix) + 1 :] if key.startswith(prefix + ":") else key
    return _NUMBER.sub("#", _TAG.sub(r"{\1:*}", rest))
