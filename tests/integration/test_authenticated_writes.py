"""Forged labels and features records change nothing, and a worker's secrets never sit in its environment.

One worker, started as the demo starts it (secrets through a pipe), with its own pseudonymisation
key and a key per label source. An operator's label signed with the ops_review key is learned
from; forged labels (another key, the user-report key claiming ops_review, a signature replayed on
an edited label, no signature, an unknown source) are dead letters: no training example, no
reputation.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from pathlib import Path

from pydantic import SecretStr

from tests.integration.outcomes import Outcomes
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.aggregations import AGGREGATES
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import async_client
from warden.features.store.served import ServedRows
from warden.features.testing import features_for
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.serving.worker.agents.score import UNSEALED
from warden.serving.worker.ingest_pool import RawRecord, ingest_batch
from warden.streams import broker
from warden.streams.feedback_auth import ExampleKeys, SourceKeys
from warden.streams.records import DeadLetter, Feedback, ServedRow, TrainingExample, decode, encode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources import feedback as feedback_source
from warden.streams.sources.replay import replay
from warden.streams.topics import Topics

HMAC_KEY = secrets.token_hex(32)
USER_KEY, OPS_KEY = secrets.token_hex(32), secrets.token_hex(32)
EXAMPLE_KEY = secrets.token_hex(32)


def _settings(settings: WardenSettings) -> WardenSettings:
    return settings.model_copy(
        update={
            "privacy": settings.privacy.model_copy(update={"hmac_key": SecretStr(HMAC_KEY)}),
            "feedback": settings.feedback.model_copy(
                update={
                    "key_user_report": SecretStr(USER_KEY),
                    "key_ops_review": SecretStr(OPS_KEY),
                    "training_example_key": SecretStr(EXAMPLE_KEY),
                }
            ),
        }
    )


def _label(event_id: str, feedback_id: str, source: str = "ops_review") -> Feedback:
    return Feedback(
        feedback_id=feedback_id,
        event_id=event_id,
        label="abuse",
        source=source,  # type: ignore[arg-type]
        reporter="operator-7",
        at=time.time(),
    )


async def _recall_and_probe(
    live: WardenSettings, event_ids: list[str]
) -> tuple[list[ServedRow], list[float]]:
    """The served rows of ``event_ids`` and the abuse reports now counted against each one's sender."""
    assert live.redis.url is not None
    client = async_client(live.redis)
    prefix = live.redis.key_prefix
    rows = await ServedRows(client, prefix, 3600).recall(event_ids)
    store = RedisStore(client, Keys(prefix), live.redis.ttl_seconds, live.redis.memo_ttl_seconds)
    reports = []
    at = [a.name for a in AGGREGATES].index("sender_abuse_reports_hl7d")
    for row in rows:
        assert row is not None
        (values,) = await store.apply_and_read(
            [features_for(f"probe-{row.event_id}", time.time(), row.sender, [])]
        )
        reports.append(values[at])
    await store.close()
    return [row for row in rows if row is not None], reports


