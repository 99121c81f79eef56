"""The whole loop on the real broker and Redis: verdicts → feedback → examples → retrain → swap."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from tests.integration.outcomes import metrics, wait_until
from warden.infra.dev.worker_process import run_cli, wait_healthy, worker_process
from warden.models.registry import Registry
from warden.streams import broker
from warden.streams.exceptions import ExitCode
from warden.streams.records import DeadLetter, Feedback, TrainingExample, Verdict, decode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources import feedback as feedback_source
from warden.streams.sources.replay import replay, send_raw
from warden.streams.topics import Topics


def _verdicts(settings: WardenSettings, topics: Topics, wanted: set[str]) -> dict[str, list[Verdict]]:
    found: dict[str, list[Verdict]] = defaultdict(list)
    reader = broker.TopicReader(settings.kafka, (topics.verdicts,))
    for message in reader.until(lambda: wanted <= set(found), timeout_s=120):
        verdict = decode(Verdict, message.value or b"")
        if verdict.event_id in wanted:
            found[verdict.event_id].append(verdict)
    reader.close()
    return found


def _wait_for_model(settings: WardenSettings, version: str | None, timeout_s: float = 30.0) -> None:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            if json.loads(response.read()).get("model_version") == version:
                return
        time.sleep(0.05)
    raise AssertionError(f"the worker did not switch to {version}")


def _retrain_exported(settings: WardenSettings, outcome: str) -> bool:
    """Whether the worker's /metrics shows ``outcome`` as the last retrain run's, and no other."""
    family = "warden_retrain_last_run_timestamp_seconds"
    shown = {name for name in metrics(settings) if name.startswith(family)}
    return shown == {f'{family}{{outcome="{outcome}"}}'}


def _cli(
    settings: WardenSettings, base_env: dict[str, str], *argv: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, base_env, argv, extra)


def test_labels_retrain_promote_swap_and_rollback(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path, registry_dir: Path
) -> None:
    registry_root = tmp_path / "registry"
    shutil.copytree(registry_dir, registry_root)
    live = settings.model_copy(
        update={
            "models": settings.models.model_copy(update={"registry_dir": registry_root}),
            "serving": settings.serving.model_copy(update={"reload_interval_s": 0.2}),
        }
    )
    registry = Registry.from_settings(live)
    first = registry.current()
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    newer = corpus.load(live.corpus, corpus.SECOND_HALF)
    # Operators label 2,000 scored mails the champion was not trained on (it was trained on the first
    # half: labels for those would let the gate judge it on its own training rows).
    labelled, later = newer[:2000], newer[2000:2060]

    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        producer = broker.producer(live.kafka)
        replay([m.event for m in labelled], producer, topics.mail_events)
        assert set(_verdicts(live, topics, {m.event.event_id for m in labelled}))

        # Operators label every scored mail; one label names an unknown event, one is malformed.
        now = time.time()
        labels = [
            Feedback(
                feedback_id=f"fb-{i}",
                event_id=m.event.event_id,
                label="abuse" if m.is_spam else "legit",
                source="ops_review",
                reporter=f"operator{i % 3}",
                at=now,
            )
            for i, m in enumerate(labelled)
        ]
        labels.append(
            Feedback(
                feedback_id="fb-ghost",
                event_id="never-seen",
                label="abuse",
                source="ops_review",
                reporter="operator0",
                at=now,
            )
        )
        assert feedback_source.send(live, labels) == len(labels)
        send_raw(producer, [(topics.feedback, b"x", b'{"feedback_id": 7}')])
        assert feedback_source.send(live, labels[:10]) == 10  # duplicates change nothing

        examples: list[TrainingExample] = []
        letters: list[DeadLetter] = []
        reader = broker.TopicReader(live.kafka, (topics.training_examples, topics.dead_letters))
        for message in reader.until(lambda: len(examples) >= len(labelled) and len(letters) >= 2, 120):
            if message.topic == topics.training_examples.name:
                examples.append(decode(TrainingExample, message.value or b""))
            else:
                letters.append(decode(DeadLetter, message.value or b""))
        time.sleep(1.0)
        examples += [
            decode(TrainingExample, m.value or b"")
            for m in reader.poll(1.0)
            if m.topic == topics.training_examples.name
        ]
        reader.close()
        assert len(examples) == len(labelled), "one example per label; duplicates dropped"
        assert {e.event_id for e in examples} == {m.event.event_id for m in labelled}
        assert all(e.weight == 1.0 and len(e.row.content) > 0 for e in examples)
        reasons = " | ".join(letter.reason for letter in letters)
        assert "unknown or expired event never-seen" in reasons
        assert "feedback_id" in reasons

        # Too little data for a demanding threshold: said by the exit code, nothing registered.
        versions_before = registry.versions()
        scarce = _cli(live, base_env, "retrain", "--min-examples", "5000")
        assert scarce.returncode == ExitCode.TOO_LITTLE_DATA, scarce.stderr
        assert registry.versions() == versions_before
        # The worker, which never saw the job, exports its outcome (read from the registry).
        wait_until(lambda: _retrain_exported(live, "too_little_data"), 10, "too_little_data on /metrics")

        # A retrain strictly better than the champion on the gate's holdout (labelled rows the
        # candidate never trained on): promoted, announced, swapped; both figures and its size printed.
        started = time.monotonic()
        promoted = _cli(live, base_env, "retrain", "--min-examples", "200")
        assert promoted.returncode == ExitCode.OK, promoted.stdout + promoted.stderr
        result = json.loads(promoted.stdout.strip().splitlines()[-1])
        new = result["version"]
        assert result["outcome"] == "promoted"
        assert registry.current() == new
        assert result["candidate_auc"] > result["champion_auc"]
        assert result["holdout_rows"] == result["holdout_abuse"] + result["holdout_legit"] > 0
        assert f"holdout of {result['holdout_rows']:.0f} rows" in promoted.stdout

        _wait_for_model(live, new)
        swap_seconds = time.monotonic() - started
        again = _cli(live, base_env, "retrain", "--min-examples", "200")
        assert json.loads(again.stdout.strip().splitlines()[-1])["outcome"] == "unchanged"
        replay([m.event for m in later[:30]], producer, topics.mail_events)
        after = _verdicts(live, topics, {m.event.event_id for m in later[:30]})
        assert {v.model_version for copies in after.values() for v in copies} == {new}

        # A weaker candidate on the same examples: registered, not promoted, and the code says so.
        tiny = {"WARDEN_MODELS__NUM_TREES": "1", "WARDEN_MODELS__NUM_LEAVES": "2"}
        refused = _cli(live, base_env, "retrain", "--min-examples", "200", extra=tiny)
        assert refused.returncode == ExitCode.NOT_PROMOTED, refused.stdout + refused.stderr
        weak = json.loads(refused.stdout.strip().splitlines()[-1])
        assert weak["candidate_auc"] < weak["champion_auc"]
        weak_version = json.loads(refused.stdout.strip().splitlines()[-1])["version"]
        assert weak_version in registry.versions()
        assert registry.current() == new
        wait_until(lambda: _retrain_exported(live, "not_promoted"), 10, "not_promoted on /metrics")

        # Rollback: running workers return to the previous version.
        rolled = _cli(live, base_env, "models", "rollback")
        assert rolled.returncode == 0, rolled.stderr
        assert registry.current() == first
        _wait_for_model(live, first)
        replay([m.event for m in later[30:]], producer, topics.mail_events)
        producer.close()
        back = _verdicts(live, topics, {m.event.event_id for m in later[30:]})
        assert {v.model_version for copies in back.values() for v in copies} == {first}
    print(f"retrain start -> new version scoring: {swap_seconds:.1f} s")
    print(f"gate, promoted: {promoted.stdout.strip().splitlines()[0]}")
    print(f"gate, weak candidate: {refused.stdout.strip().splitlines()[0]}")
