"""The audit's detectors: raw addresses, IPs and known subjects found; pseudonyms and numbers not."""

from __future__ import annotations

import io
from pathlib import Path

from warden.features.privacy.findings import AuditReport, Family, Finding, Scanner, family_of
from warden.features.testing import features_for
from warden.streams.records import encode

SUBJECTS = ["Re: Your mortgage approval is waiting", "Hi", "[SA] bug 1234 in spamd"]


def test_raw_identifiers_and_known_subjects_are_found_and_masked() -> None:
    scanner = Scanner(SUBJECTS)
    data = b'{"from": "Alice.Smith@Example.COM", "relay": "193.120.14.2", '
    data += b'"s": "YOUR Mortgage approval is WAITING!"}'
    findings = list(scanner.scan("topic x", data))
    assert sorted(f.kind for f in findings) == ["address", "ip", "subject"]
    shown = " ".join(f.line() for f in findings)
    assert "Alice.Smith" not in shown
    assert "193.120" not in shown
    assert "mortgage" not in shown.lower()


def test_display_names_are_found_as_words() -> None:
    from warden.features.privacy.audit import display_names

    names = display_names([("From", '"Brian Chapman" <b@x.org>'), ("To", "Robin Hill <r@y.org>, z@z.org")])
    assert names == ["Brian Chapman", "Robin Hill"]
    scanner = Scanner((), [*names, "Al", "Bo Li"])  # too short to be told from ordinary words
    found = list(scanner.scan("log", b"user BRIAN  chapman reported; robin-hill too; al bo li"))
    assert [f.kind for f in found] == ["name", "name"]


def test_derived_records_raise_nothing() -> None:
    scanner = Scanner(SUBJECTS)
    record = encode(features_for("e-1", 1_700_000_000.25, "k1.9f2c0a", ["k1.77ab"], sending_ip="k1.0c1d"))
    assert list(scanner.scan("topic mail.features", record)) == []
    assert list(scanner.scan("log", b"version 1.2.3 at 0.25 ms; 1700000000.25; 10.5.6")) == []
    assert list(scanner.scan("log", b"a 'spam' mail about your bug")) == []  # too short a subject to match


def test_key_families_blank_pseudonyms_ids_and_buckets() -> None:
    assert family_of("w1:{a:k1.9f2c}:sender:memo:472193", "w1") == "{a:*}:sender:memo:#"
    assert family_of("w1:{u:k1.77}:url_domain:hll:senders:1234", "w1") == "{u:*}:url_domain:hll:senders:#"
    assert family_of("w1:{e:ev-42}:served", "w1") == "{e:*}:served"
    assert family_of("w1:{a:k1.9f2c}:sender:w86400", "w1") == "{a:*}:sender:w86400"


def test_report_prints_families_and_fails_on_findings() -> None:
    report = AuditReport()
    family = Family()
    family.add(100)
    family.add(-1)
    report.families["{a:*}:sender:first"] = family
    report.findings.append(Finding("redis {a:*}:sender:first", "no-ttl", "w1…(30 chars)"))
    out = io.StringIO()
    report.write(out)
    assert not report.passed
    assert "{a:*}:sender:first" in out.getvalue()
    assert "privacy audit FAILED with 1 finding(s)" in out.getvalue()


def test_only_a_full_clean_read_passes() -> None:
    full = AuditReport(scanned={"redis keys": 10, "topic verdicts": 2_500})
    assert full.passed
    assert full.verdict() == "PASSED (every configured store read in full)"

    sampled = AuditReport(scanned={"redis keys": 10}, sampled={"topic verdicts": (2_000, 6_333)})
    assert sampled.clean
    assert not sampled.passed
    out = io.StringIO()
    sampled.write(out)
    assert "PASSED" not in out.getvalue()
    assert "SAMPLED: topic verdicts: the first 2,000 of 6,333 records" in out.getvalue()
    assert out.getvalue().endswith(
        "privacy audit found nothing in a PARTIAL read, not a pass: topic verdicts 2,000 of 6,333 records\n"
    )

    skipped = AuditReport(skipped=["derived topics"])
    assert skipped.clean
    assert not skipped.passed
    assert "derived topics skipped" in skipped.verdict()

    unread = AuditReport(unread=["redis cluster 10.0.0.1:7000: Connection refused"])
    assert not unread.clean
    assert not unread.passed
    assert unread.verdict() == "FAILED with 1 place(s) not read"
    unread.findings.append(Finding("redis {a:*}:x", "no-ttl", "w1…(9 chars)"))
    out = io.StringIO()
    unread.write(out)
    assert "NOT READ: redis cluster 10.0.0.1:7000: Connection refused" in out.getvalue()
    assert out.getvalue().endswith("privacy audit FAILED with 1 finding(s) and 1 place(s) not read\n")


def test_a_log_that_cannot_be_read_is_not_read_not_skipped(tmp_path: Path) -> None:
    from warden.features.privacy.audit import audit_files

    present = tmp_path / "worker.log"
    present.write_text("scored 3 events\n")
    report = AuditReport()
    audit_files([present, tmp_path / "gone.log"], "log", Scanner(()), report)
    assert report.scanned["log files"] == 1
    assert report.unread == [f"log {tmp_path / 'gone.log'}: No such file or directory"]
