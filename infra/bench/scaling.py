"""``warden bench --workers 1,2``: throughput of worker groups of different sizes, side by side.

For each group size, in one run on the same broker and Redis: fresh topics
(their own prefix, ``PARTITIONS`` partitions), a consumer group and a Redis
prefix of their own; the worker processes are started and left to settle
(every member holds partitions and the assignment stops changing); then a
backlog of real corpus mails is produced as fast as the broker takes it, and
the throughput is the number of distinct verdicts over the time from the
first verdict to the last (broker timestamps). The figure that matters is the
ratio to one worker: absolute rates on a shared machine move from run to run.

The harness (a settled group, a backlog, a drain) is also used by
:mod:`infra.bench.memory`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from warden.infra.demo.run import Console, services
from warden.infra.dev import devstack
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.infra.exceptions import DevStackError
from warden.models.registry import Registry
from warden.streams import broker
from warden.streams.records import Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import Recorded, send_recorded, stamped
from warden.streams.topics import Topics

#: Partitions of every bench topic: enough for each worker of the largest group to hold several.
PARTITIONS = 8
BACKLOG = 4000


@dataclass(frozen=True)
class GroupRun:
    """One group size's measurement."""

    workers: int
    events: int
    events_per_s: float
    partitions: tuple[int, ...]
    #: CPU seconds the worker processes spent on the backlog (user + system, all members).
    worker_cpu_s: float
    #: CPU seconds the Redis server spent on it (``INFO cpu``).
    redis_cpu_s: float


@dataclass(frozen=True)
class Group:
    """A settled worker group: each member's settings and process id, and the partitions each holds."""

    members: list[WardenSettings]
    pids: list[int]
    shares: tuple[int, ...]


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of a process so far, and of its live children with ``children``.

    Read from Linux ``/proc`` (NaN where there is none). Measured around a
    paced phase, CPU per event does not depend on how busy the shared machine
    is, unlike events per second.
    """
    tick = os.sysconf("SC_CLK_TCK")

    def own(stat_path: Path) -> tuple[int, float]:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick  # ppid, utime + stime

    try:
        total = own(Path(f"/proc/{pid}/stat"))[1]
        for stat_path in Path("/proc").glob("[0-9]*/stat") if children else ():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent, seconds = own(stat_path)
                if parent == pid:
                    total += seconds
    except OSError:
        return float("nan")
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def redis_cpu_seconds(settings: WardenSettings) -> float:
    """User + system CPU seconds of the Redis server so far (``INFO cpu``)."""
    from warden.features.store.redis_client import server_client

    if settings.redis.url is None or settings.redis.cluster_nodes:
        raise DevStackError("the Redis CPU figure needs one standalone Redis (no URL, or a cluster, is set)")
    client = server_client(settings.redis)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def deployment(live: WardenSettings, tag: str, partitions: int = PARTITIONS) -> WardenSettings:
    """``live`` with topics, consumer group and Redis prefix that nothing else uses, its workers
    taking the recorded time the benchmarks' replays send (streams.provenance)."""
    return live.model_copy(
        update={
            "kafka": live.kafka.model_copy(update={"topic_prefix": f"{tag}.", "partitions": partitions}),
            "redis": live.redis.model_copy(update={"key_prefix": tag}),
            "worker": live.worker.model_copy(update={"app_id": tag}),
            "ingest": live.ingest.model_copy(update={"trust_producer_event_time": True}),
        }
    )


def ensure_model(live: WardenSettings, console: Console) -> WardenSettings:
    """``live`` with a registry that has a current model: the configured one, or one trained now."""
    if Registry.from_settings(live).current() is not None:
        return live
    from warden.models.train import train_from_corpus

    registry = live.dev.state_dir / f"bench-registry-{uuid.uuid4().hex[:8]}"
    live = live.model_copy(update={"models": live.models.model_copy(update={"registry_dir": registry})})
    console.step(f"no current model in the registry: training one into {registry} ...")
    train_from_corpus(live, corpus.FIRST_HALF)
    return live


