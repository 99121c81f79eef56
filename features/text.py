"""Parsing helpers for message content: HTML to text, URLs and their hosts.

Pure functions over strings, used by the content features at ingest and by
the corpus reader that builds mail events. Regular expressions rather than a
full HTML parser: hostile HTML must cost linear time, never raise.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_TAG = re.compile(r"<[^>]{0,2000}>")
_ENTITY = re.compile(r"&(#\d{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});")
_SPACE = re.compile(r"\s+")
_URL = re.compile(r"""\b(?:https?://|www\.)[^\s<>"'()\[\]{}]{1,2000}""", re.IGNORECASE)
_HREF = re.compile(r"""href\s*=\s*["']?([^"'\s>]{1,2000})""", re.IGNORECASE)
_IMG = re.compile(r"<img\b", re.IGNORECASE)


def html_to_text(html: str) -> str:
    """Visible text of an HTML body, whitespace collapsed."""
    text = _TAG.sub(" ", html)
    text = _ENTITY.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def extract_urls(text: str, html: str = "", limit: int = 1000) -> list[str]:
    """URLs in a plain-text body and the hrefs of an HTML body, first-seen order, unique."""
    found: dict[str, None] = {}
    for match in _URL.finditer(text):
        found.setdefault(match.group(0).rstrip(".,;:!?"), None)
        if len(found) >= limit:
            return list(found)
    for match in _HREF.finditer(html):
        href = match.group(1)
        if href.lower().startswith(("http://", "https://", "www.")):
            found.setdefault(href, None)
        if len(found) >= limit:
            break
    for match in _URL.finditer(html):
        found.setdefault(match.group(0).rstrip(".,;:!?"), None)
        if len(found) >= limit:
            break
    return list(found)


def url_host(url: str) -> str:
    """The lower-cased host of a URL ("" when it has none or cannot be parsed)."""
    candidate = url if "://" in url[:12] else f"http://{url}"
    try:
        host = urlsplit(candidate).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def is_ip_literal(host: str) -> bool:
    """True for hosts written as an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def count_images(html: str) -> int:
    return len(_IMG.findall(html))


def longest_run(text: str, characters: str) -> int:
    """Length of the longest run of characters from ``characters`` in ``text``."""
    best = run = 0
    for char in text:
        if char in characters:
            run += 1
            best = max(best, run)
        else:
            run = 0
    return best
