"""``warden bench`` pipeline section: a whole worker next to a bare Faust loop, same broker.

Both consume a backlog of the same mail records, pre-produced before they
start, so that throughput measures the consumer, not the producer:
first-output to last-output broker timestamps. Then each is fed at half the
worker's throughput and its end-to-end latency measured (input broker
timestamp to output broker timestamp).

``warden bench --latency R1,R2,...`` (:func:`latency_curve`) instead feeds
one worker at each of those rates in turn: where its latency bends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np

from warden.infra.bench import scaling as bench_scaling
from warden.infra.demo.run import Console, services
from warden.infra.dev import devstack
from warden.infra.dev.worker_process import child_process, wait_healthy, worker_process
from warden.models.train import train_from_corpus
from warden.streams import broker
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import send_recorded
from warden.streams.topics import Topic, Topics

BACKLOG = 3000
LATENCY_SECONDS = 8.0
#: Events sent (at :data:`WARM_UP_RATE` events/s) before a latency curve is measured.
WARM_UP_EVENTS = 400
WARM_UP_RATE = 200.0
#: Ingest child processes of the second worker measured (``WorkerSettings.ingest_processes``).
POOL_PROCESSES = 2


def _events(mails: Sequence[corpus.CorpusMail], count: int, tag: str) -> list[corpus.CorpusMail]:
    """``count`` corpus mails (cycled), each with its own event id."""
    return bench_scaling.backlog(mails, count, tag)


def _drain(settings: WardenSettings, topic: Topic, count: int, since_ms: int, timeout_s: float) -> list[int]:
    """Broker timestamps of ``count`` records written to ``topic`` since ``since_ms``."""
    reader = broker.TopicReader(settings.kafka, (topic,))
    stamps: list[int] = []
    try:
        for message in reader.until(lambda: len(stamps) >= count, timeout_s):
            if message.timestamp_ms >= since_ms:
                stamps.append(message.timestamp_ms)
    finally:
        reader.close()
    return stamps


def _latencies(
    settings: WardenSettings, topic: Topic, sent_ms: Mapping[bytes, int], timeout_s: float
) -> list[float]:
    """Output minus input broker time for each record keyed by one of ``sent_ms``'s keys."""
    reader = broker.TopicReader(settings.kafka, (topic,))
    found: dict[bytes, float] = {}
    try:
        for message in reader.until(lambda: len(found) >= len(sent_ms), timeout_s):
            key = message.key
            if key is not None and key in sent_ms and key not in found:
                found[key] = message.timestamp_ms - sent_ms[key]
    finally:
        reader.close()
    return list(found.values())


def _produce(
    settings: WardenSettings, topic: Topic, mails: Sequence[corpus.CorpusMail], rate: float | None
) -> dict[bytes, int]:
    """Send mails (key: event id, with their recorded time); returns each key's broker timestamp."""
    producer = broker.producer(settings.kafka)
    try:
        futures = {}
        started = time.monotonic()
        for index, mail in enumerate(mails, start=1):
            if rate is not None:
                pause = started + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            futures[mail.event.event_id.encode()] = send_recorded(
                producer, topic, mail.event, mail.event_time
            )
        return {key: future.get(timeout=60).timestamp for key, future in futures.items()}
    finally:
        producer.close()