def health(member: WardenSettings) -> dict[str, int]:
    """A worker's ``/health`` body."""
    url = f"http://{member.worker.web_host}:{member.worker.web_port}/health"
    with urllib.request.urlopen(url, timeout=2) as response:
        body: dict[str, int] = json.loads(response.read())
    return body


def _settled(members: Sequence[WardenSettings], timeout_s: float) -> tuple[int, ...]:
    """Wait until every member holds partitions and the assignment is unchanged for 3 s."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, ...] = ()
    since = time.monotonic()
    while time.monotonic() < deadline:
        shares = tuple(health(m)["assigned_partitions"] for m in members)
        if shares != last:
            last, since = shares, time.monotonic()
        elif all(shares) and time.monotonic() - since >= 3.0:
            return shares
        time.sleep(0.5)
    raise DevStackError(f"the worker group did not settle within {timeout_s:.0f} s (shares {last})")


@contextlib.contextmanager
def group(settings: WardenSettings, count: int, env: Mapping[str, str], log_dir: Path) -> Iterator[Group]:
    """``count`` worker processes in one consumer group, settled; stopped together on exit."""
    members = [
        settings.model_copy(
            update={
                "worker": settings.worker.model_copy(
                    update={"web_port": devstack.free_port(settings.worker.web_host)}
                )
            }
        )
        for _ in range(count)
    ]
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(worker_process(m, env, log_dir / f"{m.worker.app_id}-{i}.log"))
            for i, m in enumerate(members)
        ]
        for member, proc in zip(members, procs, strict=True):
            wait_healthy(member, proc, timeout_s=120)
        shares = _settled(members, timeout_s=120)
        try:
            yield Group(members, [proc.pid for proc in procs], shares)
        finally:
            for proc in procs:  # all at once: each stop is a rebalance the others would wait on
                proc.terminate()


def backlog(mails: Sequence[corpus.CorpusMail], count: int, tag: str) -> list[corpus.CorpusMail]:
    """``count`` corpus mails (cycled), each with its own event id."""
    return [
        dataclasses.replace(mail, event=mail.event.model_copy(update={"event_id": f"{tag}-{i}"}))
        for i, mail in ((i, mails[i % len(mails)]) for i in range(count))
    ]


def produce(settings: WardenSettings, mails: Sequence[Recorded]) -> None:
    """Send ``mails`` to ``mail.events`` (key: event id, with their recorded time) as fast as the
    broker takes them."""
    topic = Topics.from_settings(settings.kafka).mail_events
    producer = broker.producer(settings.kafka)
    try:
        for mail in mails:
            send_recorded(producer, topic, *stamped(mail))
        producer.flush(timeout=120)
    finally:
        producer.close()


def verdict_times(settings: WardenSettings, count: int, timeout_s: float) -> dict[str, int]:
    """Broker timestamp of the first verdict of each event, until ``count`` events have one."""
    reader = broker.TopicReader(settings.kafka, (Topics.from_settings(settings.kafka).verdicts,))
    first: dict[str, int] = {}
    try:
        for message in reader.until(lambda: len(first) >= count, timeout_s):
            if message.value is not None:
                first.setdefault(decode(Verdict, message.value).event_id, message.timestamp_ms)
    finally:
        reader.close()
    return first


def measure(
    live: WardenSettings,
    workers: int,
    mails: Sequence[corpus.CorpusMail],
    env: Mapping[str, str],
    count: int = BACKLOG,
) -> GroupRun:
    """One group size: settle the group, produce the backlog, time the verdicts."""
    tag = f"scale{workers}w{uuid.uuid4().hex[:6]}"
    settings = deployment(live, tag)
    broker.ensure_topics(settings.kafka, Topics.from_settings(settings.kafka).all())
    events = backlog(mails, count, tag)
    with group(settings, workers, env, live.dev.state_dir / "bench-scaling") as running:
        cpu_before = sum(cpu_seconds(pid) for pid in running.pids)
        redis_before = redis_cpu_seconds(settings)
        produce(settings, events)
        stamps = verdict_times(settings, count, timeout_s=600)
        worker_cpu = sum(cpu_seconds(pid) for pid in running.pids) - cpu_before
        redis_cpu = redis_cpu_seconds(settings) - redis_before
    if len(stamps) < count:
        raise DevStackError(f"{workers} worker(s) gave {len(stamps)} of {count} verdicts within the timeout")
    span_s = max(1e-3, (max(stamps.values()) - min(stamps.values())) / 1000)
    return GroupRun(workers, count, (count - 1) / span_s, running.shares, worker_cpu, redis_cpu)


def run(
    settings: WardenSettings,
    out: TextIO,
    counts: Sequence[int],
    base_env: Mapping[str, str] | None = None,
    count: int = BACKLOG,
    rounds: int = 2,
) -> dict[str, float]:
    """Measure each group size in ``counts``, ``rounds`` times interleaved; print the means and ratios."""
    env = dict(
        base_env
        if base_env is not None
        else {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    )
    console = Console(out)
    runs: list[GroupRun] = []
    with services(settings, console) as live:
        live = ensure_model(live, console)
        mails = corpus.load(live.corpus, corpus.SECOND_HALF)
        for round_ in range(rounds):
            for workers in counts:
                console.step(
                    f"round {round_ + 1}/{rounds}, {workers} worker process(es): "
                    f"settle the group, then a {count:,}-mail backlog"
                )
                runs.append(measure(live, workers, mails, env, count))
    figures: dict[str, float] = {"cpus": float(os.cpu_count() or 0), "backlog": float(count)}
    out.write(
        f"== scaling (worker processes in one consumer group; {PARTITIONS} partitions per topic; "
        f"{count:,}-mail backlog; {os.cpu_count()} CPUs shared with the broker and Redis) ==\n"
    )
    for result in runs:
        out.write(
            f"  {result.workers} worker(s): {result.events_per_s:6,.0f} events/s; "
            f"{result.events / result.worker_cpu_s:6,.0f} events per worker CPU second; "
            f"workers used {result.worker_cpu_s * result.events_per_s / result.events:.2f} cores; "
            f"Redis {result.redis_cpu_s * 1e6 / result.events:4,.0f} us CPU per event "
            f"(partitions held {'/'.join(map(str, result.partitions))})\n"
        )
    sizes = list(dict.fromkeys(counts))
    for workers in sizes:
        mine = [r for r in runs if r.workers == workers]
        figures[f"w{workers}_events_per_s"] = sum(r.events_per_s for r in mine) / len(mine)
        cpu_s = sum(r.worker_cpu_s for r in mine)
        figures[f"w{workers}_events_per_cpu_s"] = sum(r.events for r in mine) / cpu_s
        figures[f"w{workers}_cores_used"] = cpu_s / sum(r.events / r.events_per_s for r in mine)
        figures[f"w{workers}_redis_us_per_event"] = (
            sum(r.redis_cpu_s for r in mine) * 1e6 / sum(r.events for r in mine)
        )
    one = figures.get("w1_events_per_s")
    for workers in sizes:
        rate = figures[f"w{workers}_events_per_s"]
        ratio = ""
        if one:
            figures[f"w{workers}_ratio_to_one"] = rate / one
            ratio = f"; {rate / one:.2f}x one worker"
        out.write(
            f"mean of {rounds}: {workers} worker(s) {rate:6,.0f} events/s, "
            f"{figures[f'w{workers}_events_per_cpu_s']:,.0f} events per worker CPU second, "
            f"{figures[f'w{workers}_cores_used']:.2f} cores used{ratio}\n"
        )
    return figures
