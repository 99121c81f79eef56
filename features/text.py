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
    runs = re.findall(f"[{re.escape(characters)}]+", text)
    return max(map(len, runs), default=0)


_WORD = re.compile(r"[a-z][a-z0-9'$-]{2,24}|\$\d[\d,.]*|\d{3,}")
_ANCHOR = re.compile(r"<a\s([^>]{0,1000})>([^<]{0,300})", re.IGNORECASE)
#: Link parsing looks at the first this-many characters of an HTML body (bounded cost).
_ANCHOR_SCAN = 100_000
_HIDDEN = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01](?:px|pt)?\b|"
    r"<font[^>]{0,200}size\s*=\s*[\"']?[01]\b",
    re.IGNORECASE,
)
_HOST_IN_TEXT = re.compile(r"(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})", re.IGNORECASE)


def words(text: str, limit: int = 2000) -> list[str]:
    """Lower-cased word tokens (letters, digits, money amounts), at most ``limit``."""
    return _WORD.findall(text.lower())[:limit]


def anchors(html: str, limit: int = 200) -> list[tuple[str, str]]:
    """``(href, visible text)`` of the links in an HTML body."""
    found = []
    for match in _ANCHOR.finditer(html[:_ANCHOR_SCAN]):
        href = _HREF.search(match.group(1))
        if href is None:
            continue
        found.append((href.group(1), match.group(2).strip()))
        if len(found) >= limit:
            break
    return found


def anchor_names_other_host(href: str, text: str) -> bool:
    """True when a link's visible text names a host other than the one it points to."""
    named = _HOST_IN_TEXT.search(text)
    if named is None:
        return False
    target = url_host(href)
    shown = named.group(1).lower()
    return bool(target) and not (
        target == shown or target.endswith("." + shown) or shown.endswith("." + target)
    )


def hidden_text_marks(html: str) -> int:
    """Styles that hide text from the reader (display:none, zero-size fonts)."""
    return len(_HIDDEN.findall(html))