@contextmanager
def _bare_faust(
    settings: WardenSettings, source: Topic, sink: Topic, log: Path, *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The bare loop as a child process; ``options`` as :mod:`infra.bench.barefaust` takes them."""
    env_port = devstack.free_port(settings.worker.web_host)
    argv = [
        sys.executable,
        "-m",
        "warden.infra.bench.barefaust",
        settings.kafka.bootstrap_servers or "",
        source.name,
        sink.name,
        f"bare-{uuid.uuid4().hex[:8]}",
        str(env_port),
        *options,
    ]
    with child_process(argv, None, log) as proc:
        yield proc


def _worker(
    live: WardenSettings,
    env: Mapping[str, str],
    mails: Sequence[corpus.CorpusMail],
    tag: str,
    console: Console,
    paced_rate: float | None = None,
) -> tuple[float, float, list[float], float]:
    """One worker on its own topics: backlog events/s, the latency rate, latencies at that rate,
    and CPU microseconds per event at that rate (the worker and its ingest processes).

    The latency rate is half the worker's own throughput, or ``paced_rate`` when given
    (to compare two workers at the same rate)."""
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    since = int(time.time() * 1000)
    _produce(live, topics.mail_events, _events(mails, BACKLOG, f"w{tag}"), None)
    with worker_process(live, env, live.dev.state_dir / f"bench-worker-{tag}.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        throughput = _rate(_drain(live, topics.verdicts, BACKLOG, since, 300))
        rate = paced_rate if paced_rate is not None else max(1.0, throughput / 2)
        count = max(20, int(rate * LATENCY_SECONDS))
        console.step(
            f"latency at {'the same rate' if paced_rate is not None else 'half its throughput'}"
            f" ({rate:.0f} events/s, {count:,} events) ..."
        )
        cpu_before = bench_scaling.cpu_seconds(proc.pid, children=True)
        sent = _produce(live, topics.mail_events, _events(mails, count, f"l{tag}"), rate)
        latencies = _latencies(live, topics.verdicts, sent, 120)
        cpu_us = (bench_scaling.cpu_seconds(proc.pid, children=True) - cpu_before) / count * 1e6
        return throughput, rate, latencies, cpu_us


def _env(base_env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment workers start from: ``base_env``, or this process's without Warden's settings."""
    if base_env is not None:
        return dict(base_env)
    return {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}


def latency_curve(
    settings: WardenSettings, out: TextIO, rates: Sequence[int], base_env: Mapping[str, str] | None = None
) -> dict[str, float]:
    """One worker fed at each of ``rates`` events/s in turn, lowest first, after a warm-up:
    end-to-end p50 / p99 and the worker's CPU per event at each rate."""
    console = Console(out)
    run_id = uuid.uuid4().hex[:8]
    steps = sorted(set(rates))
    figures: dict[str, float] = {}
    with services(settings, console) as live:
        live = _isolated(live, f"curve{run_id}", registry_dir=live.dev.state_dir / f"bench-registry-{run_id}")
        console.step("training a model for the latency curve ...")
        train_from_corpus(live, corpus.FIRST_HALF)
        topics = Topics.from_settings(live.kafka)
        broker.ensure_topics(live.kafka, topics.all())
        mails = corpus.load(live.corpus, corpus.SECOND_HALF)
        log = live.dev.state_dir / f"bench-curve-{run_id}.log"
        with worker_process(live, _env(base_env), log) as proc:
            wait_healthy(live, proc, timeout_s=90)
            console.step(f"warm-up: {WARM_UP_EVENTS} events at {WARM_UP_RATE:.0f} events/s ...")
            warm_up = _events(mails, WARM_UP_EVENTS, f"warm{run_id}")
            _latencies(live, topics.verdicts, _produce(live, topics.mail_events, warm_up, WARM_UP_RATE), 120)
            for rate in steps:
                count = max(20, int(rate * LATENCY_SECONDS))
                console.step(f"{rate:,} events/s ({count:,} events) ...")
                cpu_before = bench_scaling.cpu_seconds(proc.pid, children=True)
                events = _events(mails, count, f"r{rate}-{run_id}")
                latencies = _latencies(
                    live, topics.verdicts, _produce(live, topics.mail_events, events, rate), 120
                )
                cpu_seconds = bench_scaling.cpu_seconds(proc.pid, children=True) - cpu_before
                p50, p99 = np.percentile(np.asarray(latencies or [0.0]), [50, 99])
                figures[f"p50_ms_at_{rate}"] = float(p50)
                figures[f"p99_ms_at_{rate}"] = float(p99)
                figures[f"cpu_us_at_{rate}"] = cpu_seconds / count * 1e6
                figures[f"verdicts_at_{rate}"] = float(len(latencies))
                figures[f"sent_at_{rate}"] = float(count)
    worker = live.worker
    out.write(
        "== latency curve (one worker, paced input; input to verdict, broker timestamps) ==\n"
        f"batch window {worker.batch_within_s:g} s, batch size {worker.batch_size}, "
        f"fetch max wait {live.kafka.fetch_max_wait_ms} ms\n"
        f"{'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/event':>13} {'verdicts':>15}\n"
    )
    for rate in steps:
        out.write(
            f"{rate:>9,} {figures[f'p50_ms_at_{rate}']:>8.0f} {figures[f'p99_ms_at_{rate}']:>8.0f} "
            f"{figures[f'cpu_us_at_{rate}']:>13,.0f} "
            f"{figures[f'verdicts_at_{rate}']:>7,.0f}/{figures[f'sent_at_{rate}']:<7,.0f}\n"
        )
    return figures


def _rate(stamps: Sequence[int]) -> float:
    if len(stamps) < 2:
        return 0.0
    return (len(stamps) - 1) / max(1e-3, (max(stamps) - min(stamps)) / 1000)


def _isolated(
    live: WardenSettings, name: str, registry_dir: Path | None = None, **worker: object
) -> WardenSettings:
    """``live`` on topics, Redis keys and a consumer group of its own (:func:`bench_scaling.deployment`),
    with a free web port, these worker settings, and optionally a registry of its own."""
    isolated = bench_scaling.deployment(live, name, live.kafka.partitions)
    update: dict[str, object] = {
        "worker": isolated.worker.model_copy(
            update={"web_port": devstack.free_port(live.worker.web_host), **worker}
        )
    }
    if registry_dir is not None:
        update["models"] = live.models.model_copy(update={"registry_dir": registry_dir})
    return isolated.model_copy(update=update)


def run(settings: WardenSettings, out: TextIO, base_env: Mapping[str, str] | None = None) -> dict[str, float]:
    """Measure the worker and the bare loop on the embedded (or configured) broker."""
    env = _env(base_env)
    console = Console(out)
    run_id = uuid.uuid4().hex[:8]
    with services(settings, console) as live:
        live = _isolated(live, f"bench{run_id}", registry_dir=live.dev.state_dir / f"bench-registry-{run_id}")
        console.step("training a model for the pipeline benchmark ...")
        train_from_corpus(live, corpus.FIRST_HALF)
        topics = Topics.from_settings(live.kafka)
        bare_in = Topic(f"bench{run_id}.bare.in", live.kafka.partitions, 1, "bare loop input")
        bare_out = Topic(f"bench{run_id}.bare.out", live.kafka.partitions, 1, "bare loop output")
        broker.ensure_topics(live.kafka, (*topics.all(), bare_in, bare_out))
        mails = corpus.load(live.corpus, corpus.SECOND_HALF)
        figures: dict[str, float] = {"backlog": float(BACKLOG)}

        for option, name in (("producer-batch", "tuned"), ("no-spinner", "quiet")):
            console.step(f"bare Faust loop with {option}: {BACKLOG:,} records ...")
            variant_in = Topic(
                f"bench{run_id}.{name}.in", live.kafka.partitions, 1, f"{option} bare loop input"
            )
            variant_out = Topic(
                f"bench{run_id}.{name}.out", live.kafka.partitions, 1, f"{option} bare loop output"
            )
            broker.ensure_topics(live.kafka, (variant_in, variant_out))
            since = int(time.time() * 1000)
            _produce(live, variant_in, _events(mails, BACKLOG, f"{name}{run_id}"), None)
            log = live.dev.state_dir / f"bench-{name}-{run_id}.log"
            with _bare_faust(live, variant_in, variant_out, log, option):
                figures[f"bare_{name}_events_per_s"] = _rate(_drain(live, variant_out, BACKLOG, since, 180))

        console.step(f"bare Faust loop: a backlog of {BACKLOG:,} mail records ...")
        since = int(time.time() * 1000)
        _produce(live, bare_in, _events(mails, BACKLOG, f"bare{run_id}"), None)
        with _bare_faust(
            live, bare_in, bare_out, live.dev.state_dir / f"bench-bare-{run_id}.log"
        ) as bare_proc:
            figures["bare_events_per_s"] = _rate(_drain(live, bare_out, BACKLOG, since, 180))

            console.step(
                f"warden worker (one hop, ingest in its event loop): the backlog via "
                f"{topics.mail_events.name} ..."
            )
            figures["warden_events_per_s"], rate, warden, figures["warden_cpu_us"] = _worker(
                live, env, mails, run_id, console
            )
            console.step(f"bare Faust loop at {rate:.0f} events/s ...")
            count = max(20, int(rate * LATENCY_SECONDS))
            cpu_before = bench_scaling.cpu_seconds(bare_proc.pid, children=True)
            sent_bare = _produce(live, bare_in, _events(mails, count, f"lb{run_id}"), rate)
            bare = _latencies(live, bare_out, sent_bare, 120)
            figures["bare_cpu_us"] = (
                (bench_scaling.cpu_seconds(bare_proc.pid, children=True) - cpu_before) / count * 1e6
            )

        console.step(
            "warden worker with split stages (ingest -> features topic -> score): the same backlog ..."
        )
        figures["split_events_per_s"], _, split, figures["split_cpu_us"] = _worker(
            _isolated(live, f"bench{run_id}s", split_stages=True),
            env,
            mails,
            f"{run_id}s",
            console,
            paced_rate=rate,
        )
        console.step(f"warden worker with {POOL_PROCESSES} ingest processes: the same backlog ...")
        figures["pool_events_per_s"], pool_rate, pool, figures["pool_cpu_us"] = _worker(
            _isolated(live, f"bench{run_id}p", ingest_processes=POOL_PROCESSES),
            env,
            mails,
            f"{run_id}p",
            console,
        )
    figures["latency_rate"] = rate
    figures["pool_latency_rate"] = pool_rate
    for name, samples in (("warden", warden), ("bare", bare), ("split", split), ("pool", pool)):
        p50, p99 = np.percentile(np.asarray(samples or [0.0]), [50, 99])
        figures[f"{name}_latency_ms_p50"] = float(p50)
        figures[f"{name}_latency_ms_p99"] = float(p99)
    for name, (top, bottom) in {
        "warden_over_bare": ("warden", "bare"),
        "warden_over_bare_tuned": ("warden", "bare_tuned"),
        "warden_over_bare_quiet": ("warden", "bare_quiet"),
        "pool_over_bare": ("pool", "bare"),
        "split_over_bare": ("split", "bare"),
        "warden_over_split": ("warden", "split"),
    }.items():
        figures[name] = figures[f"{top}_events_per_s"] / max(1e-9, figures[f"{bottom}_events_per_s"])
    out.write(
        "== pipeline (one worker process vs a bare Faust agent loop, same broker, same records) ==\n"
        f"throughput on a {BACKLOG:,}-record backlog: warden {figures['warden_events_per_s']:,.0f} events/s, "
        f"bare Faust {figures['bare_events_per_s']:,.0f} events/s, ratio {figures['warden_over_bare']:.2f}x "
        f"(bare Faust with the worker's 1 MiB producer batches: {figures['bare_tuned_events_per_s']:,.0f} "
        f"events/s, ratio {figures['warden_over_bare_tuned']:.2f}x; bare Faust without its spinner, "
        f"as the worker runs: {figures['bare_quiet_events_per_s']:,.0f} events/s, "
        f"ratio {figures['warden_over_bare_quiet']:.2f}x)\n"
        f"end-to-end latency at {rate:,.0f} events/s: warden p50 {figures['warden_latency_ms_p50']:.0f} ms, "
        f"p99 {figures['warden_latency_ms_p99']:.0f} ms; "
        f"bare Faust p50 {figures['bare_latency_ms_p50']:.0f} ms, "
        f"p99 {figures['bare_latency_ms_p99']:.0f} ms\n"
        f"warden worker with split stages (two hops): {figures['split_events_per_s']:,.0f} events/s, "
        f"ratio to bare Faust {figures['split_over_bare']:.2f}x (one hop / split: "
        f"{figures['warden_over_split']:.2f}x); at {rate:,.0f} events/s "
        f"p50 {figures['split_latency_ms_p50']:.0f} ms, p99 {figures['split_latency_ms_p99']:.0f} ms\n"
        f"warden worker with {POOL_PROCESSES} ingest processes: "
        f"{figures['pool_events_per_s']:,.0f} events/s, "
        f"ratio to bare Faust {figures['pool_over_bare']:.2f}x; at {pool_rate:,.0f} events/s "
        f"p50 {figures['pool_latency_ms_p50']:.0f} ms, p99 {figures['pool_latency_ms_p99']:.0f} ms\n"
        f"CPU per event while paced (process and children): warden {figures['warden_cpu_us']:,.0f} us, "
        f"split stages {figures['split_cpu_us']:,.0f} us, "
        f"with ingest processes {figures['pool_cpu_us']:,.0f} us, "
        f"bare Faust {figures['bare_cpu_us']:,.0f} us\n"
    )
    return figures
