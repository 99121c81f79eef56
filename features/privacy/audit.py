"""``warden privacy audit``: look everywhere Warden keeps data for anything raw.

Invariant 5 says raw identifiers and content never leave ingest. The audit
checks what is actually stored, not what the code intends, and reads all of
it unless told to sample:

* **Redis**: every key under the prefix, on the standalone server or on every
  primary of the cluster, each value read by its type
  (:mod:`features.privacy.audit_redis`), grouped into families (pseudonyms, ids
  and bucket numbers blanked): count, TTL min/max, and keys without a TTL
  (each is a finding: the retention policy is a TTL on every key).
* **Derived topics**: every record, up to the end each partition had when the
  audit started, of every topic Warden derives (all topics but the inputs
  and the dead letters, which keep raw payloads by design and share the
  inputs' retention). ``sample`` reads only the first records of each topic,
  and the report says so.
* **The model registry**: every file (manifests, ONNX graphs, token tables).
* **Logs and metrics**: the log files given, and a worker's ``/metrics``.

A finding is an e-mail address, an IPv4 address, a known subject of the
replay corpus (at least three words and 15 characters, reply prefixes
dropped) or a display name from its address headers (at least two words and
8 characters), each matched as a word sequence whatever the case and
punctuation.
Findings are reported by place and kind with the value masked, so the
audit's own output does not repeat what it found. The audit passes only when
it found nothing and read every configured store in full; a store it could
not read fails it, and a sampled or skipped part makes the verdict say so.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from warden.features.privacy.audit_redis import audit_redis
from warden.features.privacy.findings import AuditReport, Scanner
from warden.streams.exceptions import UsageError
from warden.streams.settings import WardenSettings
from warden.streams.topics import Topic, Topics


def derived_topics(topics: Topics) -> list[Topic]:
    """Every topic but the inputs and the dead letters (which keep raw payloads by design)."""
    excluded = {t.name for t in topics.inputs()} | {topics.dead_letters.name}
    return [t for t in topics.all() if t.name not in excluded]


def audit_topics(
    settings: WardenSettings, scanner: Scanner, report: AuditReport, sample: int | None, idle_s: float = 20.0
) -> None:
    """Every record of every derived topic, up to where each partition ended when the audit started.

    A partition's end is the larger of the offset the broker lists before
    reading and the high watermark of the first fetch that reaches it (brokers
    that list less than they hold are read to the end all the same; records
    appended while it reads are read too, never fewer). With ``sample``, only
    the first ``sample`` records of each topic are read and the report says
    so. A partition that stops advancing before its end for ``idle_s`` is
    recorded as not read. Raises BrokerError if the broker cannot be reached.
    """
    from warden.streams import broker
    from warden.streams.reader import partitions_behind

    topics = derived_topics(Topics.from_settings(settings.kafka))
    counts = dict.fromkeys((t.name for t in topics), 0)
    reader = broker.TopicReader(settings.kafka, tuple(topics))
    try:
        extent = reader.extent()
        targets: dict[tuple[str, int], int] = {}  # partition -> the offset it is read up to
        listed_ends = {partition: end for partition, (_, end) in extent.items()}

        def behind() -> set[str]:
            """Topics with a partition not yet read to its end; fixes each partition's end once reached."""
            return {topic for topic, _ in partitions_behind(reader.progress(), listed_ends, targets)}

        def wanted(topic: str) -> bool:
            return sample is None or counts[topic] < sample

        stalled: set[str] = set()
        passed_over: set[str] = set()  # topics with records fetched but not read (beyond the sample)
        last_progress = time.monotonic()
        while (open_topics := behind()) and any(wanted(topic) for topic in open_topics):
            if time.monotonic() - last_progress > idle_s:
                stalled = {topic for topic in open_topics if wanted(topic)}
                break
            batch = reader.poll(1.0)
            if batch:
                last_progress = time.monotonic()
            for message in batch:
                if not wanted(message.topic):
                    passed_over.add(message.topic)
                    continue
                counts[message.topic] += 1
                data = (message.key or b"") + b" " + (message.value or b"")
                report.findings.extend(scanner.scan(f"topic {message.topic}", data))
        unfinished = behind()
        in_scope = dict.fromkeys(counts, 0)
        for partition, (position, highwater) in reader.progress().items():
            first, listed = extent[partition]
            end = targets.get(partition, max(listed, highwater or 0, position))
            in_scope[partition[0]] += end - first
    finally:
        reader.close()
    for name, count in counts.items():
        if name in stalled:
            report.unread.append(
                f"topic {name}: stopped after {count:,} of {in_scope[name]:,} records "
                f"(nothing arrived for {idle_s:g} s)"
            )
        elif name in unfinished or name in passed_over:
            report.sampled[f"topic {name}"] = (count, in_scope[name])
        else:
            report.scanned[f"topic {name}"] = count
    report.scope.append(
        "derived topics: every record present when the audit started (inputs and dead letters hold raw "
        "payloads by design and are not in scope)"
    )


