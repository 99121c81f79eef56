"""The store contract, continued: once per *content*, and previews, in memory, on Redis and on a cluster.

An event's memo is keyed by its id and the digest of its bytes: the same
bytes again are served what they were served and change nothing; the same
id with other content is a new event (applied, and served as ``reused`` so
that it is scored under a derived id). A preview serves what applying would
serve and leaves every key as it was.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.integration.test_store import (
    _connect,
    _redis_store,
    _scan,
    assert_matches_reference,
    assert_rows_match,
    stream,
)
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisClient, RedisStore
from warden.features.store.served import ServedRows
from warden.features.testing import InMemoryStore
from warden.streams.provenance import content_digest, derived_event_id
from warden.streams.records import MailFeatures, ServedRow
from warden.streams.settings import WardenSettings

#: Asserts that a store holds what it held when the function was made (aggregates and bookkeeping).
Unchanged = Callable[[], Awaitable[None]]
#: Makes an :data:`Unchanged` for a store's state now.
Snapshot = Callable[[], Awaitable[Unchanged]]


def with_content(event: MailFeatures, content: str) -> MailFeatures:
    """``event`` as ingest gives it, with the digest of its (here: named) content."""
    return event.model_copy(update={"digest": content_digest(f"{event.event_id}/{content}".encode())})


def other_content(event: MailFeatures, rng: random.Random) -> MailFeatures:
    """The same id, sent again later with other recipients and other bytes."""
    recipients = sorted({f"k1.r{rng.randrange(60)}" for _ in range(3)})
    changed = event.model_copy(update={"recipients": recipients, "timestamp": event.timestamp + 90})
    return with_content(changed, "other")


def renamed(event: MailFeatures) -> MailFeatures:
    """What a reused event is to the aggregates: a new event (here under its derived id)."""
    return event.model_copy(update={"event_id": derived_event_id(event.event_id, event.digest)})


async def _value(client: RedisClient, key: bytes) -> object:
    """A key's value by its type (a HyperLogLog is a string: its registers, byte for byte).

    Not DUMP: a lookup may rehash a hash table and change the order DUMP writes its fields in.
    """
    kind = await client.type(key)
    if kind == b"hash":
        return await client.hgetall(key)
    if kind == b"set":
        return await client.smembers(key)
    return await client.get(key)


async def _dump(client: RedisClient, prefix: str) -> dict[bytes, tuple[object, int]]:
    """Every key under ``prefix``: its value (read by type, as :func:`_value`) and TTL in milliseconds.

    Two pipelined round trips for all the keys (types, then values and TTLs), not three per key.
    """
    keys = list(await _scan(client, prefix))
    typing = client.pipeline(transaction=False)
    for key in keys:
        typing.type(key)
    kinds = await typing.execute()
    reading = client.pipeline(transaction=False)
    for key, kind in zip(keys, kinds, strict=True):
        if kind == b"hash":
            reading.hgetall(key)
        elif kind == b"set":
            reading.smembers(key)
        else:
            reading.get(key)
        reading.pttl(key)
    read = await reading.execute()
    return {key: (read[2 * i], read[2 * i + 1]) for i, key in enumerate(keys)}


def assert_same_keys(
    before: dict[bytes, tuple[object, int]], after: dict[bytes, tuple[object, int]], elapsed_ms: int
) -> None:
    """The same keys with the same values, and TTLs that only ran down, by at most the time that passed."""
    assert set(after) == set(before)
    for key, (value, ttl) in before.items():
        assert after[key][0] == value, key
        assert ttl - elapsed_ms - 1_000 <= after[key][1] <= ttl, key


@pytest.fixture(params=["redis", "cluster"])
async def client(request: pytest.FixtureRequest, settings: WardenSettings) -> AsyncIterator[RedisClient]:
    """A client on the session's standalone Redis or on its cluster."""
    redis_client = _connect(request, settings)
    yield redis_client
    await redis_client.aclose()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store_with_state(
    request: pytest.FixtureRequest, settings: WardenSettings
) -> AsyncIterator[tuple[InMemoryStore | object, Snapshot]]:
    """A store, and what it holds right now (every key or dictionary, bookkeeping included)."""
    if request.param == "memory":
        memory = InMemoryStore()

        def dictionaries() -> object:
            i = memory.interpreter
            return copy.deepcopy((i.windows, i.reputations, i.sets, i.strings, i.memos))

        async def held() -> Unchanged:
            before = dictionaries()

            async def unchanged() -> None:
                assert dictionaries() == before

            return unchanged

        yield memory, held
        return
    client = _connect(request, settings)
    redis_store = _redis_store(client, settings)
    await redis_store.start()

    async def dumped() -> Unchanged:
        started = time.monotonic()
        before = await _dump(client, settings.redis.key_prefix)

        async def unchanged() -> None:
            after = await _dump(client, settings.redis.key_prefix)
            assert_same_keys(before, after, int((time.monotonic() - started) * 1000))

        return unchanged

    yield redis_store, dumped
    await redis_store.close()


