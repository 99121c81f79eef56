"""The peer filters' plumbing without the filters: missing or failing programs, parsers, the CSV."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from warden.models.exceptions import PeerError, ReportError
from warden.models.peers import LabelledMail, bogofilter, peers, rspamd, run_peers, spamassassin
from warden.models.peers.common import CpuMeter, run
from warden.models.score_table import FIXED_COLUMNS, ScoreTable, read
from warden.streams.settings import PeerSettings
from warden.streams.sources.corpus import filter_input

MAIL = b"From: a@example.org\nTo: b@example.org\nSubject: hi\n\nhello\n"


def test_a_peer_whose_program_is_absent_is_reported_missing_with_the_reason(tmp_path: Path) -> None:
    settings = PeerSettings(
        bogofilter=str(tmp_path / "no-bogofilter"), spamd="no-such-spamd-here", rspamc="no-such-rspamc-here"
    )
    results = run_peers(peers(settings), [LabelledMail(MAIL, True)], [MAIL], tmp_path / "work")
    assert [r.name for r in results] == ["bogofilter", "spamassassin", "rspamd"]
    assert [r.status for r in results] == ["missing"] * 3
    assert "no-bogofilter is not installed" in results[0].reason
    assert "no-such-spamd-here is not installed" in results[1].reason
    assert "no-such-rspamc-here is not installed" in results[2].reason
    assert all(r.scores is None for r in results)


def test_a_peer_whose_program_fails_is_reported_failed_not_raised(tmp_path: Path) -> None:
    settings = PeerSettings(bogofilter="false")  # installed, but exits 1 on every call
    (result,) = run_peers(peers(settings)[:1], [LabelledMail(MAIL, True)], [MAIL], tmp_path / "work")
    assert result.status == "failed"
    assert "false exited with 1" in result.reason
    assert list((tmp_path / "work").iterdir()) == []  # its private folder (with the mails) is gone


def test_child_cpu_is_measured() -> None:
    meter = CpuMeter()
    run(["python3", "-c", "sum(range(3_000_000))"], 60)
    assert meter.elapsed() > 0


def test_filter_input_drops_the_mbox_line_and_the_collectors_spam_headers_only() -> None:
    raw = (
        b"From someone  Tue Aug  6 11:51:02 2002\n"
        b"Received: from x\n\tby y; Tue, 6 Aug 2002 06:48:09 -0400\n"
        b"X-Spam-Status: Yes, score=9.1\n\ttests=A,B\n"
        b"x-spam-level: ****\n"
        b"Subject: X-Spam-Status is not a header here\n"
        b"\n"
        b"X-Spam-Status: body text stays\n"
    )
    assert filter_input(raw) == (
        b"Received: from x\n\tby y; Tue, 6 Aug 2002 06:48:09 -0400\n"
        b"Subject: X-Spam-Status is not a header here\n"
        b"\n"
        b"X-Spam-Status: body text stays\n"
    )
    crlf = b"X-Spam-Flag: YES\r\nSubject: s\r\n\r\nX-Spam-Flag: body\r\n"
    assert filter_input(crlf) == b"Subject: s\r\n\r\nX-Spam-Flag: body\r\n"


def test_filter_input_is_linear_in_a_hostile_header_block() -> None:
    def cost(lines: int) -> float:
        raw = b"X-Spam-A: 1\n" + b"\t:\n" * lines + b"X:" * lines + b"\n\nbody"
        start = time.process_time()
        for _ in range(3):
            filter_input(raw)
        return time.process_time() - start

    cost(50_000)
    assert cost(400_000) / cost(200_000) < 3.0


def test_bogofilter_output_is_read_per_file_and_a_missing_file_is_an_error(tmp_path: Path) -> None:
    paths = [tmp_path / "a b.eml", tmp_path / "c.eml"]
    output = f"{paths[1]} 0.9999999999990092\n{paths[0]} 0.0000000000000000\n".encode()
    assert bogofilter.parse_scores(output, paths).tolist() == [0.0, 0.9999999999990092]
    with pytest.raises(PeerError, match="no spamicity for 1 mails"):
        bogofilter.parse_scores(output, [*paths, tmp_path / "d.eml"])
    with pytest.raises(PeerError, match="unreadable"):
        bogofilter.parse_scores(b"x.eml nan-ish\n", paths)


def test_spamassassin_total_is_the_sum_of_the_rules_and_must_match_its_printed_score() -> None:
    headers = (
        b"X-Spam-Tests: BAYES_99=3.5,HTML_MESSAGE=0.001,\n\tMAILING_LIST_MULTI=-1\n"
        b"X-Spam-Status: Yes, score=2.5 required=5.0 tests=BAYES_99,\n\tHTML_MESSAGE autolearn=disabled\n"
        b"Subject: s\n\nbody\n"
    )
    assert spamassassin.total_score(headers, "m") == pytest.approx(2.501)
    none = b"X-Spam-Tests: none\nX-Spam-Status: No, score=0.0 required=5.0 tests=none\n\nbody"
    assert spamassassin.total_score(none, "m") == 0.0
    with pytest.raises(PeerError, match="add up to"):
        spamassassin.total_score(headers.replace(b"score=2.5", b"score=7.5"), "m")
    with pytest.raises(PeerError, match="without its"):
        spamassassin.total_score(b"Subject: s\n\nbody", "m")
    magic = b"0.000          0       1396          0  non-token data: nspam\n"
    assert spamassassin.learned_counts(magic) == {"nspam": 1396}


def test_rspamd_replies_are_read_per_file_and_an_error_reply_is_an_error(tmp_path: Path) -> None:
    paths = [tmp_path / "a.eml", tmp_path / "b.eml"]
    replies = [{"score": 3.5, "filename": str(paths[1])}, {"score": -1.25, "filename": str(paths[0])}]
    output = "\n".join(json.dumps(r, indent=4) for r in replies).encode()
    assert rspamd.parse_scores(output, paths).tolist() == [-1.25, 3.5]
    failed = json.dumps({"error": "timeout", "filename": str(paths[0])}).encode()
    with pytest.raises(PeerError, match=r"did not score a\.eml: timeout"):
        rspamd.parse_scores(failed, paths)
    with pytest.raises(PeerError, match="no score for 1 mails"):
        rspamd.parse_scores(output, [*paths, tmp_path / "c.eml"])


def test_the_score_csv_holds_every_mail_and_every_system(tmp_path: Path) -> None:
    table = ScoreTable(
        files=["spam-2/00001.x.txt", ""],
        event_ids=["sa-1", "m2"],
        labels=np.asarray([1, 0], dtype=np.int8),
        times=np.asarray([1_030_000_000.0, 1_030_000_060.5]),
        scores={"warden": np.asarray([0.9, 0.1]), "spamassassin": np.asarray([12.301, -1.0])},
    )
    rows, systems = read(table.write(tmp_path / "scores.csv"))
    assert systems == ["warden", "spamassassin"]
    assert [r["label"] for r in rows] == ["spam", "ham"]
    assert rows[0]["file"] == "spam-2/00001.x.txt"
    assert rows[1]["time"] == "2002-08-22T07:07:40+00:00"
    assert [float(r["spamassassin"]) for r in rows] == [12.301, -1.0]
    with pytest.raises(ReportError, match="differ in length"):
        ScoreTable(["a"], ["e1", "e2"], np.zeros(2), np.zeros(2), {"w": np.zeros(2)}).write(
            tmp_path / "x.csv"
        )
    with pytest.raises(ReportError, match="fixed column"):
        ScoreTable(["a"], ["e"], np.zeros(1), np.zeros(1), {FIXED_COLUMNS[2]: np.zeros(1)}).write(
            tmp_path / "y.csv"
        )
