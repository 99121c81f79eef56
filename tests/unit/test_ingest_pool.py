"""Ingest in child processes gives byte-for-byte what ingest in the event loop gives."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from pydantic import SecretStr

from tests.unit.test_features import mail
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.serving.worker.ingest_pool import IngestPool, RawRecord, ingest_batch
from warden.streams.records import encode
from warden.streams.settings import WardenSettings

NOW = 1_030_000_100.0


def _records() -> list[RawRecord]:
    good = [
        encode(mail(event_id=f"e-{i}", sender=f"user{i % 3}@example.com", subject=f"hello {i}"))
        for i in range(40)
    ]
    raws: list[bytes | None] = [*good[:20], b"{not json", None, *good[20:]]
    return [RawRecord(raw, "mail.events", i % 4, 100 + i, 1_030_000_000_000) for i, raw in enumerate(raws)]


def _settings() -> WardenSettings:
    return WardenSettings(privacy={"hmac_key": SecretStr("p" * 32), "key_id": "kp"})


def test_a_pool_ingests_exactly_like_the_event_loop() -> None:
    settings = _settings()
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    records = _records()
    expected = ingest_batch(records, settings, pseudonymiser, NOW)
    assert [o.dead for o in expected].count(True) == 2
    pool = IngestPool(settings, 2, pseudonymiser)
    try:
        pool.warm()
        assert asyncio.run(pool.ingest(records, NOW)) == expected
        assert asyncio.run(pool.ingest(records[:1], NOW)) == expected[:1]
        assert asyncio.run(pool.ingest([], NOW)) == []
    finally:
        pool.close()


def test_a_killed_child_costs_no_record() -> None:
    settings = _settings()
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    records = _records()
    expected = ingest_batch(records, settings, pseudonymiser, NOW)
    pool = IngestPool(settings, 1, pseudonymiser)
    try:
        pool.warm()
        children = list(vars(pool)["_executor"]._processes)
        assert children
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(children[0], 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        assert asyncio.run(pool.ingest(records, NOW)) == expected
        assert pool.rebuilds == 1
        assert asyncio.run(pool.ingest(records, NOW)) == expected
    finally:
        pool.close()
