"""``warden bench --memory``: what events and entities cost in Redis and on the topics, over a replay.

The whole corpus (6,046 real mails, in the order they were received) goes through one worker
process on fresh topics and a fresh Redis prefix; then:

* every key under the prefix is measured with ``MEMORY USAGE`` (``SAMPLES 0``:
  every element counted) and grouped by its hash tag: aggregates per tracked
  entity (``a`` account, ``d`` sender domain, ``i`` sending IP, ``u`` URL
  domain), memo hashes (once-only bookkeeping) and served rows (the feedback
  join) per event;
* ``INFO memory``'s ``used_memory`` before and after gives the server's whole
  growth, allocator and key overhead included;
* every topic is read back: records per input event, key + value bytes per
  record, and the same records compressed with zlib in batches of 100 (what a
  producer with ``compression.type=gzip`` would roughly write).

These are the inputs of the capacity plan (``docs/pages/deployment-and-capacity.md``).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Mapping
from typing import TextIO

from warden.features.store.redis_client import AsyncClient, async_client
from warden.infra.bench import scaling as bench_scaling
from warden.infra.demo.run import Console, services
from warden.infra.exceptions import DevStackError
from warden.streams import broker
from warden.streams.settings import RedisSettings, WardenSettings
from warden.streams.sources import corpus
from warden.streams.topics import Topic, Topics

ENTITY_TAGS = {"a": "account", "d": "sender domain", "i": "sending IP", "u": "URL domain"}
COMPRESSION_BATCH = 100


async def _used_memory(server: RedisSettings) -> int:
    client = async_client(server)
    try:
        return int((await client.info("memory"))["used_memory"])
    finally:
        await client.aclose()


async def _key_sizes(client: AsyncClient, prefix: str) -> dict[str, float]:
    """Bytes by group (entity tag, ``memo``, ``served``) and tracked entities per tag."""
    bytes_by: dict[str, int] = defaultdict(int)
    entities: dict[str, set[bytes]] = defaultdict(set)
    keys = 0
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        keys += 1
        usage = int(await client.memory_usage(key, samples=0) or 0)
        tag = key[key.index(b"{") + 1 : key.index(b"}")]
        letter = tag[:1].decode()
        if b":memo:" in key or tag.startswith(b"e:"):  # memo hashes and event id keys
            bytes_by["memo"] += usage
        elif key.endswith(b":served"):
            bytes_by["served"] += usage
        else:
            bytes_by[letter] += usage
            entities[letter].add(tag)
    out: dict[str, float] = {"keys": float(keys)}
    for name, size in bytes_by.items():
        out[f"bytes_{name}"] = float(size)
    for letter, tags in entities.items():
        out[f"entities_{letter}"] = float(len(tags))
    return out


def _topic_sizes(settings: WardenSettings, topic: Topic, quiet_s: float = 3.0) -> dict[str, float]:
    """Records, key + value bytes and zlib-compressed bytes of everything on ``topic``."""
    reader = broker.TopicReader(settings.kafka, (topic,))
    records: list[bytes] = []
    raw = 0
    last_new = time.monotonic()
    try:
        while time.monotonic() - last_new < quiet_s:
            batch = reader.poll(0.5)
            if batch:
                last_new = time.monotonic()
            for message in batch:
                payload = (message.key or b"") + (message.value or b"")
                raw += len(payload)
                records.append(payload)
    finally:
        reader.close()
    compressed = sum(
        len(zlib.compress(b"".join(records[i : i + COMPRESSION_BATCH]), 6))
        for i in range(0, len(records), COMPRESSION_BATCH)
    )
    return {"records": float(len(records)), "bytes": float(raw), "compressed": float(compressed)}


def run(settings: WardenSettings, out: TextIO, base_env: Mapping[str, str] | None = None) -> dict[str, float]:
    """Replay the corpus through one worker and print what it left in Redis and on the topics."""
    env = dict(
        base_env
        if base_env is not None
        else {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    )
    console = Console(out)
    figures: dict[str, float] = {}
    with services(settings, console) as live:
        live = bench_scaling.ensure_model(live, console)
        tag = f"mem{uuid.uuid4().hex[:8]}"
        deployed = bench_scaling.deployment(live, tag)
        topics = Topics.from_settings(deployed.kafka)
        broker.ensure_topics(deployed.kafka, topics.all())
        events = corpus.load(live.corpus, corpus.ALL)
        if deployed.redis.url is None or deployed.redis.cluster_nodes:
            raise DevStackError(
                "the memory bench measures one standalone Redis (no URL, or a cluster, is set)"
            )
        before = asyncio.run(_used_memory(deployed.redis))
        console.step(f"replaying {len(events):,} corpus mails through one worker ...")
        with bench_scaling.group(deployed, 1, env, live.dev.state_dir / "bench-memory") as running:
            (pid,) = running.pids
            cpu_before = bench_scaling.cpu_seconds(pid)
            redis_before = bench_scaling.redis_cpu_seconds(deployed)
            bench_scaling.produce(deployed, events)
            verdicts = bench_scaling.verdict_times(deployed, len(events), timeout_s=900)
            figures["worker_cpu_s"] = bench_scaling.cpu_seconds(pid) - cpu_before
            figures["redis_cpu_s"] = bench_scaling.redis_cpu_seconds(deployed) - redis_before
            figures["worker_rss_bytes"] = float(bench_scaling.rss_bytes(pid))
        console.step("measuring Redis keys and topics ...")

        async def _redis() -> dict[str, float]:
            client = async_client(deployed.redis)
            try:
                sizes = await _key_sizes(client, deployed.redis.key_prefix)
            finally:
                await client.aclose()
            sizes["used_memory_delta"] = float(await _used_memory(deployed.redis) - before)
            return sizes

        figures.update(asyncio.run(_redis()))
        for topic in (topics.mail_events, topics.mail_features, topics.verdicts, topics.feature_log):
            name = topic.name.removeprefix(deployed.kafka.topic_prefix)
            for key, value in _topic_sizes(deployed, topic).items():
                figures[f"topic_{name}_{key}"] = value
    n = float(len(events))
    figures["events"] = n
    figures["verdicts"] = float(len(verdicts))
    _print(out, figures, n)
    return figures


def _print(out: TextIO, f: Mapping[str, float], n: float) -> None:
    keyed = max(1.0, sum(v for k, v in f.items() if k.startswith("bytes_")))
    out.write(
        f"== memory (one worker, {n:,.0f} corpus mails replayed once; Redis MEMORY USAGE per key, "
        "INFO memory) ==\n"
        f"events with a verdict: {f['verdicts']:,.0f} of {n:,.0f}; keys written: {f['keys']:,.0f}\n"
        f"CPU: {n / f['worker_cpu_s']:,.0f} events per worker CPU second; "
        f"Redis {f['redis_cpu_s'] * 1e6 / n:,.0f} us CPU per event; "
        f"worker resident memory {f['worker_rss_bytes'] / 2**20:,.0f} MiB\n"
        f"Redis used_memory grew by {f['used_memory_delta']:,.0f} bytes "
        f"({f['used_memory_delta'] / n:,.0f} bytes per event, everything included); "
        f"keys' MEMORY USAGE sums to {keyed:,.0f} (overhead factor {f['used_memory_delta'] / keyed:.2f})\n"
    )
    for letter, name in ENTITY_TAGS.items():
        tracked = f.get(f"entities_{letter}", 0.0)
        if tracked:
            per = f.get(f"bytes_{letter}", 0.0) / tracked
            out.write(f"per tracked {name:14s} {per:8,.0f} bytes ({tracked:,.0f} tracked)\n")
    out.write(
        f"memo (once-only, until its TTL) {f.get('bytes_memo', 0.0) / n:8,.0f} bytes per event\n"
        f"served row (feedback join)      {f.get('bytes_served', 0.0) / n:8,.0f} bytes per event\n"
        "== bytes per input event on the topics (key + value; zlib in batches of "
        f"{COMPRESSION_BATCH}) ==\n"
    )
    total = total_compressed = 0.0
    for name in ("mail.events", "mail.features", "verdicts", "feature-log"):
        records, size, compressed = (f[f"topic_{name}_{k}"] for k in ("records", "bytes", "compressed"))
        total += size / n
        total_compressed += compressed / n
        out.write(
            f"{name:14s} {records / n:5.2f} records/event {size / n:9,.0f} bytes/event "
            f"({compressed / n:8,.0f} compressed)\n"
        )
    out.write(f"{'all':14s} {'':19s} {total:9,.0f} bytes/event ({total_compressed:8,.0f} compressed)\n")
