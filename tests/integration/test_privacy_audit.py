"""The privacy audit on a real pipeline run: it passes, then fails on a planted raw address."""

from __future__ import annotations

import io
import time
from pathlib import Path

import redis

from infra.privacy_audit import audit, derived_topics
from infra.settings import WardenSettings
from infra.worker_process import wait_healthy, worker_process
from streams import broker, corpus, feedback_source
from streams.records import Feedback, TrainingExample, decode
from streams.replay import replay
from streams.topics import Topics

N = 250


def test_audit_passes_after_a_pipeline_run_and_fails_on_planted_raw_data(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.NEWER)[:N]
    subjects = [m.event.subject for m in mails]
    log_path = tmp_path / "worker.log"
    producer = broker.producer(settings.kafka)
    with worker_process(settings, base_env, log_path) as proc:
        wait_healthy(settings, proc, timeout_s=90)
        replay([m.event for m in mails], producer, topics.mail_events)
        producer.close()
        time.sleep(2.0)  # let the verdicts land before labels arrive
        labels = [
            Feedback(
                feedback_id=f"fb-{m.event.event_id}",
                event_id=m.event.event_id,
                label="abuse" if m.is_spam else "legit",
                source="user_report" if i % 2 else "ops_review",
                reporter=m.event.recipients[0],  # a raw address: must be pseudonymised
                at=time.time(),
            )
            for i, m in enumerate(mails[:80])
        ]
        feedback_source.send(settings, labels)
        seen: set[str] = set()
        reader = broker.TopicReader(settings.kafka, (topics.training_examples,))
        for message in reader.until(lambda: len(seen) >= len(labels), timeout_s=120):
            seen.add(decode(TrainingExample, message.value or b"").event_id)
        reader.close()
        assert len(seen) == len(labels)
        metrics = f"http://{settings.worker.web_host}:{settings.worker.web_port}/metrics"
        clean = audit(settings, subjects, logs=[log_path], metrics_url=metrics)

    out = io.StringIO()
    clean.write(out)
    assert clean.passed, out.getvalue()
    assert clean.scanned["redis keys"] > N
    for topic in derived_topics(topics):
        if topic.name.endswith(("mail.features", "verdicts", "feature-log", "training-examples")):
            assert clean.scanned[f"topic {topic.name} (sampled)"] > 0
    assert clean.scanned["registry files"] >= 3
    assert clean.scanned["metrics bytes"] > 0
    assert any(":sender:w86400" in family for family in clean.families)
    assert all(f.no_ttl == 0 for f in clean.families.values())

    # A raw address planted in a key with a TTL, and a key without a TTL: both are findings.
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())  # type: ignore[union-attr]
    victim = mails[0].event.sender
    client.set(f"{settings.redis.key_prefix}:{{a:{victim}}}:sender:first", b"1", ex=600)
    client.set(f"{settings.redis.key_prefix}:{{a:k1.0123}}:sender:forever", b"1")
    client.close()
    dirty = audit(settings, subjects, topics=False)
    kinds = sorted({(f.kind, f.where) for f in dirty.findings})
    assert ("address", "redis {a:*}:sender:first") in kinds
    assert ("no-ttl", "redis {a:*}:sender:forever") in kinds
    out = io.StringIO()
    dirty.write(out)
    assert "privacy audit FAILED" in out.getvalue()
    assert victim not in out.getvalue()

    # A raw subject in a log is a finding too.
    subject = next(s for s in subjects if len(s.split()) >= 4 and len(s) >= 20)
    leaky = tmp_path / "leaky.log"
    leaky.write_text(f"scored mail {subject.upper()!r} in 3 ms\n")
    found = audit(settings, subjects, logs=[leaky], topics=False).findings
    assert [(f.kind, f.where) for f in found if f.where.startswith("log")] == [("subject", "log leaky.log")]
