"""Bounded dead letters read back on the real broker: the whole record by position, and a replay.

The first test drives :mod:`streams.dead_letters` (through ``warden
dead-letters``) over records and letters written by hand; the second runs a
worker with no calendar model, so that its calendar events become dead
letters, promotes one, and replays them into verdicts.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from warden.infra.cli import dead_letters as dead_letters_cli
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.models.registry import Registry
from warden.models.simulated import train_simulated
from warden.streams import broker
from warden.streams.records import (
    DEAD_LETTER_WHOLE_BYTES,
    DeadLetter,
    SourcePosition,
    Verdict,
    decode,
    encode,
)
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.simulated_world import SimulationParams
from warden.streams.sources.simulator import simulate
from warden.streams.topics import Topics

NO_MAIL_MODEL = "no mail model is promoted in the registry"
#: Small and quick: enough campaigns of every type for a model, in a couple of seconds.
TRAIN = SimulationParams(seed=11, accounts=120, days=3.0, campaigns_per_day=6.0)


def replay_cli(settings: WardenSettings, action: str, reason: str) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(action=action, reason=reason)
    status = dead_letters_cli.run(args, settings, lambda s: s, out)
    return status, out.getvalue()


def records_of(settings: WardenSettings, topics: Topics) -> list[broker.Message]:
    reader = broker.TopicReader(settings.kafka, (topics.mail_events,))
    try:
        return list(reader.until(lambda: False, timeout_s=3))
    finally:
        reader.close()


def test_letters_find_their_whole_records_by_position_and_replay_them(settings: WardenSettings) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    small = corpus.load(settings.corpus, corpus.SECOND_HALF)[0].event
    records = {
        b"small": encode(small),
        b"large": b'{"event_id": "big", "text": "' + b"x" * (DEAD_LETTER_WHOLE_BYTES + 50_000) + b'"}',
        b"other": b'{"event_id": "other"}',
    }
    producer = broker.producer(settings.kafka)
    name = topics.mail_events.name
    sent = {key: producer.send(name, key=key, value=value) for key, value in records.items()}
    producer.flush()
    at = {
        key: SourcePosition(topic=meta.topic, partition=meta.partition, offset=meta.offset)
        for key, meta in ((key, future.get(timeout=30)) for key, future in sent.items())
    }
    gone = at[b"other"].model_copy(update={"offset": 1_000_000})
    letters = [
        DeadLetter.of(at[b"small"], NO_MAIL_MODEL, records[b"small"], 1),
        DeadLetter.of(at[b"large"], NO_MAIL_MODEL, records[b"large"], 1),
        # An excerpt whose position holds other bytes, and one whose position is not on the topic.
        DeadLetter.of(at[b"other"], NO_MAIL_MODEL, records[b"large"] + b" ", 1),
        DeadLetter.of(gone, NO_MAIL_MODEL, records[b"large"][::-1], 1),
        DeadLetter.of(at[b"other"], "payload is not JSON", records[b"other"], 1),  # another reason
        # A forged letter: its own copy of a "record" for a topic that is not an input.
        DeadLetter.of(
            SourcePosition(topic=topics.model_updates.name, partition=0, offset=0),
            NO_MAIL_MODEL,
            b'{"action": "promote", "version": "forged"}',
            1,
        ),
    ]
    assert not letters[1].payload_complete
    assert len(encode(letters[1])) < 8_000  # the excerpt, not the 300 KB record
    for letter in letters:
        producer.send(topics.dead_letters.name, key=letter.source.topic.encode(), value=encode(letter))
    producer.flush()
    producer.close()

    status, listed = replay_cli(settings, "list", "no mail model")
    assert status == 1  # two records cannot be had
    assert f"       5  {NO_MAIL_MODEL}" in listed
    assert "5 dead letters; 2 records can be replayed (2 read at their position, 0 from the letter)" in listed
    assert "2 cannot be had; 1 refused" in listed
    assert f"{topics.model_updates.name}/0@0: {topics.model_updates.name!r} is not an input topic" in listed
    assert "not the one dead-lettered" in listed
    assert "no longer on its topic" in listed

    before = len(records_of(settings, topics))
    status, replayed = replay_cli(settings, "replay", "no mail model")
    assert status == 1
    assert "2 records replayed" in replayed
    assert "1 refused" in replayed
    updates = broker.TopicReader(settings.kafka, (topics.model_updates,))
    try:
        assert not [m for m in updates.until(lambda: False, timeout_s=3) if b"forged" in (m.value or b"")]
    finally:
        updates.close()
    again = records_of(settings, topics)[before:]
    # The small and the large record are back on their topic, whole, with their keys.
    assert sorted((m.key, hashlib.sha256(m.value or b"").digest()) for m in again) == sorted(
        (key, hashlib.sha256(records[key]).digest()) for key in (b"small", b"large")
    )


def test_events_dead_lettered_without_a_model_are_scored_after_a_replay(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    shutil.copytree(settings.models.registry_dir, root)  # mail only: no calendar model yet
    settings = settings.model_copy(
        update={
            "models": settings.models.model_copy(update={"registry_dir": root, "num_trees": 80}),
            "serving": settings.serving.model_copy(update={"reload_interval_s": 0.5}),
        }
    )
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    simulated = simulate(SimulationParams(seed=12, accounts=60, days=1.0))
    invites = [s.event for s in simulated if s.event.kind == "calendar"][:30]
    ids = {invite.event_id for invite in invites}
    producer = broker.producer(settings.kafka)
    reader = broker.TopicReader(settings.kafka, (topics.verdicts, topics.dead_letters))
    verdicts: list[Verdict] = []
    letters: list[DeadLetter] = []

    def read(done: Callable[[], bool], timeout_s: float) -> None:
        for message in reader.until(done, timeout_s):
            if message.topic == topics.verdicts.name:
                verdicts.append(decode(Verdict, message.value or b""))
            else:
                letters.append(decode(DeadLetter, message.value or b""))

    with worker_process(settings, base_env, tmp_path / "worker.log") as worker:
        wait_healthy(settings, worker, timeout_s=90)
        for invite in invites:
            producer.send(topics.calendar_events.name, key=invite.event_id.encode(), value=encode(invite))
        producer.flush()
        read(lambda: len(letters) >= len(invites), timeout_s=60)
        assert len(letters) == len(invites)
        assert {letter.reason for letter in letters} == {"no calendar model is promoted in the registry"}
        assert not verdicts

        version = train_simulated(settings, "calendar", TRAIN).version
        assert Registry.from_settings(settings).for_kind("calendar").current() == version
        time.sleep(2.0)  # the worker follows the registry every 0.5 s
        status, replayed = replay_cli(settings, "replay", "no calendar model")
        assert status == 0, replayed
        assert f"{len(invites)} records replayed ({len(invites)} read at their position" in replayed
        read(lambda: len(verdicts) >= len(invites), timeout_s=60)
    producer.close()
    reader.close()

    assert Counter(v.event_id for v in verdicts) == Counter(ids)  # one verdict each
    assert {v.model_version for v in verdicts} == {version}
