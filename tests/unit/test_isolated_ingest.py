"""Where ingest runs: by turns in the event loop, in the pool, or in an isolated child under a deadline.

Real child processes (spawned, as in a worker); no broker. A record above
``IngestSettings.isolate_above_bytes`` goes to the isolated child; one that
overruns the deadline (or kills the child) is a dead letter saying so and the
child is replaced; the records around it are ingested as the event loop would.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from typing import Any

import pytest
from pydantic import SecretStr

from tests.unit.test_features import mail
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.infra.bench.hostile_inputs import BODY_FAMILIES, POISON_PILL, VALIDATION_FAMILIES
from warden.serving.worker.ingest_pool import (
    IngestPool,
    IsolatedIngest,
    Outcome,
    RawRecord,
    ingest_batch,
    ingest_in_turns,
)
from warden.serving.worker.metrics import WorkerStats
from warden.serving.worker.metrics import exposition as metrics_exposition
from warden.serving.worker.monitor import probe_loop_lag
from warden.streams.records import DeadLetter, decode, encode
from warden.streams.settings import WardenSettings

NOW = 1_030_000_100.0
THRESHOLD = 20_000


def _settings(**ingest: Any) -> WardenSettings:
    return WardenSettings(
        privacy={"hmac_key": SecretStr("i" * 32), "key_id": "ki"},
        ingest={"isolate_above_bytes": THRESHOLD, **ingest},
    )


def _record(raw: bytes | None, offset: int) -> RawRecord:
    return RawRecord(raw, "mail.events", 0, offset, 1_030_000_000_000)


def _records() -> list[RawRecord]:
    small = [encode(mail(event_id=f"s-{i}", subject=f"hello {i}")) for i in range(6)]
    large = encode(mail(event_id="large", html="<p>" + "word " * 8_000))  # ~40 KB, a good mail
    hostile = POISON_PILL.make(200_000)
    html = encode(BODY_FAMILIES[0].make(300_000).model_copy(update={"timestamp": NOW - 60}))  # 300 KB of "<"
    raws = [small[0], large, small[1], hostile, small[2], None, html, small[3], b"{nope", *small[4:]]
    return [_record(raw, 100 + i) for i, raw in enumerate(raws)]


def _pseudonymiser(settings: WardenSettings) -> Pseudonymiser:
    return Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)


async def _in_turns(
    records: list[RawRecord],
    settings: WardenSettings,
    isolated: IsolatedIngest,
    pool: IngestPool | None = None,
) -> list[Outcome]:
    pseudonymiser = _pseudonymiser(settings)
    return await ingest_in_turns(
        records,
        lambda record: ingest_batch([record], settings, pseudonymiser, NOW)[0],
        lambda outcome: outcome,
        isolated,
        pool,
        NOW,
        "mail",
    )


def test_records_above_the_threshold_are_ingested_in_the_child_exactly_as_in_the_loop() -> None:
    settings = _settings()
    records = _records()
    expected = ingest_batch(records, settings, _pseudonymiser(settings), NOW)
    isolated = IsolatedIngest(settings)
    try:
        assert asyncio.run(_in_turns(records, settings, isolated)) == expected
    finally:
        isolated.close()
    large = [r for r in records if r.value is not None and len(r.value) > THRESHOLD]
    assert len(large) == 3
    assert isolated.isolated == 3  # the good large mail, the poison pill and the 300 KB of "<"
    assert isolated.starts == 1
    assert [o.dead for o in expected].count(True) == 3  # pill, tombstone, not JSON; the "<" mail scores
    assert not any(isolated.wants(r) for r in records if r not in large)


def test_the_size_limit_is_refused_in_the_loop_not_shipped_to_the_child() -> None:
    settings = _settings()
    isolated = IsolatedIngest(settings)
    too_large = _record(b"x" * (settings.ingest.max_payload_bytes + 1), 1)
    assert not isolated.wants(too_large)
    assert isolated.wants(_record(b"x" * (THRESHOLD + 1), 2))
    assert not isolated.wants(_record(b"x" * THRESHOLD, 3))
    assert not isolated.wants(_record(None, 4))


def test_a_record_past_the_deadline_is_a_dead_letter_and_the_child_is_replaced() -> None:
    settings = _settings(isolation_deadline_s=0.001)
    # Large records that take tens of milliseconds to ingest, far past the deadline of 1 ms.
    slow = [
        encode(family.make(1_000_000).model_copy(update={"timestamp": NOW - 60}))
        for family in (BODY_FAMILIES[0], VALIDATION_FAMILIES[0])
    ]
    small = [encode(mail(event_id=f"s-{i}", subject=f"hello {i}")) for i in range(4)]
    records = [
        _record(raw, i) for i, raw in enumerate([small[0], slow[0], small[1], small[2], slow[1], small[3]])
    ]
    expected = ingest_batch(records, settings, _pseudonymiser(settings), NOW)
    isolated = IsolatedIngest(settings)

    async def both() -> tuple[list[Outcome], list[Outcome]]:
        first = await _in_turns(records, settings, isolated)
        isolated.settings = _settings(isolation_deadline_s=60.0)  # a deadline it meets: a fresh child
        return first, await _in_turns(records, settings, isolated)

    try:
        tight, roomy = asyncio.run(both())
    finally:
        isolated.close()
    for record, outcome, plain in zip(records, tight, expected, strict=True):
        if isolated.wants(record):
            assert outcome.dead
            assert "longer than the deadline of 0.001 s" in outcome.reason
            letter = decode(DeadLetter, outcome.value)
            assert letter.source.offset == record.offset
            assert letter.payload_sha256 == hashlib.sha256(record.value or b"").hexdigest()
        else:
            assert outcome == plain  # the records around it: as the event loop ingests them
    assert isolated.overruns == 2
    assert roomy == expected
    assert isolated.starts == 3  # one per overrun, then one that lived


def test_a_child_that_dies_on_a_record_makes_it_a_dead_letter_and_is_replaced() -> None:
    settings = _settings(isolation_deadline_s=60.0)
    isolated = IsolatedIngest(settings)
    record = _record(encode(mail(event_id="big", html="<p>" + "word " * 8_000)), 7)

    async def kill_while_ingesting() -> tuple[Outcome | None, Outcome | None]:
        await isolated._ready_child()  # started and ready
        child = isolated._child
        assert child is not None
        os.kill(child.process.pid, signal.SIGSTOP)  # it cannot answer: the record waits in the pipe
        task = asyncio.ensure_future(isolated.ingest(record, NOW, "mail"))
        while isolated.isolated == 0:
            await asyncio.sleep(0.01)
        os.kill(child.process.pid, signal.SIGKILL)
        died = await task
        return died, await isolated.ingest(record, NOW, "mail")

    try:
        died, again = asyncio.run(kill_while_ingesting())
    finally:
        isolated.close()
    assert died is not None
    assert died.dead
    assert died.reason.startswith("internal error while ingesting: the isolated ingest process died")
    assert again is not None
    assert not again.dead
    assert again == ingest_batch([record], settings, _pseudonymiser(settings), NOW)[0]
    assert isolated.starts == 2


def test_the_loop_runs_other_tasks_between_records() -> None:
    settings = _settings(yield_after_s=0.0)
    records = [_record(encode(mail(event_id=f"y-{i}")), i) for i in range(20)]
    isolated = IsolatedIngest(settings)

    async def race() -> int:
        ticks = 0
        done = False

        async def other_agent() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.ensure_future(other_agent())
        await asyncio.sleep(0)
        await _in_turns(records, settings, isolated)
        done = True
        await other
        return ticks

    assert asyncio.run(race()) >= len(records) - 1
    assert isolated.starts == 0  # nothing large: no child was started


def test_with_a_pool_the_small_records_go_to_the_pool_and_the_large_to_the_child() -> None:
    settings = _settings()
    records = _records()
    expected = ingest_batch(records, settings, _pseudonymiser(settings), NOW)
    pool = IngestPool(settings, 1, _pseudonymiser(settings))
    isolated = IsolatedIngest(settings)
    try:
        assert asyncio.run(_in_turns(records, settings, isolated, pool)) == expected
    finally:
        isolated.close()
        pool.close()
    assert isolated.isolated == 3


@pytest.mark.parametrize("cpu_bound", [True, False])
def test_the_loop_lag_probe_tells_a_stall_from_a_busy_machine(cpu_bound: bool) -> None:
    stats = WorkerStats()

    async def probe_around_a_block() -> None:
        stop = False
        probe = asyncio.ensure_future(probe_loop_lag(stats, lambda: stop, interval_s=0.01))
        await asyncio.sleep(0.05)
        if cpu_bound:  # a record held the loop: 0.3 s of this thread's CPU
            started = time.thread_time()
            while time.thread_time() - started < 0.3:
                pass
        else:  # the loop waited without working (as when other processes have the CPU)
            time.sleep(0.3)
        await asyncio.sleep(0.05)
        stop = True
        await probe

    asyncio.run(probe_around_a_block())
    lag, stall = stats.loop_lag.recent_max()
    assert lag >= 0.2
    if cpu_bound:
        assert stall >= 0.2
    else:
        assert stall < 0.1
    exposition = metrics_exposition(stats).decode("utf-8")
    for name in ("warden_event_loop_lag_seconds_bucket", "warden_event_loop_stall_seconds_bucket"):
        assert name in exposition
    assert "warden_event_loop_stall_max_seconds" in exposition


class _NoEvents:
    """A stream that ends at once: an agent stopping (a rebalance, or the worker's shutdown)."""

    async def _none(self) -> Any:
        return
        yield

    def take_events(self, size: int, within: float) -> Any:
        return self._none()


def test_the_shared_child_outlives_an_agent_and_is_stopped_with_the_app(tmp_path: Any) -> None:
    from warden.features.testing import InMemoryStore
    from warden.serving.worker.app import create_app
    from warden.serving.worker.services import Services

    settings = _settings(isolation_deadline_s=60.0).model_copy(
        update={
            "kafka": WardenSettings().kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9"}),
            "dev": WardenSettings().dev.model_copy(update={"state_dir": tmp_path}),
        }
    )
    services = Services(
        store=InMemoryStore(),  # type: ignore[arg-type]  # the agents are not run against it
        served=None,  # type: ignore[arg-type]
        ledger=None,  # type: ignore[arg-type]
        slot=None,  # type: ignore[arg-type]
        pseudonymiser=_pseudonymiser(settings),
        stats=WorkerStats(),
    )
    app = create_app(settings, services)
    isolated = app.isolated_ingest  # type: ignore[attr-defined]
    assert isinstance(isolated, IsolatedIngest)
    record = _record(encode(mail(event_id="big", html="<p>" + "word " * 8_000)), 7)
    agents = [agent for name, agent in app.agents.items() if ".ingest" in name]
    assert len(agents) == 3  # mail, calendar and contacts share it

    async def stop_every_agent_then_the_app() -> tuple[bool, bool]:
        outcome = await isolated.ingest(record, NOW, "mail")
        assert outcome is not None
        assert not outcome.dead
        child = isolated._child
        assert child is not None
        for agent in agents:
            await agent.fun(_NoEvents())  # each agent's loop ends, its finally runs
        alive_after_agents = child.process.is_alive()
        await app.on_shutdown()
        return alive_after_agents, child.process.is_alive()

    alive_after_agents, alive_after_app = asyncio.run(stop_every_agent_then_the_app())
    assert alive_after_agents
    assert not alive_after_app
    assert isolated.starts == 1
