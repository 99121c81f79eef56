"""The ops review queue on the real Redis and the real broker.

The queue is bounded and expires, a campaign lands in one group, a label on a
group reaches ``feedback`` as one ``ops_review`` label per member event, and
a worker feeds the queue from its scoring path.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr
from redis.asyncio import Redis

from warden.features.ingest.extraction import to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisClient, RedisStore
from warden.features.store.redis_client import async_client
from warden.infra.cli import review as review_cli
from warden.infra.dev.worker_process import run_cli, wait_healthy, worker_process
from warden.models.registry import Registry
from warden.models.scorer import Scorer
from warden.serving.review.queue import Candidate, ReviewQueue
from warden.serving.review.ranking import RankingModel
from warden.serving.worker.agents.score import decide
from warden.streams import broker
from warden.streams.records import Feedback, MailEvent, SourcePosition, TrainingExample, decode
from warden.streams.settings import ReviewSettings, WardenSettings
from warden.streams.sources.campaign import campaign
from warden.streams.sources.replay import replay
from warden.streams.topics import Topics


def _unrelated(count: int, start: float) -> list[MailEvent]:
    topics = ("gardening", "chess", "astronomy", "baking", "cycling", "violin", "sailing", "pottery")
    return [
        MailEvent(
            event_id=f"other-{i}",
            timestamp=start + 7 * i,
            sender=f"person{i}@site{i}.example",
            recipients=["reader@example.org"],
            subject=f"notes on {topics[i % len(topics)]}",
            text=" ".join(f"{topics[i % len(topics)]}{i}word{j}" for j in range(40)),
        )
        for i in range(count)
    ]


async def _fill(
    settings: WardenSettings, client: RedisClient, queues: Sequence[ReviewQueue], events: Sequence[MailEvent]
) -> list[Candidate]:
    """Score ``events`` through the served path (store, model, policy) and queue them in batches."""
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    store = RedisStore(client, Keys(settings.redis.key_prefix), 3600, 1800)
    scorer = Scorer.from_registry(Registry.from_settings(settings))
    out: list[Candidate] = []
    for start in range(0, len(events), 8):
        batch = [
            to_features(
                e,
                pseudonymiser,
                SourcePosition(topic="t", partition=0, offset=start + i),
                0,
                event_time=e.timestamp,
            )
            for i, e in enumerate(events[start : start + 8])
        ]
        aggregates = await store.apply_and_read(batch)
        verdicts, entries = decide(batch, aggregates, scorer, int(time.time() * 1000))
        for queue in queues:
            queued = await queue.enqueue(batch, verdicts, entries, scorer.policy.junk)
        out.extend(queued)
    return out


async def _keys(client: Redis, pattern: str) -> list[str]:
    keys = client.scan_iter(match=pattern, count=10_000)
    return [k.decode() if isinstance(k, bytes) else k async for k in keys]


async def _value(client: Redis, key: str) -> object:
    kind = await client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "string":
        return await client.get(key)
    if kind == "hash":
        return await client.hgetall(key)
    if kind == "zset":
        return await client.zrange(key, 0, -1)
    raise AssertionError(f"unexpected {kind} at {key}")


def test_bounded_expiring_grouped_and_labelled_per_member(settings: WardenSettings) -> None:
    start = time.time() - 3600
    fraud = campaign(40, start, ["accounts@example.org"], seed=41)
    events = sorted([*fraud, *_unrelated(12, start)], key=lambda e: e.timestamp)
    prefix = settings.redis.key_prefix

    async def scenario() -> tuple[str, list[str]]:
        client = async_client(settings.redis)
        assert isinstance(client, Redis)
        try:
            main = ReviewQueue(client, prefix, settings.review)
            small = ReviewQueue(client, prefix + "-small", ReviewSettings(max_groups=5, max_members=15))
            candidates = await _fill(settings, client, [main, small], events)

            # Bounded: at most 5 groups, at most 15 members each, however many events came.
            assert await main.size() >= 13  # the campaign and twelve unrelated mails
            assert 1 <= await small.size() <= 5
            for key in await _keys(client, small.key("m:*")):
                assert await client.zcard(key) <= 15

            # Grouped: the campaign is one group; no unrelated mail is in it.
            campaign_ids = {e.event_id for e in fraud}
            group, members = await main.members(_campaign_group(candidates, campaign_ids))
            assert group is not None
            assert len(set(members) & campaign_ids) >= 38
            assert set(members) <= campaign_ids
            (top,) = [g for g in await main.top(50) if g.group == group]
            assert top.size == len(members)
            assert top.examples
            assert all(c.event_id in campaign_ids for c in top.examples)

            # Nothing raw in the queue: pseudonyms and numbers only.
            for key in await _keys(client, main.key("*")):
                stored = key + repr(await _value(client, key))
                for raw in ("@", "example", "invoice", "Invoice", "remittance", ".com", "203.0.113"):
                    assert raw not in stored, (key, raw)

            # Expires: a queue with a 3 s TTL is gone after it, keys and listing both.
            brief = ReviewQueue(client, prefix + "-brief", ReviewSettings(ttl_seconds=3))
            await _fill(settings, client, [brief], _unrelated(4, start + 9000))
            assert await brief.top(10)
            deadline = time.monotonic() + 15
            while await _keys(client, brief.key("*")) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert await _keys(client, brief.key("*")) == []
            assert await brief.top(10) == []
            return group, members
        finally:
            await client.aclose()

    group, members = asyncio.run(scenario())

    # A label on the group: one ops_review feedback record per member, each with its own event id.
    out = io.StringIO()
    sent = review_cli.label(settings, group, "spam", "ops-7", out)
    assert sent == len(members)
    assert f"{sent} ops_review labels" in out.getvalue()
    topics = Topics.from_settings(settings.kafka)
    seen: list[Feedback] = []
    reader = broker.TopicReader(settings.kafka, (topics.feedback,))
    for message in reader.until(lambda: len(seen) >= len(members), timeout_s=60):
        seen.append(decode(Feedback, message.value or b""))
    reader.close()
    assert sorted(f.event_id for f in seen) == sorted(members)
    assert len({f.feedback_id for f in seen}) == len(members)
    assert {(f.source, f.label, f.reporter) for f in seen} == {("ops_review", "abuse", "ops-7")}
    # The labelled group left the queue; the unrelated mails are still there.
    listed = asyncio.run(review_cli._top(settings, 50))
    assert group not in {g.group for g in listed}
    assert len(listed) >= 12


def _campaign_group(candidates: Sequence[Candidate], campaign_ids: set[str]) -> str:
    """The group the last campaign member joined (earlier members' groups may since be merged)."""
    return [c.group for c in candidates if c.event_id in campaign_ids][-1]


def _cli(settings: WardenSettings, base_env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, base_env, argv, timeout_s=120)


def test_worker_feeds_the_queue_and_a_group_label_reaches_training(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"review": settings.review.model_copy(update={"enabled": True})})
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    fraud = campaign(30, time.time() - 3600, ["accounts@example.org"], seed=42)
    with worker_process(settings, base_env, tmp_path / "worker.log") as proc:
        wait_healthy(settings, proc, timeout_s=90)
        producer = broker.producer(settings.kafka)
        replay(fraud, producer, topics.mail_events)
        producer.close()

        # Every mail is queued, and the campaign is grouped: a handful of groups at most
        # (how early members merge depends on the order the two partitions deliver them).
        deadline = time.monotonic() + 90
        groups: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            shown = _cli(settings, base_env, "review", "--json", "--top", "30")
            assert shown.returncode == 0, shown.stderr
            groups = json.loads(shown.stdout)
            if sum(int(str(g["size"])) for g in groups) >= len(fraud):
                break
            time.sleep(0.5)
        assert sum(int(str(g["size"])) for g in groups) == len(fraud), "the worker queued every mail"
        assert len(groups) <= 5  # 300 shuffles of these 30 mails: 1-4 groups, 1 in 68% of them
        biggest = max(groups, key=lambda g: int(str(g["size"])))
        table = _cli(settings, base_env, "review", "--top", "5")
        assert table.returncode == 0
        assert str(biggest["group"]) in table.stdout

        labelled = _cli(
            settings, base_env, "review", "label", str(biggest["group"]), "spam", "--reporter", "ops1"
        )
        assert labelled.returncode == 0, labelled.stderr
        size = int(str(biggest["size"]))
        examples: list[TrainingExample] = []
        reader = broker.TopicReader(settings.kafka, (topics.training_examples,))
        for message in reader.until(lambda: len(examples) >= size, timeout_s=90):
            examples.append(decode(TrainingExample, message.value or b""))
        reader.close()
        assert len(examples) == size
        assert {e.source for e in examples} == {"ops_review"}
        assert {e.label for e in examples} == {1}
        assert {e.event_id for e in examples} <= {e.event_id for e in fraud}

        # The ranking model is fitted on the logged feedback (or keeps the prior if it is one-sided).
        ranker = tmp_path / "ranker.json"
        fitted = _cli(settings, base_env, "review", "--fit-ranker", str(ranker))
        assert fitted.returncode == 0, fitted.stderr
        assert f"of {size} usable examples" in fitted.stdout
        fitted_model = RankingModel.from_json(ranker.read_text())
        assert fitted_model == RankingModel() or fitted_model.fitted_on == size

    unknown = _cli(settings, base_env, "review", "label", "no-such-group", "ham")
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1
    assert "neither a group" in unknown.stderr


