"""``warden privacy audit``: look everywhere Warden keeps data for anything raw.

Invariant 5 says raw identifiers and content never leave ingest. The audit
checks what is actually stored, not what the code intends:

* **Redis**: every key under the prefix, grouped into families (pseudonyms,
  ids and bucket numbers blanked): count, TTL min/max, and keys without a TTL
  (each is a finding: the retention policy is a TTL on every key). Every key
  name and value is scanned.
* **Derived topics**: a sample of every topic Warden derives (all topics but
  the inputs and the dead letters, which keep raw payloads by design and share
  the inputs' retention).
* **The model registry**: every file (manifests, ONNX graphs, token tables).
* **Logs and metrics**: the log files given, and a worker's ``/metrics``.

A finding is an e-mail address, an IPv4 address, a known subject of the
replay corpus (at least three words and 15 characters, reply prefixes
dropped) or a display name from its address headers (at least two words and
8 characters), each matched as a word sequence whatever the case and
punctuation.
Findings are reported by place and kind with the value masked, so the
audit's own output does not repeat what it found.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import redis

from infra.settings import WardenSettings
from streams.topics import Topic, Topics

_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IPV4 = re.compile(
    rb"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])"
)
_WORD = re.compile(rb"[a-z0-9]+")
_REPLY_PREFIXES = {b"re", b"fw", b"fwd", b"aw", b"sv"}
#: Pseudonyms, hash tags, digit runs: what varies between keys of one family.
_TAG = re.compile(r"\{([^:}]+):[^}]*\}")
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
    scanned: dict[str, int] = field(default_factory=dict)  # place -> records/keys/files/lines looked at
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def write(self, out: TextIO, limit: int = 50) -> None:
        out.write("== Privacy audit ==\n")
        if self.families:
            out.write(
                f"{'redis key family':58s} {'keys':>8s} {'ttl min':>9s} {'ttl max':>9s} {'no ttl':>7s}\n"
            )
            for name, family in sorted(self.families.items()):
                low = "-" if family.ttl_min is None else str(family.ttl_min)
                high = "-" if family.ttl_max is None else str(family.ttl_max)
                out.write(f"{name[:58]:58s} {family.count:>8,} {low:>9s} {high:>9s} {family.no_ttl:>7,}\n")
        for place, count in self.scanned.items():
            out.write(f"scanned {place}: {count:,}\n")
        for finding in self.findings[:limit]:
            out.write(finding.line() + "\n")
        if len(self.findings) > limit:
            out.write(f"... and {len(self.findings) - limit:,} more findings\n")
        verdict = "PASSED" if self.passed else f"FAILED with {len(self.findings):,} finding(s)"
        out.write(f"privacy audit {verdict}\n")
        out.flush()


def _mask(value: bytes) -> str:
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
            yield Finding(where, "address", _mask(match.group()))
        for match in _IPV4.finditer(data):
            yield Finding(where, "ip", _mask(match.group()))
        if self._phrases:
            words = _WORD.findall(data.lower())
            seen: set[tuple[bytes, ...]] = set()
            for i in range(len(words) - 1):
                for phrase, kind in self._phrases.get((words[i], words[i + 1]), {}).items():
                    if phrase not in seen and tuple(words[i : i + len(phrase)]) == phrase:
                        seen.add(phrase)
                        yield Finding(where, kind, _mask(b" ".join(phrase)))


def family_of(key: str, prefix: str) -> str:
    """``warden:{a:k1.9f..}:sender:memo:472193`` → ``{a:*}:sender:memo:#``."""
    rest = key[len(prefix) + 1 :] if key.startswith(prefix + ":") else key
    return _NUMBER.sub("#", _TAG.sub(r"{\1:*}", rest))


