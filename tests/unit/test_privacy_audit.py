"""The audit's detectors: raw addresses, IPs and known subjects found; pseudonyms and numbers not."""

from __future__ import annotations

import io

from features.testing import features_for
from infra.privacy_audit import AuditReport, Family, Finding, Scanner, family_of
from streams.records import encode

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
    from infra.privacy_audit import display_names

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
