"""Serving while traffic flows: hot swap, shadow, reasons and POST /score, on a real worker."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.models.registry import Registry
from warden.models.train import train_from_corpus
from warden.serving.compare import compare
from warden.streams import broker
from warden.streams.records import FeatureLogEntry, Verdict, decode, encode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay
from warden.streams.topics import Topics


@pytest.fixture(scope="module")
def two_versions(
    registry_dir: Path, tmp_path_factory: pytest.TempPathFactory, key_files: dict[str, Path]
) -> tuple[Path, str, str]:
    """A registry with the session's champion and a second, different, registered version."""
    root = tmp_path_factory.mktemp("two-versions") / "registry"
    shutil.copytree(registry_dir, root)
    settings = WardenSettings(
        corpus={"cache_dir": Path(__file__).resolve().parents[2] / ".warden" / "cache"},
        models={"registry_dir": root, "num_trees": 40, "seed": 11, **key_files},
    )
    first = Registry.from_settings(settings).current()
    assert first is not None
    second = train_from_corpus(settings, corpus.FIRST_HALF, promote=False).version
    return root, first, second


def _settings_with(settings: WardenSettings, registry: Path) -> WardenSettings:
    return settings.model_copy(
        update={
            "models": settings.models.model_copy(update={"registry_dir": registry}),
            "serving": settings.serving.model_copy(update={"reload_interval_s": 0.2}),
        }
    )


def _read_verdicts(reader: broker.TopicReader, verdicts: dict[str, list[Verdict]], count: int) -> None:
    for message in reader.until(lambda: len(verdicts) >= count, timeout_s=120):
        assert message.value is not None
        verdict = decode(Verdict, message.value)
        verdicts[verdict.event_id].append(verdict)


def _wait_for(settings: WardenSettings, field: str, value: str, timeout_s: float = 30.0) -> None:
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            if json.loads(response.read()).get(field) == value:
                return
        time.sleep(0.1)
    raise AssertionError(f"the worker's {field} did not become {value}")


