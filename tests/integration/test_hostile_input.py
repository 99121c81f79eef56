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
from pathlib import Path
from typing import Any

from infra.settings import WardenSettings
from infra.worker_process import wait_healthy, worker_process
from streams import broker, corpus
from streams.records import DEAD_LETTER_WHOLE_BYTES, DeadLetter
from streams.replay import replay, send_raw
from streams.topics import Topics
from tests.integration.outcomes import Outcomes, metrics

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
    mails = corpus.load(settings.corpus, corpus.NEWER)[: ROUNDS * GOOD_PER_ROUND]
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
