"""Key rotation on the real Redis: served aggregates continuous, linked writes in the same round trip."""

from __future__ import annotations

import pytest

from tests.unit.test_pseudonym_rotation import DAY, POSITION, WINDOWED, T, generation, traffic
from warden.features.ingest.extraction import to_features
from warden.features.ingest.pseudonym import KeyRing
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import async_client
from warden.streams.settings import WardenSettings


async def _rows(settings: WardenSettings, prefix: str, ring: KeyRing) -> list[list[float]]:
    assert settings.redis.url is not None
    store = RedisStore(async_client(settings.redis), Keys(prefix), 7 * 86400)
    events = traffic()
    out: list[list[float]] = []
    try:
        await store.start()
        for start in range(0, len(events), 32):  # micro-batches, as a worker sends them
            batch = [
                to_features(e, ring, POSITION, 0, now=e.timestamp, event_time=e.timestamp)
                for e in events[start : start + 32]
            ]
            out += await store.apply_and_read(batch)
    finally:
        await store.close()
    return out


async def test_redis_aggregates_stay_continuous_across_a_rotation(settings: WardenSettings) -> None:
    prefix = settings.redis.key_prefix
    reference = await _rows(settings, f"{prefix}a", KeyRing([generation(0, "1")], 2 * DAY))
    rotated = await _rows(settings, f"{prefix}b", KeyRing([generation(0, "1"), generation(T, "2")], 2 * DAY))
    events = traffic()
    for i, event in enumerate(events):
        if event.timestamp < T + 2 * DAY:
            assert rotated[i] == reference[i], f"event {i} differs inside the grace period"
        else:
            # Distinct counts are HyperLogLog estimates over different pseudonyms after the switch.
            assert [rotated[i][k] for k in WINDOWED] == pytest.approx(
                [reference[i][k] for k in WINDOWED], rel=0.02
            )
