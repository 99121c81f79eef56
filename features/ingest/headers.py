"""Parsing helpers for mail headers: the Received chain, dates, addresses.

Pure functions over header strings, used by the content features at ingest.
Hostile headers must cost linear time and never raise. Each function looks
at a bounded head of a header value (Received: 2,000 characters, the date
after its ``;``: 100, a Date header: 200), and the standard library's
parsers are handed only what they are known to handle in bounded time (see
:func:`display_name`).
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
import re
from dataclasses import dataclass

_IP_IN_BRACKETS = re.compile(r"\[(\d{1,3}(?:\.\d{1,3}){3})\]")
#: ``from HELO (rDNS [IP]``. The rDNS part is written to end on a non-space so that the white space
#: before ``[`` has one reading: the lazy ``([^()\[\]]{0,255}?)\s*\[`` it replaces gives the same
#: groups, but retried every split of that white space (~65,000 steps for one crafted header).
_FROM_CLAUSE = re.compile(
    r"^\s*from\s+(\S{1,255})\s*\(((?:[^()\[\]]{0,254}[^()\[\]\s])?)\s*\[(\d{1,3}(?:\.\d{1,3}){3})\]",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"[\w.+-]{1,64}@([\w-]{1,63}(?:\.[\w-]{1,63}){1,8})")
#: A UTC offset; :func:`timezone_minutes` takes the first one followed by nothing but a comment.
_OFFSET = re.compile(r"[+-]\d{4}")
_SPACES = re.compile(r"\s*")
#: ``email.utils.parseaddr`` recurses once per group (``:``) or comment (``(``) it opens; a value
#: with more of them than this is not handed to it (2,000 of either exhausted the stack).
_MAX_ADDRESS_NESTING = 32
_ADDRESS_HEAD = 2000
#: An IPv4 address as ``ipaddress`` accepts it when it has no octet above 255
#: (ASCII digits, no leading zeros).
_DOTTED_QUAD = re.compile(r"\.".join([r"(0|[1-9][0-9]{0,2})"] * 4))


@dataclass(frozen=True)
class ReceivedHop:
    """What one Received header says about the relay that handed the mail on."""

    helo: str
    rdns: str
    ip: str
    time: float | None


def parse_date(value: str) -> float | None:
    """Epoch seconds of an RFC 2822 date, or None when it does not parse."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    try:
        stamp = parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    return stamp if math.isfinite(stamp) else None


def received_hops(values: list[str]) -> list[ReceivedHop]:
    """The Received chain, topmost (newest) first, as far as each header parses."""
    hops = []
    for value in values[:50]:
        clause = _FROM_CLAUSE.search(value[:2000])
        time = parse_date(value.rpartition(";")[2].strip()[:100])
        if clause is not None:
            hops.append(
                ReceivedHop(clause.group(1).lower(), clause.group(2).strip().lower(), clause.group(3), time)
            )
        else:
            ip = _IP_IN_BRACKETS.search(value[:2000])
            hops.append(ReceivedHop("", "", ip.group(1) if ip else "", time))
    return hops


def is_private_ip(ip: str) -> bool:
    """True for loopback, private and link-local IPv4 addresses."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    quad = _DOTTED_QUAD.fullmatch(ip)
    if quad is not None:  # the usual form: read here, far cheaper than ipaddress's parser
        octets = [int(octet) for octet in quad.groups()]
        if max(octets) > 255:
            return False
        address = ipaddress.IPv4Address(int.from_bytes(bytes(octets), "big"))
    else:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
    return address.is_private or address.is_loopback or address.is_link_local


def helo_mismatch(hop: ReceivedHop) -> bool:
    """True when a relay's HELO name and its reverse DNS name disagree on the domain."""
    if not hop.helo or not hop.rdns or hop.rdns in ("unknown", "may be forged"):
        return bool(hop.helo) and hop.rdns in ("", "unknown")
    helo = hop.helo.rsplit(".", 2)[-2:]
    rdns = hop.rdns.split()[0].rsplit(".", 2)[-2:]
    return helo != rdns


def address_domain_in(value: str) -> str:
    """The domain of the first address in a header value ("" when none)."""
    match = _ADDRESS.search(value[:2000])
    return match.group(1).lower() if match else ""


def display_name(value: str) -> str:
    """The display name of a From-style header value ("" when it is not parsed).

    ``email.utils.parseaddr`` is pure Python, slices its input once per token
    (CPython issue 136063) and recurses per nested group or comment: it gets
    the first 2,000 characters, and only when they open at most 32 groups or
    comments (deeper, it raised RecursionError, and the mail was dead-lettered
    as an internal error). Its worst case over that head is a few milliseconds.
    """
    head = value[:_ADDRESS_HEAD]
    if head.count("(") + head.count(":") > _MAX_ADDRESS_NESTING:
        return ""
    name, _ = email.utils.parseaddr(head)
    return name


def timezone_minutes(value: str) -> int | None:
    r"""The UTC offset of a date header in minutes, or None.

    The first ``[+-]HHMM`` in the first 200 characters that is followed only
    by white space and at most one comment on one line: what the pattern
    ``([+-])(\d{2})(\d{2})\s*(?:\(.*\))?\s*$`` finds, in one pass (the pattern
    rescanned the tail from every offset).
    """
    head = value[:200]
    tail = head.rstrip()
    closes = tail.endswith(")")
    newline = tail.rfind("\n")  # a comment cannot span a line break (``.`` stops at one)
    for match in _OFFSET.finditer(tail):
        # White space after the offset (the runs after different offsets never overlap: linear).
        spaces = _SPACES.match(tail, match.end())
        after = spaces.end() if spaces is not None else match.end()
        if after == len(tail) or (
            closes and tail[after] == "(" and after > newline and len(tail) - after >= 2
        ):
            offset = match.group()
            sign = -1 if offset[0] == "-" else 1
            return sign * (int(offset[1:3]) * 60 + int(offset[3:5]))
    return None