async def test_an_id_reused_with_other_content_is_a_new_event_and_the_same_bytes_are_not(
    store_with_state: tuple[InMemoryStore, Snapshot],
) -> None:
    store, _ = store_with_state
    rng = random.Random(21)
    events = [with_content(e, "first") for e in stream(seed=21, n=80)]
    reused = [other_content(e, rng) for e in events[40:50]]
    later = [with_content(e, "later") for e in stream(seed=22, n=30)]
    later = [
        e.model_copy(update={"event_id": f"l{e.event_id}", "timestamp": e.timestamp + 4000}) for e in later
    ]
    # The reference: the reused ids' second contents are simply other events.
    reference = InMemoryStore()
    want_first = reference.apply_and_read_now(events)
    want_reused = reference.apply_and_read_now([renamed(e) for e in reused])
    want_later = reference.apply_and_read_now(later)

    first = await store.serve(events)
    assert not any(s.reused for s in first)
    assert_rows_match([s.values for s in first], want_first)
    again = await store.serve(reused)
    assert all(s.reused for s in again)  # flagged, and applied: the aggregates count both contents
    assert_rows_match([s.values for s in again], want_reused)
    # Redelivery of the same bytes, first contents and reused ones, in one batch: served exactly
    # what they were served (and flagged alike), nothing applied twice ...
    redelivered = await store.serve(events[40:50] + reused)
    assert redelivered == first[40:50] + again
    # ... as what comes after shows.
    assert_rows_match([s.values for s in await store.serve(later)], want_later)


async def test_the_first_content_keeps_the_id_whatever_comes_in_the_same_batch(
    store_with_state: tuple[InMemoryStore, Snapshot],
) -> None:
    store, _ = store_with_state
    rng = random.Random(5)
    (event,) = [with_content(e, "one") for e in stream(seed=5, n=1)]
    second = other_content(event, rng)
    third = with_content(event, "three")
    served = await store.serve([event, second, third, event, second])
    assert [s.reused for s in served] == [False, True, True, False, True]
    assert served[3] == served[0]
    assert served[4] == served[1]


async def test_a_preview_serves_what_applying_would_and_changes_nothing(
    store_with_state: tuple[InMemoryStore, Snapshot],
) -> None:
    store, held = store_with_state
    rng = random.Random(23)
    events = [with_content(e, "x") for e in stream(seed=23, n=140)]
    await store.serve(events[:100])
    # New events (some late, out of order), an applied one, and an id reused with other content.
    late = events[100].model_copy(update={"event_id": "late", "timestamp": events[10].timestamp})
    candidates = [*events[100:], with_content(late, "late"), events[60], other_content(events[70], rng)]
    for event in candidates:
        unchanged = await held()
        (preview,) = await store.serve([event], preview=True)
        await unchanged()
        (applied,) = await store.serve([event])
        assert applied == preview, event.event_id


async def test_previews_of_a_batch_each_see_the_state_as_it_is(
    store_with_state: tuple[InMemoryStore, Snapshot],
) -> None:
    store, held = store_with_state
    events = [with_content(e, "y") for e in stream(seed=24, n=60)]
    await store.serve(events[:30])
    unchanged = await held()
    previews = await store.serve(events[30:], preview=True)
    await unchanged()
    for event, preview in zip(events[30:], previews, strict=True):
        assert await store.serve([event], preview=True) == [preview]


