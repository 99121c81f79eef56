"""The real peer filters (bogofilter, SpamAssassin, Rspamd) learn and score corpus mails.

Each test is skipped only when its programs are not installed (``make peers``
installs them). The mails are the corpus's own, in order of receipt: 40 learn,
the next 20 are scored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from tests.conftest import CORPUS
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.models.dataset import build_parts
from warden.models.evaluate import Forward, peer_row, static
from warden.models.peers import LabelledMail, peers, run_peers
from warden.models.report import ReportData, render
from warden.models.score_table import read
from warden.streams.settings import PeerSettings, WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.corpus import CorpusMail

TRAIN_EACH, TEST_EACH = 20, 10


@pytest.fixture(scope="module")
def split() -> tuple[list[CorpusMail], list[CorpusMail]]:
    """The first 20 spam and 20 ham of the second half learn; the next 10 of each are scored."""
    mails = corpus.load(CORPUS, corpus.SECOND_HALF)
    spam = [m for m in mails if m.is_spam]
    ham = [m for m in mails if not m.is_spam]
    train = spam[:TRAIN_EACH] + ham[:TRAIN_EACH]
    test = spam[TRAIN_EACH : TRAIN_EACH + TEST_EACH] + ham[TRAIN_EACH : TRAIN_EACH + TEST_EACH]
    return train, test


def _raw(mails: list[CorpusMail]) -> list[bytes]:
    files = corpus.source_files(CORPUS)
    return [corpus.filter_input(files[m.event.event_id].read_bytes()) for m in mails]


def _running_in(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` (the peers' daemons put their files there)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                line = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in line:
                found.append(line)
    return found


@pytest.mark.parametrize("name", ["bogofilter", "spamassassin", "rspamd"])
def test_peer_learns_the_training_mails_and_ranks_spam_above_ham(
    name: str, split: tuple[list[CorpusMail], list[CorpusMail]], tmp_path: Path
) -> None:
    (peer,) = [p for p in peers(PeerSettings()) if p.name == name]
    reason = peer.missing()
    if reason is not None:
        pytest.skip(reason)
    train, test = split
    labelled = [LabelledMail(raw, m.is_spam) for raw, m in zip(_raw(train), train, strict=True)]
    (result,) = run_peers([peer], labelled, _raw(test), tmp_path)

    assert result.status == "ok", result.reason
    assert result.version
    assert result.scores is not None
    assert result.scores.shape == (len(test),)
    assert np.all(np.isfinite(result.scores))
    labels = np.asarray([m.is_spam for m in test])
    assert result.scores[labels].mean() > result.scores[~labels].mean()
    assert (result.train_mails, result.score_mails) == (len(train), len(test))
    assert min(result.train_cpu_s, result.score_cpu_s) > 0
    if name == "spamassassin":
        assert result.notes[0].startswith(f"Bayes learned {TRAIN_EACH} spam and {TRAIN_EACH} ham")
    if name == "rspamd":
        assert "Bayes learned 0 spam" not in result.notes[0]
        assert result.notes[1].startswith(f"run to run: scoring the same {len(test)} mails twice")
    assert _running_in(tmp_path) == []  # every daemon is gone
    assert list(tmp_path.iterdir()) == []  # and every file with the mails' text


def test_static_protocol_with_peers_writes_every_systems_scores_and_reports_the_missing(
    tmp_path: Path, split: tuple[list[CorpusMail], list[CorpusMail]]
) -> None:
    if bogofilter_missing := peers(PeerSettings())[0].missing():
        pytest.skip(bogofilter_missing)
    first = corpus.load(CORPUS, corpus.FIRST_HALF)
    spam, ham = [m for m in first if m.is_spam], [m for m in first if not m.is_spam]
    # The newest of each class, so that the newest 20% (validation) holds both.
    older = sorted(spam[-40:] + ham[-60:], key=corpus.order)
    newer = sorted(split[1], key=corpus.order)
    mails = older + newer
    settings = WardenSettings(
        corpus=CORPUS,
        models={"num_trees": 20},
        # SpamAssassin and Rspamd "not installed" here: the report must say so, not leave them out.
        peers={"spamd": str(tmp_path / "absent-spamd"), "rspamd": str(tmp_path / "absent-rspamd")},
    )
    pseudonymiser = Pseudonymiser(SecretStr("peers-test-key"), "k1")
    training, test = build_parts([older, newer], pseudonymiser)
    halves = Forward(training, test, {m.event.event_id: m for m in mails}, pseudonymiser)
    done = static(settings, halves, 0, with_peers=True)

    assert [(p.name, p.status) for p in done.peers] == [
        ("bogofilter", "ok"),
        ("spamassassin", "missing"),
        ("rspamd", "missing"),
    ]
    assert "absent-spamd is not installed" in done.peers[1].reason
    assert {"roc_auc", "recall_at_0.1pct_fpr", "score_mails_per_cpu_s"} <= set(done.figures["bogofilter"])
    assert done.table is not None
    rows, systems = read(done.table.write(tmp_path / "scores.csv"))
    assert systems == ["warden", "tfidf_logreg", "naive_bayes", "bogofilter"]
    assert len(rows) == len(newer)
    files = corpus.source_files(CORPUS)
    expected = {f"{files[m.event.event_id].parent.name}/{files[m.event.event_id].name}" for m in newer}
    assert {r["file"] for r in rows} == expected
    assert all(np.isfinite(float(r[s])) for r in rows for s in systems)
    assert sorted(r["label"] for r in rows) == ["ham"] * TEST_EACH + ["spam"] * TEST_EACH

    report = ReportData("t", "now", (done.result,), (), (), tuple(peer_row(p) for p in done.peers))
    page = render(report, tmp_path / "report").read_text()
    assert "<h2>Peer filters</h2>" in page
    assert f"missing: {tmp_path}/absent-spamd is not installed" in page
    assert any(m.name == "bogofilter" for m in done.result.models)