def _review_cli(
    settings: WardenSettings, base_env: dict[str, str], redis_env: dict[str, str], *argv: str
) -> subprocess.CompletedProcess[str]:
    """``warden`` as an operator runs it: the broker, the names and the Redis settings given, nothing else."""
    env = {
        **base_env,
        "WARDEN_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers or "",
        "WARDEN_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "WARDEN_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "WARDEN_MODELS__REGISTRY_DIR": str(settings.models.registry_dir),
        **redis_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "warden.infra.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_review_cli_uses_the_configured_auth(
    settings: WardenSettings, base_env: dict[str, str], secured_redis: tuple[str, str]
) -> None:
    url, password = secured_redis
    secured = settings.redis.model_copy(
        update={"url": SecretStr(url), "username": "warden", "password": SecretStr(password)}
    )
    settings = settings.model_copy(update={"redis": secured})
    mails = _unrelated(6, time.time() - 3600)

    async def fill() -> None:
        client = async_client(secured)
        try:
            await _fill(settings, client, [ReviewQueue(client, secured.key_prefix, settings.review)], mails)
        finally:
            await client.aclose()

    asyncio.run(fill())
    auth = {"WARDEN_REDIS__URL": url, "WARDEN_REDIS__USERNAME": "warden", "WARDEN_REDIS__PASSWORD": password}
    shown = _review_cli(settings, base_env, auth, "review", "--json", "--top", "20")
    assert shown.returncode == 0, shown.stderr
    assert sum(int(group["size"]) for group in json.loads(shown.stdout)) == len(mails)

    port = url.rsplit(":", 1)[1].split("/")[0]
    wrong = _review_cli(
        settings, base_env, {**auth, "WARDEN_REDIS__PASSWORD": "Wrong-" + password}, "review", "--top", "3"
    )
    none = _review_cli(settings, base_env, {"WARDEN_REDIS__URL": url}, "review", "--top", "3")
    for refused in (wrong, none):
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith(
            f"warden: error: cannot use Redis at 127.0.0.1:{port} for the review queue: "
        )
        assert password not in refused.stderr
        assert refused.stdout == ""
    assert "invalid username-password pair" in wrong.stderr
