"""Parsing helpers for mail headers: the Received chain, dates, addresses.

Pure functions over header strings, used by the content features at ingest.
Hostile headers must cost linear time and never raise.
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
import re
from dataclasses import dataclass

_IP_IN_BRACKETS = re.compile(r"\[(\d{1,3}(?:\.\d{1,3}){3})\]")
_FROM_CLAUSE = re.compile(
    r"^\s*from\s+(\S{1,255})\s*\(([^()\[\]]{0,255}?)\s*\[(\d{1,3}(?:\.\d{1,3}){3})\]", re.IGNORECASE
)
_ADDRESS = re.compile(r"[\w.+-]{1,64}@([\w-]{1,63}(?:\.[\w-]{1,63}){1,8})")
_TIMEZONE = re.compile(r"([+-])(\d{2})(\d{2})\s*(?:\(.*\))?\s*$")
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
    """The display name of a From-style header value."""
    name, _ = email.utils.parseaddr(value[:2000])
    return name


def timezone_minutes(value: str) -> int | None:
    """The UTC offset of a date header in minutes, or None."""
    match = _TIMEZONE.search(value[:200])
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    return sign * (int(match.group(2)) * 60 + int(match.group(3)))