def test_forged_labels_are_dead_letters_and_change_nothing(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    live = _settings(settings)
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    mails = corpus.load(live.corpus, corpus.SECOND_HALF)
    target, genuine = next(
        (a, b) for a, b in itertools.pairwise(mails) if a.event.sender.lower() != b.event.sender.lower()
    )
    outcomes = Outcomes(live)
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        # What any process of the same user could read of it: no secret, no signing key.
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
        for secret in (HMAC_KEY, USER_KEY, OPS_KEY, EXAMPLE_KEY):
            assert secret not in environ
        for name in ("WARDEN_PRIVACY__HMAC_KEY", "WARDEN_FEEDBACK__KEY_", "WARDEN_REDIS__URL", "SIGNING_KEY"):
            assert name not in environ
        assert "WARDEN_MODELS__VERIFY_KEY_FILE" in environ

        producer = broker.producer(live.kafka)
        replay([target.event, genuine.event], producer, topics.mail_events)
        outcomes.read_until(lambda o: len(o.verdicts) >= 2, timeout_s=60)
        assert set(outcomes.verdicts) == {target.event.event_id, genuine.event.event_id}

        # The operator's label goes out signed by `warden feedback`'s path (the ops_review key).
        # So does one that claims to be given in 200 years: learned from, but at its arrival.
        authentic = _label(genuine.event.event_id, "fb-genuine")
        future = _label(genuine.event.event_id, "fb-future").model_copy(
            update={"at": time.time() + 200 * 365 * 86400}
        )
        sent_at = time.time()
        assert feedback_source.send(live, [authentic, future]) == 2
        signed = SourceKeys({"ops_review": OPS_KEY.encode()}).sign(authentic)
        victim = target.event.event_id
        forged = [
            SourceKeys({"ops_review": secrets.token_bytes(32)}).sign(_label(victim, "fb-wrong-key")),
            SourceKeys({"ops_review": USER_KEY.encode()}).sign(_label(victim, "fb-user-key")),
            signed.model_copy(update={"event_id": victim, "feedback_id": "fb-replayed"}),
            _label(victim, "fb-unsigned"),
        ]
        raw = [encode(label) for label in forged]
        raw.append(encode(signed).replace(b'"ops_review"', b'"admin"').replace(b"fb-genuine", b"fb-admin"))
        # A time no clock has (its milliseconds overflow an integer): refused as a field, no crash.
        poison = json.loads(encode(signed))
        raw.append(json.dumps({**poison, "feedback_id": "fb-poison", "at": 1e308}).encode())
        for value in raw:
            producer.send(topics.feedback.name, key=victim.encode(), value=value)
        producer.flush()
        producer.close()

        examples: list[TrainingExample] = []
        letters: list[DeadLetter] = []
        reader = broker.TopicReader(live.kafka, (topics.training_examples, topics.dead_letters))
        for message in reader.until(lambda: len(examples) >= 2 and len(letters) >= len(raw), 90):
            if message.topic == topics.training_examples.name:
                examples.append(decode(TrainingExample, message.value or b""))
            else:
                letters.append(decode(DeadLetter, message.value or b""))
        time.sleep(1.0)  # anything still on its way lands now
        examples += [
            decode(TrainingExample, m.value or b"")
            for m in reader.poll(1.0)
            if m.topic == topics.training_examples.name
        ]
        reader.close()
        rows, reports = asyncio.run(_recall_and_probe(live, [victim, genuine.event.event_id]))
    outcomes.close()

    assert [e.event_id for e in examples] == [genuine.event.event_id] * 2, "only authentic labels are learned"
    assert all(e.source == "ops_review" for e in examples)
    # Labels are ordered and reputations dated by their arrival, never by the time they claim.
    assert all(sent_at - 5 <= e.labelled_at <= time.time() + 5 for e in examples)
    # Signed by the worker with the training-example key it was handed through the pipe.
    assert ExampleKeys(EXAMPLE_KEY.encode()).problem(examples[0]) is None
    assert ExampleKeys.from_settings(WardenSettings()).problem(examples[0]) is not None, (
        "not a development key"
    )
    feedback_letters = [letter for letter in letters if letter.source.topic == topics.feedback.name]
    reasons = sorted(letter.reason for letter in feedback_letters)
    assert len(reasons) == len(raw), reasons
    assert (
        sum(
            r.startswith("unauthenticated label: signature does not match source ops_review") for r in reasons
        )
        == 3
    )
    assert sum(r == "unauthenticated label: no signature (source ops_review)" for r in reasons) == 1
    assert sum(r.startswith("source: Input should be") for r in reasons) == 1, "an unknown source"
    assert sum(r.startswith("at: Input should be less than or equal to") for r in reasons) == 1
    assert all("operator-7" not in r for r in reasons)

    victim_reports, genuine_reports = reports
    assert victim_reports == 0.0, "forged labels add no reputation"
    assert genuine_reports > 0.0, "the authentic label does"
    # The worker pseudonymised with the key it was handed through the pipe.
    pseudonymiser = Pseudonymiser(live.privacy.hmac_key, live.privacy.key_id)
    assert rows[0].sender == pseudonymiser.address(target.event.sender)


def test_split_stages_score_only_features_records_sealed_by_a_worker(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    live = _settings(settings)
    live = live.model_copy(update={"worker": live.worker.model_copy(update={"split_stages": True})})
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    mails = corpus.load(live.corpus, corpus.SECOND_HALF)[:4]
    pseudonymiser = Pseudonymiser(live.privacy.hmac_key, live.privacy.key_id)
    now = time.time()
    records = [
        RawRecord(encode(m.event), topics.mail_events.name, 0, 10_000 + i, int(now * 1000))
        for i, m in enumerate(mails)
    ]
    features = [outcome.value for outcome in ingest_batch(records, live, pseudonymiser, now)]
    forged = {
        "unsealed": (features[0], None),
        "sealed by another key": (features[1], ExampleKeys(secrets.token_bytes(32)).seal(features[1])),
        "seal of other bytes": (features[2], ExampleKeys(EXAMPLE_KEY.encode()).seal(features[3])),
    }
    outcomes = Outcomes(live)
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        producer = broker.producer(live.kafka)
        for value, headers in forged.values():
            producer.send(topics.mail_features.name, key=b"forged", value=value, headers=headers)
        sealed = ExampleKeys(EXAMPLE_KEY.encode()).seal(features[3])  # what an ingesting worker sends
        producer.send(topics.mail_features.name, key=b"sealed", value=features[3], headers=sealed)
        producer.flush()
        producer.close()
        outcomes.read_until(lambda o: len(o.verdicts) + len(o.dead_letters) >= 4, timeout_s=90)
        outcomes.drain()
    outcomes.close()

    assert set(outcomes.verdicts) == {mails[3].event.event_id}, "only the sealed record is scored"
    letters = [letter for found in outcomes.dead_letters.values() for letter in found]
    assert len(letters) == len(forged)
    assert all(
        letter.reason == UNSEALED and letter.source.topic == topics.mail_features.name for letter in letters
    )
