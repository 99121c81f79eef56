"""``warden bench``: figures measured side by side in one run, printed, never asserted.

Sections:

* ``scorer``: the same model scored by LightGBM ``predict``, by Warden's ONNX
  scorer and by lleaves when it is installed, at batch 1, 64 and 512;
* ``store``: the feature store's cost per micro-batch (one pipelined round
  trip that applies and reads every aggregate of 64 events) and Redis memory
  per tracked entity, on a real server (the embedded one unless configured);
* ``pipeline``: a whole worker's events/s on a backlog, and its end-to-end
  latency at half that rate, next to a bare Faust agent loop on the same
  broker (the ratio is the figure);
* ``hostile``: the worst CPU per 1 MB record of every ingest stage over
  generated adversarial families, and the throughput it allows
  (:mod:`infra.bench.hostile`).

The machines this runs on are shared and noisy: compare figures measured in
the same run, not across runs. With ``--json FILE`` each section's figures are
also written with its date and machine (:mod:`infra.bench.results`); the docs'
benchmark pages are rendered from such files.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import TextIO

import numpy as np

from warden.features.store import redis_client
from warden.features.store.batches import plan_batch
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import AsyncClient
from warden.features.testing import features_for
from warden.infra.bench.results import Recorder
from warden.infra.dev import devstack
from warden.streams.provenance import content_digest
from warden.streams.records import MailFeatures
from warden.streams.settings import RedisSettings, WardenSettings

SECTIONS = ("scorer", "store", "pipeline", "hostile")


def synthetic_stream(n: int, seed: int = 0) -> list[MailFeatures]:
    """Pseudonymised mail events shaped like a busy hour: a few heavy senders, many light ones."""
    rng = random.Random(seed)
    ts = 1_700_000_000.0
    events = []
    for i in range(n):
        ts += rng.expovariate(1 / 0.05)
        sender = f"k1.s{int(rng.paretovariate(1.2)) % 5000}"
        recipients = sorted({f"k1.r{rng.randrange(20_000)}" for _ in range(rng.randint(1, 5))})
        domains = sorted({f"k1.u{rng.randrange(2000)}" for _ in range(rng.randint(0, 3))})
        event = features_for(
            f"b{i}",
            ts,
            sender,
            recipients,
            offset=i,
            url_domains=domains,
            sending_ip=f"k1.ip{rng.randrange(1000)}",
            # As ingest gives every event: the digest its memo and id registration are keyed by.
            digest=content_digest(f"bench-{seed}-{i}".encode()),
        )
        events.append(event.model_copy(update={"sender_domain": f"k1.d{rng.randrange(500)}"}))
    return events


@contextlib.contextmanager
def redis_server(settings: WardenSettings) -> Iterator[RedisSettings]:
    """The configured standalone Redis (its AUTH and TLS included), or an embedded one for the benchmark.

    The figures (``INFO``, ``MEMORY USAGE``) are one server's, so a configured
    cluster is not measured here: the embedded server is used instead.
    """
    if settings.redis.url is not None and not settings.redis.cluster_nodes:
        yield settings.redis
        return
    with devstack.running(settings.dev) as state:
        yield redis_client.at(state.redis_url)


def _percentiles(samples: Sequence[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples), [50, 99])
    return float(p50), float(p99)


async def _store(redis_at: RedisSettings, batches: int, batch_size: int) -> dict[str, float]:
    client = redis_client.async_client(redis_at)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    store = RedisStore(client, keys, ttl_seconds=3600, memo_ttl_seconds=3600)
    await store.start()
    warm = 20
    events = synthetic_stream((batches + warm) * batch_size)
    before = int((await client.info("memory"))["used_memory"])
    times = []
    calls = 0
    for index in range(batches + warm):
        batch = events[index * batch_size : (index + 1) * batch_size]
        started = time.perf_counter()
        await store.apply_and_read(batch)
        if index >= warm:
            times.append((time.perf_counter() - started) * 1000)
            calls += len(plan_batch(batch, keys, 3600, 3600).calls)
    after = int((await client.info("memory"))["used_memory"])
    by_kind: dict[str, int] = defaultdict(int)
    entities: dict[str, set[bytes]] = defaultdict(set)
    memo_bytes = 0
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        usage = int(await client.memory_usage(key, samples=0) or 0)
        tag = key[key.index(b"{") + 1 : key.index(b"}")]
        if b":memo:" in key or tag.startswith(b"e:"):  # memo hashes and event id keys
            memo_bytes += usage
            continue
        kind = key[key.index(b"}") + 2 :].split(b":", 1)[0].decode()
        by_kind[kind] += usage
        entities[kind].add(tag)
    await client.delete(*[k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)])
    await store.close()
    p50, p99 = _percentiles(times)
    figures = {
        "batch_size": float(batch_size),
        "batch_ms_p50": p50,
        "batch_ms_p99": p99,
        "us_per_event_p50": p50 * 1000 / batch_size,
        "script_calls_per_batch": calls / batches,
        "used_memory_delta_mb": (after - before) / 1e6,
        "memo_bytes_per_event": memo_bytes / len(events),
    }
    for kind in sorted(entities):
        figures[f"bytes_per_{kind}"] = by_kind[kind] / len(entities[kind])
        figures[f"tracked_{kind}"] = float(len(entities[kind]))
    return figures


async def _server_cpu_s(client: AsyncClient) -> float:
    """The Redis server's user + system CPU seconds so far."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _batching(redis_at: RedisSettings, batches: int, batch_size: int) -> dict[str, float]:
    """The store with one script run per batch and with one per call, batches alternating.

    Wall time per batch (server time included), this process's CPU time per
    batch (what a worker's event loop spends on the store) and the server's
    CPU time per event (``INFO cpu`` read around each batch).
    """
    client = redis_client.async_client(redis_at)
    modes = ("per_batch", "per_call")
    stores = {
        mode: RedisStore(
            client, Keys(f"bench{uuid.uuid4().hex[:8]}"), 3600, 3600, script_per_call=mode == "per_call"
        )
        for mode in modes
    }
    for store in stores.values():
        await store.start()
    events = synthetic_stream(2 * batches * batch_size)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    server: dict[str, list[float]] = {mode: [] for mode in modes}
    for index in range(2 * batches):
        mode = modes[index % 2]
        server_before = await _server_cpu_s(client)
        started, cpu_started = time.perf_counter(), time.process_time()
        await stores[mode].apply_and_read(events[index * batch_size : (index + 1) * batch_size])
        times[mode].append((time.perf_counter() - started) * 1000)
        cpu[mode].append((time.process_time() - cpu_started) * 1000)
        server[mode].append((await _server_cpu_s(client) - server_before) * 1e6 / batch_size)
    figures = {}
    for mode, store in stores.items():
        keys = [k async for k in client.scan_iter(match=f"{store.keys.prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        figures[f"{mode}_batch_ms_p50"] = _percentiles(times[mode][10:])[0]
        figures[f"{mode}_cpu_ms_mean"] = float(np.mean(cpu[mode][10:]))
        figures[f"{mode}_server_us_per_event"] = float(np.mean(server[mode][10:]))
    await client.aclose()
    return figures


def run(
    settings: WardenSettings,
    out: TextIO,
    sections: Sequence[str],
    batches: int = 300,
    recorder: Recorder | None = None,
) -> dict[str, dict[str, float]]:
    """Run the chosen sections and print their figures; ``recorder`` also writes each to its JSON file."""
    from warden.infra.bench import hostile as bench_hostile
    from warden.infra.bench import pipeline as bench_pipeline
    from warden.infra.bench import scorer as bench_scorer

    results: dict[str, dict[str, float]] = {}
    started = time.time()
    if "scorer" in sections:
        results["scorer"] = bench_scorer.run(settings, out)
        if recorder is not None:
            recorder.add("scorer", results["scorer"], started)
    if "store" in sections:
        started = time.time()
        with redis_server(settings) as redis_at:
            results["store"] = asyncio.run(_store(redis_at, batches, 64))
            batching = asyncio.run(_batching(redis_at, batches, 64))
        store = results["store"]
        store.update(batching)
        out.write(
            "== feature store (real Redis, one round trip per micro-batch) ==\n"
            f"batch of {store['batch_size']:.0f} events: p50 {store['batch_ms_p50']:.2f} ms, "
            f"p99 {store['batch_ms_p99']:.2f} ms ({store['us_per_event_p50']:.0f} us/event at p50; "
            f"{store['script_calls_per_batch']:.0f} script calls per batch (entities and event ids), "
            "reads and writes together; "
            "side by side, batches alternating: one script run per batch p50 "
            f"{store['per_batch_batch_ms_p50']:.2f} ms, {store['per_batch_cpu_ms_mean']:.2f} ms client CPU, "
            f"server {store['per_batch_server_us_per_event']:.0f} us CPU per event; "
            f"one per call (pipelined, as on a cluster) p50 {store['per_call_batch_ms_p50']:.2f} ms, "
            f"{store['per_call_cpu_ms_mean']:.2f} ms client CPU, "
            f"server {store['per_call_server_us_per_event']:.0f} us CPU per event)\n"
        )
        kinds = Counter({k[len("bytes_per_") :]: v for k, v in store.items() if k.startswith("bytes_per_")})
        for kind, size in sorted(kinds.items()):
            out.write(
                f"memory per tracked {kind:14s} {size:8.0f} bytes ({store[f'tracked_{kind}']:.0f} tracked)\n"
            )
        out.write(
            f"memo (once-only bookkeeping)    {store['memo_bytes_per_event']:8.0f} bytes per event "
            "until its memo TTL\n"
        )
        if recorder is not None:
            recorder.add("store", store, started, {"batches": batches, "batch_size": 64})
    if "pipeline" in sections:
        started = time.time()
        results["pipeline"] = bench_pipeline.run(settings, out)
        if recorder is not None:
            recorder.add("pipeline", results["pipeline"], started)
    if "hostile" in sections:
        started = time.time()
        hostile = bench_hostile.run(out)
        results["hostile"] = {
            f"{stage}_{key}": float(value)
            for stage, figures in hostile.items()
            for key, value in figures.items()
            if isinstance(value, int | float)
        }
        if recorder is not None:
            parameters = {"target_mb_per_s": bench_hostile.TARGET_MB_S, "budget_s": bench_hostile.BUDGET_S}
            recorder.add("hostile", results["hostile"], started, parameters, details=hostile)
    return results