async def test_reuses_and_redeliveries_leave_the_reference_state(
    client: RedisClient, settings: WardenSettings
) -> None:
    """Every key as if each distinct content had been applied once; each event id has a key of its own."""
    rng = random.Random(31)
    prefix = settings.redis.key_prefix
    events = [with_content(e, "a") for e in stream(seed=31, n=200)]
    reused = [other_content(e, rng) for e in rng.sample(events, 40)]
    reference = InMemoryStore(Keys(prefix), settings.redis.ttl_seconds)
    reference.apply_and_read_now(events + [renamed(e) for e in reused])
    messy = events + reused + rng.sample(events + reused, 80)
    rng.shuffle(messy)
    redis_store = _redis_store(client, settings)
    for start in range(0, len(messy), 48):
        await redis_store.serve(messy[start : start + 48])
    await assert_matches_reference(client, prefix, reference)
    located = await _scan(client, prefix)
    ids = {key for key in located if key.startswith(f"{prefix}:{{e:".encode())}
    assert ids == {Keys(prefix).first_digest(e.event_id).encode() for e in events}
    for key in ids:
        assert 0 < await client.ttl(key) <= settings.redis.memo_ttl_seconds


async def _gone(client: RedisClient, prefix: str, pattern: str, timeout_s: float = 15.0) -> None:
    """Wait until no key under ``prefix`` matches ``pattern`` (they expired); fails after the timeout."""
    deadline = time.monotonic() + timeout_s
    while [k for k in await _scan(client, prefix) if fnmatch.fnmatch(k.decode(), pattern)]:
        assert time.monotonic() < deadline, f"keys {pattern} did not expire"
        await asyncio.sleep(0.1)


async def test_an_id_reused_after_its_memo_expired_is_still_a_new_event(
    client: RedisClient, settings: WardenSettings
) -> None:
    """The id's first digest lives as long as its served row, not as briefly as the memo (1 s here)."""
    rng = random.Random(8)
    prefix = settings.redis.key_prefix
    first, unguarded = (with_content(e, "first") for e in stream(seed=8, n=2))
    # As a worker builds it: the id key kept as long as served rows, the memo 1 s.
    store = RedisStore(client, Keys(prefix), 3600, 1, id_ttl_seconds=3600)
    # The old layout, for contrast: the id key expired with the memo.
    brief = RedisStore(client, Keys(f"{prefix}b"), 3600, 1)
    for s in (store, brief):
        await s.start()
    assert not (await store.serve([first]))[0].reused
    assert not (await brief.serve([unguarded]))[0].reused
    await _gone(client, prefix, "*:memo:*")
    await _gone(client, f"{prefix}b", "*:digest")
    assert [k for k in await _scan(client, prefix) if k.endswith(b":digest")], "the id key outlives the memo"
    # The same id with a spammer's content, 1+ s later: still a new event, scored under a derived id.
    assert (await store.serve([other_content(first, rng)]))[0].reused
    # Where the id key expired with the memo, the reuse went unseen (what the change prevents).
    assert not (await brief.serve([other_content(unguarded, rng)]))[0].reused


async def test_a_served_row_is_never_replaced_by_a_later_one_for_its_id(
    client: RedisClient, settings: WardenSettings
) -> None:
    rows = ServedRows(client, settings.redis.key_prefix, 3600)
    first = ServedRow(
        event_id="e-1",
        kind="mail",
        timestamp=1_030_000_000.0,
        model_version="v1",
        sender="k1.a",
        sender_domain="k1.d",
        url_domains=[],
        content=[0.0],
        tokens=[1],
        aggregates=[1.0, 2.0],
    )
    forged = first.model_copy(
        update={"sender": "k1.spammer", "aggregates": [9.0, 9.0], "model_version": "v2"}
    )
    await rows.remember([first])
    await rows.remember([forged])
    assert await rows.recall(["e-1"]) == [first]
    assert 0 < await client.ttl(rows.key("e-1")) <= 3600
