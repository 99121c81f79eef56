"""A report farm cannot buy a verdict: user reports are weighed and capped per reporter and target."""

from __future__ import annotations

import time

from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.store.keys import Keys
from warden.features.store.redis import RedisStore
from warden.features.store.redis_client import async_client
from warden.features.store.served import FeedbackLedger, ServedRows
from warden.features.testing import features_for
from warden.serving.worker.agents.feedback import Arrival, join, reputation_calls
from warden.serving.worker.metrics import WorkerStats
from warden.streams.records import Feedback, ServedRow, SourcePosition
from warden.streams.settings import WardenSettings


def _arrivals(labels: list[Feedback], first_offset: int, at: float) -> list[Arrival]:
    """``labels`` as read one after another from the feedback topic, from ``first_offset`` on."""
    return [
        Arrival(label, SourcePosition(topic="feedback", partition=0, offset=first_offset + i), b"", at)
        for i, label in enumerate(labels)
    ]


def _row(event_id: str, sender: str, ts: float) -> ServedRow:
    return ServedRow(
        event_id=event_id,
        timestamp=ts,
        model_version="v",
        sender=sender,
        sender_domain=f"{sender}.domain",
        url_domains=[],
        content=[0.0],
        tokens=[],
        aggregates=[0.0],
    )


async def test_mass_reports_about_one_sender_stay_within_the_documented_bound(
    settings: WardenSettings,
) -> None:
    assert settings.redis.url is not None
    client = async_client(settings.redis)
    prefix = settings.redis.key_prefix
    keys = Keys(prefix)
    store = RedisStore(client, keys, settings.redis.ttl_seconds, settings.redis.memo_ttl_seconds)
    served = ServedRows(client, prefix, 3600)
    ledger = FeedbackLedger(client, prefix, 3600)
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    stats = WorkerStats()
    now = time.time()
    victim, spammer = "k1.victim", "k1.spammer"
    await served.remember(
        [_row(f"v{i}", victim, now - 60) for i in range(40)]
        + [_row(f"s{i}", spammer, now - 60) for i in range(40)]
    )

    # 300 fake accounts report the victim's mail as abuse; the spammer's farm marks its spam legit.
    attack = [
        Feedback(
            feedback_id=f"a{r}-{i}",
            event_id=f"v{i}",
            label="abuse",
            source="user_report",
            reporter=f"bot{r}@farm.example",
            at=now,
        )
        for r in range(300)
        for i in range(0, 40, 8)
    ] + [
        Feedback(
            feedback_id=f"b{r}-{i}",
            event_id=f"s{i}",
            label="legit",
            source="user_report",
            reporter=f"bot{r}@farm.example",
            at=now,
        )
        for r in range(300)
        for i in range(0, 40, 8)
    ]
    honest = [
        Feedback(
            feedback_id=f"ops-{i}",
            event_id=f"s{i}",
            label="abuse",
            source="ops_review",
            reporter="operator1",
            at=now,
        )
        for i in range(10)
    ]
    labelled = []
    for start in range(0, len(attack), 256):
        batch = _arrivals(attack[start : start + 256], start, now)
        accepted, letters = await join(batch, served, ledger, pseudonymiser, settings.feedback, stats, now)
        assert not letters
        labelled += accepted
    ops, _ = await join(
        _arrivals(honest, len(attack), now), served, ledger, pseudonymiser, settings.feedback, stats, now
    )
    labelled += ops

    cap = settings.feedback.target_daily_cap * settings.feedback.weight_user_report
    against_victim = sum(item.weight for item in labelled if item.row.sender == victim)
    for_spammer = sum(
        item.weight for item in labelled if item.row.sender == spammer and item.feedback.label == "legit"
    )
    assert against_victim <= cap + 1e-9, "training weight bought against the victim is bounded"
    assert for_spammer <= cap + 1e-9, "self-whitewashing is bounded the same way"
    assert sum(i.weight for i in ops) == 10.0, "operators' labels keep their full weight"
    assert stats.feedback_capped >= len(attack) - 2 * settings.feedback.target_daily_cap

    calls = [c for item in labelled for c in reputation_calls(item, keys, 3600, 1800)]
    await store.apply_calls(calls)
    (victim_row,), (spammer_row,) = (
        await store.apply_and_read([features_for("probe-v", now, victim, ["k1.someone"])]),
        await store.apply_and_read([features_for("probe-s", now, spammer, ["k1.someone"])]),
    )
    from warden.features.store.aggregations import AGGREGATES

    names = [a.name for a in AGGREGATES]
    victim_reports = victim_row[names.index("sender_abuse_reports_hl7d")]
    spammer_share = spammer_row[names.index("sender_abuse_share_hl7d")]
    assert victim_reports <= cap + 1e-9
    # Ten operator reports outweigh the capped farm: the spammer's abuse share stays high.
    assert spammer_share >= 10.0 / (10.0 + cap + 1.0) - 1e-9
    await store.close()


async def test_a_label_read_again_from_its_position_is_learned_again_and_a_copy_is_not(
    settings: WardenSettings,
) -> None:
    """A worker killed before its batch was confirmed reads the batch again: its examples come again."""
    assert settings.redis.url is not None
    client = async_client(settings.redis)
    prefix = f"{settings.redis.key_prefix}-again"
    served = ServedRows(client, prefix, 3600)
    ledger = FeedbackLedger(client, prefix, 3600)
    pseudonymiser = Pseudonymiser(settings.privacy.hmac_key, settings.privacy.key_id)
    stats = WorkerStats()
    now = time.time()
    await served.remember([_row("e1", "k1.sender", now - 60)])
    label = Feedback(
        feedback_id="fb-1", event_id="e1", label="abuse", source="ops_review", reporter="op", at=now
    )
    first = _arrivals([label], 7, now)
    copy = _arrivals([label], 8, now)

    async def accepted(items: list[Arrival]) -> int:
        labelled, letters = await join(items, served, ledger, pseudonymiser, settings.feedback, stats, now)
        assert not letters
        return len(labelled)

    assert await accepted(first) == 1
    assert await accepted(first) == 1, "the same label from the same position: its batch was not confirmed"
    assert await accepted(copy) == 0, "a copy of it elsewhere on the topic is a duplicate"
    assert stats.feedback_duplicates == 1
    await client.aclose()
