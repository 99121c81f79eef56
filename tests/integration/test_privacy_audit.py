"""The privacy audit on a real pipeline run (passes, then fails on planted raw data), and `warden report`."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from tests.integration.outcomes import Outcomes
from warden.features.privacy.audit import audit, corpus_names, derived_topics, display_names
from warden.features.store.redis_client import sync_client
from warden.infra.cli.main import main
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.exceptions import ExitCode
from warden.streams.records import Feedback, TrainingExample, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources import feedback as feedback_source
from warden.streams.sources.replay import replay
from warden.streams.topics import Topics

N = 250


def test_audit_passes_after_a_pipeline_run_and_fails_on_planted_raw_data(
    settings: WardenSettings,
    base_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:N]
    subjects = [m.event.subject for m in mails]
    names = corpus_names(settings)
    log_path = tmp_path / "worker.log"
    producer = broker.producer(settings.kafka)
    with worker_process(settings, base_env, log_path) as proc:
        wait_healthy(settings, proc, timeout_s=90)
        replay([m.event for m in mails], producer, topics.mail_events)
        producer.close()
        # Labels join the rows that were served: wait for every labelled mail's verdict.
        outcomes = Outcomes(settings)
        labelled_ids = {m.event.event_id for m in mails[:80]}
        outcomes.read_until(lambda o: labelled_ids <= set(o.verdicts), timeout_s=120)
        assert labelled_ids <= set(outcomes.verdicts), dict(outcomes.dead_letters)
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
        outcomes.drain()
        outcomes.close()
        reasons = {letter.reason for letters in outcomes.dead_letters.values() for letter in letters}
        assert len(seen) == len(labels), reasons
        metrics = f"http://{settings.worker.web_host}:{settings.worker.web_port}/metrics"
        clean = audit(settings, subjects, names=names, logs=[log_path], metrics_url=metrics)

    out = io.StringIO()
    clean.write(out)
    assert clean.passed, out.getvalue()
    assert clean.scanned["redis keys"] > N
    for topic in derived_topics(topics):
        # (mail.features stays empty: a one-hop worker scores each batch where it was ingested)
        if topic.name.endswith(("verdicts", "feature-log", "training-examples")):
            assert clean.scanned[f"topic {topic.name}"] > 0
    assert clean.scanned[f"topic {topics.verdicts.name}"] >= N  # every verdict read, not a sample
    assert not clean.sampled
    assert not clean.unread
    assert clean.scanned["registry files"] >= 3
    assert clean.scanned["metrics bytes"] > 0
    assert any(":sender:w86400" in family for family in clean.families)
    assert all(f.no_ttl == 0 for f in clean.families.values())

    # A raw address planted in a key with a TTL, and a key without a TTL: both are findings.
    client = sync_client(settings.redis)
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
    name = next(n for m in mails for n in display_names(m.event.headers) if n in names and " " in n)
    leaky.write_text(f"scored mail {subject.upper()!r} in 3 ms\nreporter: {name}\n")
    found = audit(settings, subjects, names=names, logs=[leaky], topics=False).findings
    in_log = sorted((f.kind, f.where) for f in found if f.where.startswith("log"))
    assert in_log == [("name", "log leaky.log"), ("subject", "log leaky.log")]

    # `warden report` on the same topics: a DP release, then a refusal once the budget is spent.
    assert settings.redis.url is not None
    # In-process: the secrets the CLI would read from its pipe go in as settings variables here.
    for name, value in settings.service_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WARDEN_REDIS__URL", settings.redis.url.get_secret_value())
    monkeypatch.setenv("WARDEN_PRIVACY__REPORT_LEDGER", str(tmp_path / "ledger.json"))
    monkeypatch.setenv("WARDEN_PRIVACY__REPORT_BUDGET_EPSILON", "1.5")
    capsys.readouterr()
    assert main(["report", "--epsilon", "1", "--days", "2", "--out", str(tmp_path / "reports")]) == 0
    published = json.loads((tmp_path / "reports" / "r0001.json").read_text())
    total = sum(cell["count"] for cell in published["verdicts_per_day"])
    assert abs(total - N) < 60  # 6 cells of discrete Laplace noise, scale 2
    assert published["budget_left"] == pytest.approx(0.5)
    assert all(d["domain"].startswith("k1.") for d in published["most_reported_domains"])
    capsys.readouterr()
    assert main(["report", "--epsilon", "1", "--out", str(tmp_path / "reports")]) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert err.startswith("warden: error: privacy budget exhausted")
    assert err.count("\n") == 1
