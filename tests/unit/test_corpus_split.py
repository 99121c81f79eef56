"""The forward split: a mail's time is its topmost Received header's date (its Date header only when that
is missing or unparsable); all mails sorted by (time, id); the first half trains, the second tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.corpus_fixture import RawMail, hop, message, write_corpus
from warden.streams.settings import CorpusSettings
from warden.streams.sources import corpus


def at(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


#: Crafted messages: (checksum, folder, text, the time the split must give it).
CRAFTED = [
    # Topmost Received wins over a lower hop and over the Date header.
    (
        "c" * 32,
        "easy-ham-1",
        message(
            received=[hop("Tue, 10 Sep 2002 10:00:00 +0200"), hop("Mon, 01 Jan 2001 00:00:00 +0000")],
            date="Sat, 01 Jun 2002 12:00:00 +0000",
        ),
        at(2002, 9, 10, 8, 0, 0),
    ),
    # No Received header: the Date header.
    ("d" * 32, "spam-2", message(date="Wed, 05 Jun 2002 07:30:00 -0000"), at(2002, 6, 5, 7, 30, 0)),
    # Topmost Received unparsable: the Date header, not the next hop.
    (
        "e" * 32,
        "spam-1",
        message(
            received=[hop("sometime last week"), hop("Fri, 01 Nov 2002 00:00:00 +0000")],
            date="Thu, 01 Aug 2002 00:00:00 +0000",
        ),
        at(2002, 8, 1),
    ),
    # Topmost Received without a date (no ';'): the Date header.
    (
        "f" * 32,
        "easy-ham-2",
        message(
            received=["from a.example by b.example with SMTP", hop("Fri, 01 Nov 2002 00:00:00 +0000")],
            date="Mon, 15 Jul 2002 00:00:00 +0000",
        ),
        at(2002, 7, 15),
    ),
    # A broken receiving clock (year 2028) is unparsable too: the Date header.
    (
        "a" * 32,
        "hard-ham-1",
        message(received=[hop("Sat, 01 Jan 2028 00:00:00 +0000")], date="Sun, 01 Sep 2002 00:00:00 +0000"),
        at(2002, 9, 1),
    ),
    # The last ';' of the topmost hop carries the date (a ';' earlier in the hop is not it).
    (
        "b" * 32,
        "spam-2",
        message(
            received=["from x (helo=a;b) by mx.example.net; Sun, 20 Oct 2002 06:00:00 +0000"],
            date="Tue, 01 Jan 2002 00:00:00 +0000",
        ),
        at(2002, 10, 20, 6),
    ),
    # Two mails received in the same second: the event id breaks the tie ("sa-1..." before "sa-9...").
    ("9" * 32, "spam-1", message(received=[hop("Wed, 05 Jun 2002 07:30:00 +0000")]), at(2002, 6, 5, 7, 30)),
    (
        "1" * 32,
        "easy-ham-1",
        message(received=[hop("Wed, 05 Jun 2002 07:30:00 +0000")]),
        at(2002, 6, 5, 7, 30),
    ),
]


@pytest.fixture
def settings(tmp_path: Path) -> CorpusSettings:
    return write_corpus(tmp_path, [RawMail(folder, checksum, text) for checksum, folder, text, _ in CRAFTED])


def test_a_mails_time_is_its_topmost_received_date_and_its_date_header_only_as_a_fallback(
    settings: CorpusSettings,
) -> None:
    times = {m.event.event_id: m.event_time for m in corpus.load(settings)}
    assert times == {f"sa-{checksum[:20]}": expected for checksum, _, _, expected in CRAFTED}


def test_every_mail_sorted_by_time_then_id_the_first_half_trains(settings: CorpusSettings) -> None:
    first, second = corpus.load(settings, corpus.FIRST_HALF), corpus.load(settings, corpus.SECOND_HALF)
    ids = [m.event.event_id for m in first + second]
    # By the expected times above, ties by id; the folders play no part.
    assert ids == [
        "sa-" + "1" * 20,  # 2002-06-05 07:30, tie: lower id first
        "sa-" + "9" * 20,
        "sa-" + "d" * 20,  # 2002-06-05 07:30 too: by id after the two others
        "sa-" + "f" * 20,  # 2002-07-15
        "sa-" + "e" * 20,  # 2002-08-01
        "sa-" + "a" * 20,  # 2002-09-01
        "sa-" + "c" * 20,  # 2002-09-10
        "sa-" + "b" * 20,  # 2002-10-20
    ]
    assert len(first) == len(second) == 4
    assert [m.event.event_id for m in corpus.load(settings)] == ids
    assert max(m.event_time for m in first) <= min(m.event_time for m in second)


def test_halves_are_by_count_and_an_odd_mail_goes_to_the_test_half(settings: CorpusSettings) -> None:
    mails = corpus.load(settings)
    first, second = corpus.split(mails[:7])
    assert [len(first), len(second)] == [3, 4]
    assert first + second == mails[:7]
    # The split sorts whatever order it is given.
    assert corpus.split(list(reversed(mails))) == (mails[:4], mails[4:])
    assert corpus.split([]) == ([], [])
