"""Calendar and contacts on the real broker and Redis: one worker scores all three kinds."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_store import assert_matches_reference
from warden.features.ingest.extraction import to_activity_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.aggregations import CALENDAR_AGGREGATES
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import async_client
from warden.features.testing import InMemoryStore
from warden.infra.dev.rediscluster import ClusterState
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.models.registry import Registry
from warden.models.simulated import train_simulated
from warden.streams import broker
from warden.streams.records import DeadLetter, SourcePosition, Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay, send_raw
from warden.streams.sources.simulated_world import SimulationParams
from warden.streams.sources.simulator import produce, simulate
from warden.streams.topics import Topics

#: Small and quick: enough campaigns of every type for a model, in a couple of seconds.
TRAIN = SimulationParams(seed=11, accounts=120, days=3.0, campaigns_per_day=6.0)
MALFORMED = [
    ("calendar", b'{"event_id": "c-bad-1", "timestamp": 1767225600.0, "action": "created"}'),
    ("calendar", b'{"event_id": "c-bad-2", "timestamp": 1767225600.0, "action": "created", '
     b'"organizer": "a@b.c", "invitees": ["x@y.z"], "start": 5.0, "end": 1.0}'),
    ("contacts", b'{"event_id": "k-bad-1", "timestamp": 1767225600.0, "action": "shared", '
     b'"owner": "a@b.c", "recipients": [], "card": {}}'),
    ("contacts", b"not json at all"),
]  # fmt: skip


@pytest.mark.parametrize("server", ["redis", "cluster"])
async def test_simulated_activity_gives_the_same_aggregates_in_redis_as_in_memory(
    settings: WardenSettings, server: str, request: pytest.FixtureRequest
) -> None:
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    events = simulate(SimulationParams(seed=5, accounts=40, days=1.0, campaigns_per_day=8.0))
    features = [
        to_activity_features(
            item.event,
            pseudonymiser,
            SourcePosition(topic="t", partition=0, offset=i),
            0,
            event_time=item.event.timestamp,
        )
        for i, item in enumerate(events)
    ]
    assert {f.kind for f in features} == {"calendar", "contacts"}
    reference = InMemoryStore(Keys(settings.redis.key_prefix), settings.redis.ttl_seconds)
    if server == "cluster":
        cluster: ClusterState = request.getfixturevalue("redis_cluster")
        client = async_client(cluster.redis_settings())
    else:
        client = async_client(settings.redis)
    store = RedisStore(
        client,
        Keys(settings.redis.key_prefix),
        settings.redis.ttl_seconds,
        settings.redis.memo_ttl_seconds,
    )
    await store.start()
    try:
        got = []
        for start in range(0, len(features), 64):
            got += await store.apply_and_read(features[start : start + 64])
        want = reference.apply_and_read_now(features)
        for row_got, row_want in zip(got, want, strict=True):
            assert row_got == pytest.approx(row_want, rel=0.02)
        # Both ends of the known-contact signal occur: invites to contacts only, and to strangers only.
        unknown = [a.name for a in CALENDAR_AGGREGATES].index("organizer_unknown_contact_share")
        shares = {v[unknown] for f, v in zip(features, want, strict=True) if f.kind == "calendar"}
        assert {0.0, 1.0} <= shares
        await assert_matches_reference(client, settings.redis.key_prefix, reference)
    finally:
        await store.close()


def test_mixed_mail_calendar_and_contacts_get_one_verdict_each_of_the_right_kind_and_model(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    # The session's mail registry, plus a calendar and a contacts model trained from the simulator.
    root = tmp_path / "registry"
    shutil.copytree(settings.models.registry_dir, root)
    settings = settings.model_copy(
        update={"models": settings.models.model_copy(update={"registry_dir": root, "num_trees": 80})}
    )
    registry = Registry.from_settings(settings)
    versions = {"mail": registry.current()}
    for kind in ("calendar", "contacts"):
        versions[kind] = train_simulated(settings, kind, TRAIN).version  # type: ignore[arg-type]
        assert registry.for_kind(kind).current() == versions[kind]  # type: ignore[arg-type]

    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:40]
    simulated = simulate(SimulationParams(seed=12, accounts=60, days=1.0))
    activity = sorted(
        [s for s in simulated if s.event.kind == "calendar"][:80]
        + [s for s in simulated if s.event.kind == "contacts"][:80],
        key=lambda s: s.event.timestamp,
    )
    kinds = {m.event.event_id: "mail" for m in mails} | {s.event.event_id: s.event.kind for s in activity}
    assert set(kinds.values()) == {"mail", "calendar", "contacts"}
    producer = broker.producer(settings.kafka)
    with worker_process(settings, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(settings, proc, timeout_s=90)
        # Interleaved: mails, activity, hostile activity records, then the rest.
        replay([m.event for m in mails[:20]], producer, topics.mail_events)
        produce(activity, producer, topics)
        bad = {"calendar": topics.calendar_events, "contacts": topics.contacts_events}
        send_raw(producer, [(bad[kind], b"bad", raw) for kind, raw in MALFORMED])
        replay([m.event for m in mails[20:]], producer, topics.mail_events)
        producer.close()

        verdicts: list[Verdict] = []
        letters: list[DeadLetter] = []
        reader = broker.TopicReader(settings.kafka, (topics.verdicts, topics.dead_letters))
        for message in reader.until(
            lambda: len(verdicts) >= len(kinds) and len(letters) >= len(MALFORMED), timeout_s=120
        ):
            assert message.value is not None
            if message.topic == topics.verdicts.name:
                verdicts.append(decode(Verdict, message.value))
            else:
                letters.append(decode(DeadLetter, message.value))
        time.sleep(1.0)
        for message in reader.poll(1.0):
            assert message.topic != topics.verdicts.name, "more verdicts than events"
        reader.close()

    counts = Counter(v.event_id for v in verdicts)
    assert set(counts) == set(kinds)
    assert all(n == 1 for n in counts.values())
    for verdict in verdicts:
        assert verdict.kind == kinds[verdict.event_id]
        assert verdict.model_version == versions[verdict.kind]
    assert Counter(v.kind for v in verdicts) == Counter(kinds.values())
    assert len(letters) == len(MALFORMED)
    assert {letter.source.topic for letter in letters} == {bad["calendar"].name, bad["contacts"].name}
    reasons = " | ".join(sorted(letter.reason for letter in letters))
    for expected in ("organizer", "end: before start", "shared card needs", "not JSON"):
        assert expected in reasons

    # Privacy: the derived topics hold no raw address, title or card note.
    reader = broker.TopicReader(
        settings.kafka, (topics.activity_features, topics.verdicts, topics.feature_log)
    )
    derived = b" ".join(m.value or b"" for m in reader.until(lambda: False, timeout_s=3)).lower()
    reader.close()
    assert derived
    for item in activity:
        event = item.event
        raw = [event.organizer, *event.invitees, event.title] if event.kind == "calendar" else [
            event.owner, *event.recipients, *event.card.emails, event.card.note
        ]  # fmt: skip
        for value in raw:
            if len(value) >= 8:
                assert value.lower().encode() not in derived