def audit_files(paths: Iterable[Path], label: str, scanner: Scanner, report: AuditReport) -> None:
    """Every file given; one that is missing or cannot be read is recorded as not read."""
    files = 0
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.unread.append(f"{label} {path}: {exc.strerror or type(exc).__name__}")
            continue
        files += 1
        report.findings.extend(scanner.scan(f"{label} {path.name}", data))
    report.scanned[f"{label} files"] = report.scanned.get(f"{label} files", 0) + files


def audit_metrics(url: str, scanner: Scanner, report: AuditReport) -> None:
    """A worker's ``/metrics`` page; one that cannot be fetched is recorded as not read.

    Raises UsageError for a URL that is not http(s).
    """
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"the metrics URL must be http(s): {url}")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - scheme checked above
            body: bytes = response.read()
    except (urllib.error.URLError, OSError) as exc:
        report.unread.append(f"metrics {url}: {exc}")
        return
    report.scanned["metrics bytes"] = len(body)
    report.findings.extend(scanner.scan("metrics", body))


def corpus_subjects(settings: WardenSettings) -> list[str]:
    """The subjects of every mail of the replay corpus (what must never appear past ingest)."""
    from warden.streams.sources import corpus

    return [mail.event.subject for mail in corpus.load(settings.corpus, corpus.ALL)]


_NAME_HEADERS = {"from", "to", "cc", "reply-to", "sender"}


def display_names(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The display names in a mail's address headers (``"Alice Smith" <a@b.c>`` → ``Alice Smith``)."""
    from email.utils import getaddresses

    values = [value for name, value in headers if name.lower() in _NAME_HEADERS]
    return [name for name, _ in getaddresses(values) if name.strip()]


def own_vocabulary(settings: WardenSettings) -> bytes:
    """Text Warden writes itself (feature names and descriptions, corpus and topic labels)."""
    from warden.features.definitions import FEATURE_DOCS
    from warden.streams.sources import corpus

    topics = Topics.from_settings(settings.kafka).all()
    parts = [*FEATURE_DOCS, *FEATURE_DOCS.values(), *corpus.FOLDERS, *corpus.PARTS, "spam-assassin"]
    return " ".join(parts + [t.description for t in topics]).encode()


def corpus_names(settings: WardenSettings) -> list[str]:
    """The display names in the replay corpus's address headers (people's and lists' names).

    Names that Warden's own vocabulary contains (a list called "Spam Assassin",
    say) are left out: Warden writing them is no evidence of a leak.
    """
    from warden.streams.sources import corpus

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
    sample: int | None = None,
    topics: bool = True,
) -> AuditReport:
    """Run every check that has something to look at.

    Redis (URL or cluster nodes) and the broker are read when the settings
    name them, in full unless ``sample`` limits each derived topic to its
    first records; ``topics=False`` skips the topics (and the report says
    so). A configured store that cannot be read is in ``report.unread``.
    """
    scanner = Scanner(subjects, names)
    report = AuditReport()
    if settings.redis.url is not None or settings.redis.cluster_nodes:
        audit_redis(settings.redis, scanner, report)
    else:
        report.scope.append("redis: not configured")
    if settings.kafka.bootstrap_servers is None:
        report.scope.append("derived topics: no broker configured")
    elif topics:
        from warden.streams.exceptions import BrokerError

        try:
            audit_topics(settings, scanner, report, sample)
        except BrokerError as exc:
            report.unread.append(f"derived topics: {exc}")
    else:
        report.skipped.append("derived topics")
    registry = settings.models.registry_dir
    if registry.is_dir():
        audit_files(sorted(p for p in registry.rglob("*") if p.is_file()), "registry", scanner, report)
    audit_files(logs, "log", scanner, report)
    if metrics_url is not None:
        audit_metrics(metrics_url, scanner, report)
    return report