def test_hot_swap_mid_stream_scores_every_event_once_by_one_version(
    settings: WardenSettings,
    base_env: dict[str, str],
    tmp_path: Path,
    two_versions: tuple[Path, str, str],
) -> None:
    source, old, new = two_versions
    registry_root = tmp_path / "registry"
    shutil.copytree(source, registry_root)
    live = _settings_with(settings, registry_root)
    registry = Registry.from_settings(live, signing=True)  # promote and shadow sign their pointers
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    mails = corpus.load(live.corpus, corpus.SECOND_HALF)[:600]
    producer = broker.producer(live.kafka)
    verdicts: dict[str, list[Verdict]] = defaultdict(list)
    reader = broker.TopicReader(live.kafka, (topics.verdicts,))
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        registry.set_shadow(new)  # the challenger rides along first, never acted on
        _wait_for(live, "shadow_version", new)
        replay([m.event for m in mails[:300]], producer, topics.mail_events)
        _read_verdicts(reader, verdicts, 150)
        registry.promote(new)  # mid-stream: the worker swaps at a batch boundary
        registry.set_shadow(old)
        _wait_for(live, "shadow_version", old)
        replay([m.event for m in mails[300:]], producer, topics.mail_events)
        _read_verdicts(reader, verdicts, len(mails))
        time.sleep(1.0)
        for message in reader.poll(1.0):
            assert message.value is not None
            verdict = decode(Verdict, message.value)
            verdicts[verdict.event_id].append(verdict)
        metrics = (
            urllib.request.urlopen(f"http://{live.worker.web_host}:{live.worker.web_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    producer.close()
    reader.close()

    assert set(verdicts) == {m.event.event_id for m in mails}
    assert all(len(copies) == 1 for copies in verdicts.values()), "every event scored exactly once"
    versions = [v.model_version for copies in verdicts.values() for v in copies]
    assert set(versions) == {old, new}
    # Per partition, once the new version appears the old one never returns.
    by_partition: dict[int, list[Verdict]] = defaultdict(list)
    for copies in verdicts.values():
        by_partition[copies[0].source.partition].append(copies[0])
    for partition_verdicts in by_partition.values():
        ordered = [v.model_version for v in sorted(partition_verdicts, key=lambda v: v.source.offset)]
        first_new = ordered.index(new) if new in ordered else len(ordered)
        assert all(version == new for version in ordered[first_new:])
    assert "warden_model_swaps_total 1" in metrics

    # Reasons on every flagged verdict, none on allowed ones.
    for copies in verdicts.values():
        verdict = copies[0]
        if verdict.action == "allow":
            assert verdict.reasons == []
        else:
            assert 1 <= len(verdict.reasons) <= live.serving.reasons
            assert all(r.contribution > 0 and r.description for r in verdict.reasons)

    # The shadow was scored on the same rows and can be compared with the champion.
    log_reader = broker.TopicReader(live.kafka, (topics.feature_log,))
    entries = [decode(FeatureLogEntry, m.value or b"") for m in log_reader.until(lambda: False, 3)]
    log_reader.close()
    shadowed = [e for e in entries if e.shadow_version is not None]
    # Each shadow is loaded within a reload interval of being set, so most rows carry one.
    assert {(e.model_version, e.shadow_version) for e in shadowed} == {(old, new), (new, old)}
    assert len(shadowed) >= len(mails) // 4
    results = compare(entries, registry)
    assert results
    assert all(0.0 <= r.agreement <= 1.0 and r.events > 0 for r in results)


def test_post_score_gives_the_verdict_the_stream_gives(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    """The same bytes, streamed then posted, get the same verdict: POST /score previews the stream's path.

    The worker runs as in production (the broker's clock), so a posted event
    is read at the worker's clock: within the hour the stream read it in, its
    once-only memo answers with what the stream served. An attempt that
    straddles the hour is made again with other event ids.
    """
    live = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"trust_producer_event_time": False})}
    )
    topics = Topics.from_settings(live.kafka)
    broker.ensure_topics(live.kafka, topics.all())
    newer = corpus.load(live.corpus, corpus.SECOND_HALF)
    chosen = [m for m in newer if m.is_spam][:5] + [m for m in newer if not m.is_spam][:5]
    url = f"http://{live.worker.web_host}:{live.worker.web_port}/score"
    with worker_process(live, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(live, proc, timeout_s=90)
        for attempt in range(2):
            hour = int(time.time() // 3600)
            events = [
                m.event.model_copy(update={"event_id": f"{m.event.event_id}-{attempt}"}) for m in chosen
            ]
            producer = broker.producer(live.kafka)
            replay(events, producer, topics.mail_events)
            producer.close()
            streamed: dict[str, list[Verdict]] = defaultdict(list)
            reader = broker.TopicReader(live.kafka, (topics.verdicts,))
            _read_verdicts(reader, streamed, len(events) * (attempt + 1))
            reader.close()
            synchronous = {}
            for event in events:
                request = urllib.request.Request(
                    url, data=encode(event), method="POST", headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    synchronous[event.event_id] = Verdict.model_validate(json.loads(response.read()))
            if int(time.time() // 3600) == hour:
                break
        bad = urllib.request.Request(
            url, data=b"{not json", method="POST", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 400
        assert "not JSON" in json.loads(refused.value.read())["error"]
        # No token on loopback: a page whose name was rebound to 127.0.0.1 sends that name as Host.
        rebound = urllib.request.Request(
            url,
            data=encode(events[0]),
            method="POST",
            headers={"Content-Type": "application/json", "Host": "rebind.attacker.example:6066"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=10)
        assert refused.value.code == 400
        assert "Host header" in json.loads(refused.value.read())["error"]

    for event_id, verdict in synchronous.items():
        (stream_verdict,) = streamed[event_id]
        assert stream_verdict.action == verdict.action
        assert stream_verdict.score == verdict.score
        assert stream_verdict.model_version == verdict.model_version
        assert [r.feature for r in stream_verdict.reasons] == [r.feature for r in verdict.reasons]
    assert {v.action for v in synchronous.values()} != {"allow"}