def _dump(client: redis.Redis, keys: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """TTL and a readable dump of each key's value (two pipelined round trips)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.ttl(key)
    answers = pipe.execute()
    kinds, ttls = answers[0::2], answers[1::2]
    pipe = client.pipeline(transaction=False)
    for key, kind in zip(keys, kinds, strict=True):
        if kind == b"string":
            pipe.get(key)
        elif kind == b"hash":
            pipe.hgetall(key)
        elif kind == b"set":
            pipe.smembers(key)
        elif kind == b"zset":
            pipe.zrange(key, 0, -1)
        elif kind == b"list":
            pipe.lrange(key, 0, -1)
        else:
            pipe.echo(b"")
    out = []
    for ttl, value in zip(ttls, pipe.execute(), strict=True):
        if isinstance(value, dict):
            text = b" ".join(k + b"=" + v for k, v in value.items())
        elif isinstance(value, set | list):
            text = b" ".join(value)
        else:
            text = value or b""
        out.append((int(ttl), text))
    return out


def audit_redis(client: redis.Redis, prefix: str, scanner: Scanner, report: AuditReport) -> None:
    """Every key under ``prefix``: families, TTLs, and the key names and values scanned."""
    batch: list[bytes] = []
    scanned = 0

    def flush() -> None:
        for key, (ttl, value) in zip(batch, _dump(client, batch), strict=True):
            name = key.decode("utf-8", "replace")
            family = family_of(name, prefix)
            report.families.setdefault(family, Family()).add(ttl)
            if ttl == -1:
                report.findings.append(Finding(f"redis {family}", "no-ttl", _mask(key)))
            report.findings.extend(scanner.scan(f"redis {family}", key + b" " + value))
        batch.clear()

    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        scanned += 1
        if len(batch) >= 500:
            flush()
    flush()
    report.scanned["redis keys"] = scanned


def derived_topics(topics: Topics) -> list[Topic]:
    """Every topic but the inputs and the dead letters (which keep raw payloads by design)."""
    excluded = {t.name for t in topics.inputs()} | {topics.dead_letters.name}
    return [t for t in topics.all() if t.name not in excluded]


def audit_topics(settings: WardenSettings, scanner: Scanner, report: AuditReport, sample: int) -> None:
    from streams import broker

    topics = derived_topics(Topics.from_settings(settings.kafka))
    counts = dict.fromkeys((t.name for t in topics), 0)
    reader = broker.TopicReader(settings.kafka, tuple(topics))
    try:
        while batch := reader.poll(2.0):
            for message in batch:
                if counts[message.topic] >= sample:
                    continue
                counts[message.topic] += 1
                data = (message.key or b"") + b" " + (message.value or b"")
                report.findings.extend(scanner.scan(f"topic {message.topic}", data))
            if all(count >= sample for count in counts.values()):
                break
    finally:
        reader.close()
    for name, count in counts.items():
        report.scanned[f"topic {name} (sampled)"] = count


def audit_files(paths: Iterable[Path], label: str, scanner: Scanner, report: AuditReport) -> None:
    files = 0
    for path in paths:
        if not path.is_file():
            continue
        files += 1
        report.findings.extend(scanner.scan(f"{label} {path.name}", path.read_bytes()))
    report.scanned[f"{label} files"] = report.scanned.get(f"{label} files", 0) + files


def audit_metrics(url: str, scanner: Scanner, report: AuditReport) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"metrics URL must be http(s): {url}")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - scheme checked above
            body: bytes = response.read()
    except (urllib.error.URLError, OSError) as exc:
        report.findings.append(Finding(f"metrics {url}", "unread", f"could not read: {exc}"))
        return
    report.scanned["metrics bytes"] = len(body)
    report.findings.extend(scanner.scan("metrics", body))


def corpus_subjects(settings: WardenSettings) -> list[str]:
    """The subjects of every mail of the replay corpus (what must never appear past ingest)."""
    from streams import corpus

    return [mail.event.subject for mail in corpus.load(settings.corpus, corpus.ALL)]


_NAME_HEADERS = {"from", "to", "cc", "reply-to", "sender"}


def display_names(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The display names in a mail's address headers (``"Alice Smith" <a@b.c>`` → ``Alice Smith``)."""
    from email.utils import getaddresses

    values = [value for name, value in headers if name.lower() in _NAME_HEADERS]
    return [name for name, _ in getaddresses(values) if name.strip()]


def own_vocabulary(settings: WardenSettings) -> bytes:
    """Text Warden writes itself (feature names and descriptions, corpus and topic labels)."""
    from features.definitions import FEATURE_DOCS
    from streams import corpus

    topics = Topics.from_settings(settings.kafka).all()
    parts = [*FEATURE_DOCS, *FEATURE_DOCS.values(), *corpus.ALL, "spam-assassin"]
    return " ".join(parts + [t.description for t in topics]).encode()


def corpus_names(settings: WardenSettings) -> list[str]:
    """The display names in the replay corpus's address headers (people's and lists' names).

    Names that Warden's own vocabulary contains (a list called "Spam Assassin",
    say) are left out: Warden writing them is no evidence of a leak.
    """
    from streams import corpus

    mails = corpus.load(settings.corpus, corpus.ALL)
    names = {name for mail in mails for name in display_names(mail.event.headers)}
    own = own_vocabulary(settings)
    return sorted(name for name in names if not any(Scanner((), [name]).scan("vocabulary", own)))


def audit(
    settings: WardenSettings,
    subjects: Iterable[str],
    *,
    names: Iterable[str] = (),
    logs: Sequence[Path] = (),
    metrics_url: str | None = None,
    sample: int = 2000,
    topics: bool = True,
) -> AuditReport:
    """Run every check that has something to look at; the settings must name Redis (and the broker)."""
    scanner = Scanner(subjects, names)
    report = AuditReport()
    if settings.redis.url is not None:
        client = redis.Redis.from_url(settings.redis.url.get_secret_value())
        try:
            audit_redis(client, settings.redis.key_prefix, scanner, report)
        finally:
            client.close()
    if topics and settings.kafka.bootstrap_servers is not None:
        audit_topics(settings, scanner, report, sample)
    registry = settings.models.registry_dir
    if registry.is_dir():
        audit_files(sorted(p for p in registry.rglob("*") if p.is_file()), "registry", scanner, report)
    audit_files(logs, "log", scanner, report)
    if metrics_url is not None:
        audit_metrics(metrics_url, scanner, report)
    return report
