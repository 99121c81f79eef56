"""Hostile records between good ones, through a real worker: dead letters with reasons, bounded memory.

Four rounds each send the same kinds of hostile record (new bytes each round)
between good corpus mails. Every good mail must be scored, every hostile
record dead-lettered with the expected reason, the worker must log no
traceback, and its resident memory after the last round must stay close to
where it was after the first (it does not grow with the hostile traffic).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tests.integration.outcomes import Outcomes, metrics
from warden.infra.bench import hostile_inputs
from warden.infra.dev.worker_process import wait_healthy, worker_process
from warden.streams import broker
from warden.streams.records import DEAD_LETTER_WHOLE_BYTES, DeadLetter, encode
from warden.streams.settings import WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.replay import replay, send_raw
from warden.streams.topics import Topic, Topics

ROUNDS = 4
GOOD_PER_ROUND = 20
#: Resident memory may grow this much from the end of round 1 to the end of the last round.
RSS_GROWTH_LIMIT_MB = 64


def _event(round_: int, name: str, **changes: Any) -> bytes:
    record: dict[str, Any] = {
        "event_id": f"hostile-{round_}-{name}",
        "timestamp": 1_030_000_000.0,
        "sender": "alice@example.com",
        "recipients": ["bob@example.org"],
        "subject": "hello",
        "text": "hello",
        "urls": [],
        "headers": [],
    }
    record.update(changes)
    return json.dumps(record, ensure_ascii=False).encode()


def hostile(round_: int) -> dict[str, tuple[bytes | None, str]]:
    """Each kind of hostile record (unique bytes per round) with the reason it must get."""
    tag = str(round_).encode()
    return {
        "not-json": (b"{not json " + tag, "not JSON"),
        "not-utf8": (b"\xc3\x28 " + tag, "not UTF-8"),
        "tombstone": (None, "empty record"),
        "wrong-type": (_event(round_, "wrong-type", recipients="bob@example.org"), "recipients"),
        "huge-string": (_event(round_, "huge-string", text="x" * 600_000), "text: longer than"),
        "ten-megabytes": (_event(round_, "ten-megabytes", html="<p>" * 3_400_000), "exceeds the limit"),
        "100k-recipients": (
            _event(round_, "100k", recipients=[f"r{i}@example.org" for i in range(100_000)]),
            "exceeds the limit",
        ),
        "deep-nesting": (
            b'{"event_id": "n' + tag + b'", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "nesting depth exceeds",
        ),
        "absurd-time": (_event(round_, "absurd-time", timestamp=1e18), "timestamp"),
        "homoglyph": (_event(round_, "homoglyph", sender="security@p\u0430ypal.com"), "homoglyph"),
        "rtl-override": (_event(round_, "rtl", urls=["https://example.com/\u202egnp.exe"]), "U+202E"),
        "zero-width": (_event(round_, "zw", recipients=["bob@exa\u200bmple.org"]), "U+200B"),
        "punycode-homoglyph": (_event(round_, "puny", urls=["http://xn--pypal-4ve.com/login"]), "homoglyph"),
        "bad-punycode": (_event(round_, "bad-puny", sender="a@xn--zz-.com"), "punycode"),
    }


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process (VmRSS: now; VmHWM: its peak), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc")


def test_hostile_records_between_good_ones_are_dead_letters_and_memory_stays_bounded(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[: ROUNDS * GOOD_PER_ROUND]
    producer = broker.producer(settings.kafka)
    outcomes = Outcomes(settings)
    rss: list[float] = []
    sent: dict[str, str] = {}  # each hostile record's name, by its SHA-256
    with worker_process(settings, base_env, tmp_path / "worker.log") as worker:
        wait_healthy(settings, worker, timeout_s=90)
        before = _rss_mb(worker.pid)
        for round_ in range(ROUNDS):
            good = [m.event for m in mails[round_ * GOOD_PER_ROUND : (round_ + 1) * GOOD_PER_ROUND]]
            cases = hostile(round_)
            replay(good[: GOOD_PER_ROUND // 2], producer, topics.mail_events)
            send_raw(producer, [(topics.mail_events, name.encode(), raw) for name, (raw, _) in cases.items()])
            replay(good[GOOD_PER_ROUND // 2 :], producer, topics.mail_events)
            sent.update({hashlib.sha256(raw or b"").hexdigest(): name for name, (raw, _) in cases.items()})
            expected_letters = (round_ + 1) * len(cases)
            expected_verdicts = (round_ + 1) * GOOD_PER_ROUND
            outcomes.read_until(
                lambda o, v=expected_verdicts, d=expected_letters: (
                    len(o.verdicts) >= v and sum(map(len, o.dead_letters.values())) >= d
                ),
                timeout_s=120,
            )
            assert worker.poll() is None, "the worker must stay up"
            rss.append(_rss_mb(worker.pid))
        outcomes.drain()
        final = metrics(settings)
        peak = _rss_mb(worker.pid, "VmHWM")
    producer.close()
    outcomes.close()
    letters: list[DeadLetter] = [letter for copies in outcomes.dead_letters.values() for letter in copies]
    log = (tmp_path / "worker.log").read_text(errors="replace")

    print(
        f"worker RSS (MB): {before:.0f} before, {[round(r) for r in rss]} after each round, "
        f"peak {peak:.0f}; {ROUNDS * len(hostile(0))} hostile records, {len(mails)} good"
    )
    # Good records around the hostile ones are scored, once each.
    assert set(outcomes.verdicts) == {m.event.event_id for m in mails}
    assert all(len(copies) == 1 for copies in outcomes.verdicts.values())
    # Every hostile record is one dead letter with the reason for its kind.
    assert len(letters) == ROUNDS * len(hostile(0))
    reasons = {name: reason for name, (_, reason) in hostile(0).items()}
    for letter in letters:
        assert letter.source.topic == topics.mail_events.name
        name = sent[letter.payload_sha256]
        # Bounded: the 10 MB record's letter holds an excerpt; the others hold the record whole.
        assert letter.payload_complete == (letter.payload_bytes <= DEAD_LETTER_WHOLE_BYTES), name
        assert reasons[name] in letter.reason, (name, letter.reason)
        assert not letter.reason.startswith("internal error")
    # (summed over labels: the metrics may split dead letters by reason)
    assert sum(v for k, v in final.items() if k.startswith("warden_dead_letters_total")) == len(letters)
    assert "Traceback" not in log
    # Memory: bounded, not growing with the hostile traffic.
    assert rss[-1] - rss[0] <= RSS_GROWTH_LIMIT_MB, rss


# ---------------------------------------------------------------- issue 17: megabytes, loop lag, deadline


def _megabyte_records(topics: Topics) -> dict[str, tuple[Topic, bytes]]:
    """One 1 MB record of each hostile family that cost the most before issue 17, and their topics."""
    now = time.time() - 60
    picks = {
        "poison-pill": hostile_inputs.POISON_PILL,
        **{f"body-{i}": f for i, f in enumerate(hostile_inputs.BODY_FAMILIES) if i in (0, 2, 4, 16, 17)},
        **{f"header-{i}": f for i, f in enumerate(hostile_inputs.HEADER_FAMILIES) if i in (1, 2, 7, 9)},
        "idn-hosts": hostile_inputs.VALIDATION_FAMILIES[0],
        "punycode-labels": hostile_inputs.VALIDATION_FAMILIES[3],
        "punycode-hosts": hostile_inputs.URL_FAMILIES[2],
    }
    records: dict[str, tuple[Topic, bytes]] = {}
    for name, family in picks.items():
        value = family.make(1_000_000)
        if isinstance(value, bytes):
            records[name] = (topics.mail_events, value)
        else:
            records[name] = (
                topics.mail_events,
                encode(value.model_copy(update={"event_id": name, "timestamp": now})),
            )
    calendar = hostile_inputs.ACTIVITY_FAMILIES[6].make(1_000_000)  # a description of "$1"
    records["calendar-money"] = (
        topics.calendar_events,
        encode(
            calendar.model_copy(
                update={
                    "event_id": "calendar-money",
                    "timestamp": now,
                    "start": now + 3600,
                    "end": now + 7200,
                }
            )
        ),
    )
    return records


def _letters_by_digest(outcomes: Outcomes) -> dict[str, list[DeadLetter]]:
    found: dict[str, list[DeadLetter]] = {}
    for copies in outcomes.dead_letters.values():
        for letter in copies:
            found.setdefault(letter.payload_sha256, []).append(letter)
    return found


def _stalls_over_100ms(samples: dict[str, float]) -> float:
    """Loop-lag probes whose stall (the loop thread's own CPU while late) passed 100 ms."""
    total = samples.get("warden_event_loop_stall_seconds_count", 0.0)
    return total - samples.get('warden_event_loop_stall_seconds_bucket{le="0.1"}', 0.0)


def test_hostile_megabytes_are_scored_or_dead_lettered_and_never_stall_the_loop(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    """Every stage is linear, and records above 64 KiB are ingested in the isolated child: while 1 MB
    records of the worst families pass, no probe of the worker's loop sees its own thread busy for
    100 ms (the stall is CPU time of the loop's thread, so other load on the machine does not count:
    see serving.worker.metrics.LoopLag)."""
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    mails = corpus.load(settings.corpus, corpus.SECOND_HALF)[:30]
    hostile = _megabyte_records(topics)
    producer = broker.producer(settings.kafka)
    outcomes = Outcomes(settings)
    with worker_process(settings, base_env, tmp_path / "worker.log") as worker:
        wait_healthy(settings, worker, timeout_s=90)
        before = metrics(settings)
        replay([m.event for m in mails[:15]], producer, topics.mail_events)
        send_raw(producer, [(topic, name.encode(), raw) for name, (topic, raw) in hostile.items()])
        replay([m.event for m in mails[15:]], producer, topics.mail_events)
        # (Letters of records over 256 KiB hold an excerpt, not JSON: they are found by digest.)
        digests = {name: hashlib.sha256(raw).hexdigest() for name, (_, raw) in hostile.items()}
        outcomes.read_until(
            lambda o: (
                {m.event.event_id for m in mails} <= set(o.verdicts)
                and all(name in o.verdicts or digests[name] in _letters_by_digest(o) for name in hostile)
            ),
            timeout_s=180,
        )
        outcomes.drain()
        after = metrics(settings)
        assert worker.poll() is None, "the worker must stay up"
    producer.close()
    outcomes.close()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    print(
        f"loop lag max {after.get('warden_event_loop_lag_max_seconds', 0):.3f} s, "
        f"stall max {after.get('warden_event_loop_stall_max_seconds', 0):.3f} s (last 10 s); "
        f"probes {after.get('warden_event_loop_lag_seconds_count', 0):.0f}"
    )
    assert {m.event.event_id for m in mails} <= set(outcomes.verdicts)
    # Letters of large records hold an excerpt: they are told apart by the SHA-256 of the whole.
    letters = _letters_by_digest(outcomes)
    for name, (_, raw) in hostile.items():  # each: one verdict or one dead letter, for a reason of its own
        mine = letters.get(hashlib.sha256(raw).hexdigest(), [])
        assert len(outcomes.verdicts.get(name, [])) + len(mine) == 1, name
        for letter in mine:
            assert not letter.reason.startswith("internal error"), (name, letter.reason)
            assert "deadline" not in letter.reason, (name, letter.reason)
    pill = letters[hashlib.sha256(hostile["poison-pill"][1]).hexdigest()]
    assert [letter.reason for letter in pill] == ["payload nesting depth exceeds the limit of 16 levels"]
    assert after["warden_event_loop_stall_seconds_count"] > before.get(
        "warden_event_loop_stall_seconds_count", 0
    )
    assert _stalls_over_100ms(after) == _stalls_over_100ms(before)
    assert "Traceback" not in log


def test_a_record_past_the_ingest_deadline_is_a_dead_letter_and_its_neighbours_are_scored(
    settings: WardenSettings, base_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics.from_settings(settings.kafka)
    broker.ensure_topics(settings.kafka, topics.all())
    # Good mails below the isolation threshold (a larger one would meet the tiny deadline too).
    small = [
        m for m in corpus.load(settings.corpus, corpus.SECOND_HALF)[:40] if len(encode(m.event)) < 60_000
    ]
    mails = small[:10]
    large = {
        f"late-{i}": encode(
            hostile_inputs.BODY_FAMILIES[0]
            .make(500_000)
            .model_copy(update={"event_id": f"late-{i}", "timestamp": time.time() - 60})
        )
        for i in range(2)
    }
    producer = broker.producer(settings.kafka)
    outcomes = Outcomes(settings)
    env = {**base_env, "WARDEN_INGEST__ISOLATION_DEADLINE_S": "0.001"}
    with worker_process(settings, env, tmp_path / "worker.log") as worker:
        wait_healthy(settings, worker, timeout_s=90)
        replay([m.event for m in mails[:5]], producer, topics.mail_events)
        send_raw(producer, [(topics.mail_events, name.encode(), raw) for name, raw in large.items()])
        replay([m.event for m in mails[5:]], producer, topics.mail_events)
        digests = {hashlib.sha256(raw).hexdigest() for raw in large.values()}
        outcomes.read_until(
            lambda o: (
                {m.event.event_id for m in mails} <= set(o.verdicts) and digests <= set(_letters_by_digest(o))
            ),
            timeout_s=180,
        )
        outcomes.drain()
        assert worker.poll() is None
    producer.close()
    outcomes.close()
    assert {m.event.event_id for m in mails} <= set(outcomes.verdicts)
    letters = _letters_by_digest(outcomes)
    for name, raw in large.items():
        assert name not in outcomes.verdicts
        (letter,) = letters[hashlib.sha256(raw).hexdigest()]
        assert "longer than the deadline of 0.001 s" in letter.reason
