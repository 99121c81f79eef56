"""Parsing helpers for message content: the visible text of HTML, URLs and their hosts.

Pure functions over strings, used by the content features at ingest and by
the corpus reader that builds mail events. Regular expressions rather than a
full HTML parser: hostile HTML must cost linear time, never raise. Each
pattern is written so that a failed attempt is bounded: a tag or link stops
at the next ``<`` (an opener without a closer is never rescanned from every
later ``<``), and a host name that fails is skipped whole. Every pattern is
checked by ``tests/unit/test_linear_time.py`` (a static ReDoS check and
doubling tests over hostile families).

These run for every mail at ingest, so the hot ones take shortcuts that give
exactly the answer of the plain version (pinned by
``tests/unit/test_extraction_speed_equivalence.py``): case-insensitive
patterns run case-sensitively on lower-cased ASCII text (lower-casing ASCII
keeps every position and word boundary, and no non-ASCII letter can match),
and common URL and host shapes skip ``urlsplit`` and ``ipaddress``.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
import string
import unicodedata
from urllib.parse import urlsplit

#: A tag: ``<``, at most 2,000 characters that are neither ``<`` nor ``>``, then ``>``. (Until issue 17
#: ``<`` was allowed inside, and a ``<`` with no ``>`` in reach cost 2,000 steps at every later ``<``.)
_TAG = re.compile(r"<[^<>]{0,2000}>")
_ENTITY = re.compile(r"&(#\d{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});")
_URL = re.compile(r"""\b(?:https?://|www\.)[^\s<>"'()\[\]{}]{1,2000}""", re.IGNORECASE)
_HREF = re.compile(r"""href\s*=\s*["']?([^"'\s>]{1,2000})""", re.IGNORECASE)
_IMG = re.compile(r"<img\b", re.IGNORECASE)


#: White space beyond ASCII, as ``str.split`` sees it (all below U+3001).
_UNICODE_SPACES = tuple(c for c in map(chr, range(128, 0x3001)) if c.isspace())
#: UTF-8 bytes -> a space for ASCII white space, ``x`` for anything else.
_SPACE_SHAPE = bytes(0x20 if chr(b).isspace() and b < 128 else 0x78 for b in range(256))


def visible_text_head(html: str, head: int) -> tuple[int, str]:
    """The length of an HTML body's visible text (tags and entities dropped, white space collapsed
    to single spaces, stripped) and its first ``head`` characters, without building the whole.

    Joining the words of a hostile body made one string per word (160,000
    ``<a`` cost 10 ms); the length is counted over bytes instead (characters
    less white space, plus one space between words) and only a prefix is
    split and joined.
    """
    text = _ENTITY.sub(" ", _TAG.sub(" ", html))
    shape = text
    if not shape.isascii():
        for space in _UNICODE_SPACES:
            if space in shape:
                shape = shape.replace(space, " ")
    data = _utf8(shape).translate(_SPACE_SHAPE)
    spaces = data.count(b" ")
    words = data.count(b" x") + (data[:1] == b"x")
    length = len(text) - spaces + max(words - 1, 0)
    # The words of a prefix are the first words of the whole (the last maybe cut short), so once
    # they reach ``head`` characters those are the whole's first ``head``.
    size = 2 * head + 64
    while True:
        prefix = " ".join(text[:size].split())
        if len(prefix) >= head or size >= len(text):
            return length, prefix[:head]
        size *= 4


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


#: ``http(s)://`` and a host of word characters, dots and hyphens up to the end of the netloc: for
#: these ``urlsplit`` strips nothing and finds no user, port or brackets, so its hostname is the
#: lower-cased match, unless the host is not ASCII and its NFKC form holds one of ``/?#@:`` (then
#: it refuses the URL).
_PLAIN_HTTP_HOST = re.compile(r"\A[hH][tT][tT][pP][sS]?://([\w.-]*)(?:[/?#]|\Z)")
#: IPv6 needs a colon and IPv4 is ASCII digits and dots, so anything else is no IP.
_NOT_IPV4 = re.compile(r"[^0-9.]")


def url_host(url: str) -> str:
    """The lower-cased host of a URL ("" when it has none or cannot be parsed)."""
    candidate = url if "://" in url[:12] else f"http://{url}"
    plain = _PLAIN_HTTP_HOST.match(candidate)
    if plain is not None:
        host = plain.group(1)
        if host.isascii():
            return host.rstrip(".").lower()
        normal = unicodedata.normalize("NFKC", host)
        if normal != host and any(c in normal for c in "/?#@:"):
            return ""
        return host.rstrip(".").lower()  # (no character lower-cases to ".")
    try:
        host = urlsplit(candidate).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def url_hosts(urls: list[str]) -> tuple[str, ...]:
    """:func:`url_host` of every URL, in order (each distinct URL parsed once)."""
    known: dict[str, str] = {}
    for url in urls:
        if url not in known:
            known[url] = url_host(url)
    return tuple(known[url] for url in urls)


def is_ip_literal(host: str) -> bool:
    """True for hosts written as an IPv4 or IPv6 address."""
    bare = host.strip("[]")
    if ":" not in bare and _NOT_IPV4.search(bare) is not None:
        return False
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return False
    return True


def count_images(html: str) -> int:
    return len(_IMG.findall(html))


def longest_run(text: str, characters: str) -> int:
    """Length of the longest run of characters from ``characters`` in ``text``."""
    table = _run_table(characters)
    if table is None:
        runs = re.findall(f"[{re.escape(characters)}]+", text)
        return max(map(len, runs), default=0)
    # UTF-8 writes an ASCII character as that one byte and never uses such a
    # byte inside another character, so the runs of bytes are the runs of characters.
    return _longest_run_of_marks(_utf8(text).translate(table))


def _longest_run_of_marks(data: bytes) -> int:
    """The longest run of ``!`` in ``data``, by doubling then halving a searched run.

    Each step is one substring search at C speed (about 2 log2 of the answer of
    them); splitting into runs made one object per run (12 ms for ``! ! ! ...``).
    """
    if b"!" not in data:
        return 0
    low = 1
    while b"!" * (low * 2) in data:
        low *= 2
    high = low * 2  # a run of ``high`` is not in ``data``; one of ``low`` is
    while high - low > 1:
        middle = (low + high) // 2
        if b"!" * middle in data:
            low = middle
        else:
            high = middle
    return low


@functools.lru_cache(maxsize=16)
def _run_table(characters: str) -> bytes | None:
    """Bytes of ``characters`` → ``!``, every other byte → space (None unless ASCII)."""
    if not characters or not characters.isascii():
        return None
    keep = characters.encode("ascii")
    return bytes(0x21 if byte in keep else 0x20 for byte in range(256))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


#: ``\b[A-Z]{3,}(?:\s+[A-Z]{3,})+\b``, written to start with a character class (the
#: lookbehind is that ``\b``) so that the regex engine tries a match at capitals only.
_CAPS_RUN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]{2,}(?:\s+[A-Z]{3,})+\b")
#: UTF-8 bytes → ``A`` for a capital, space for white space or any non-ASCII byte, ``.`` else.
_CAPS_SHAPE = bytes(
    0x41 if chr(byte) in string.ascii_uppercase else 0x20 if byte >= 0x80 or chr(byte).isspace() else 0x2E
    for byte in range(256)
)
_CAPS_CANDIDATE = re.compile(rb"AAA +AAA")


def caps_runs(text: str) -> int:
    r"""Runs of two or more words in capitals (``\b[A-Z]{3,}(?:\s+[A-Z]{3,})+\b``)."""
    # Every run shows as AAA, spaces, AAA in the shape of the text: most texts have none.
    if _CAPS_CANDIDATE.search(_utf8(text).translate(_CAPS_SHAPE)) is None:
        return 0
    return len(_CAPS_RUN.findall(text))


#: ``[a-z][a-z0-9'$-]{2,24}|\$\d[\d,.]*|\d{3,}``, written to start with one character
#: class (each lookbehind picks the branch its first character belongs to) so that the
#: regex engine tries a match only where a word can start.
_WORD = re.compile(r"[a-z$\d](?:(?<=[a-z])[a-z0-9'$-]{2,24}|(?<=\$)\d[\d,.]*|(?<=\d)\d{2,})")
#: An ``<a ...>`` tag (attributes without ``<`` or ``>``, as in :data:`_TAG`) and the text after it.
_ANCHOR = re.compile(r"<a\s([^<>]{0,1000})>([^<]{0,300})", re.IGNORECASE)
#: Link parsing looks at the first this-many characters of an HTML body (bounded cost).
_ANCHOR_SCAN = 100_000
_HIDDEN = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01](?:px|pt)?\b|"
    r"<font[^<>]{0,200}size\s*=\s*[\"']?[01]\b",
    re.IGNORECASE,
)
#: :data:`_HIDDEN` for :func:`fold_case` text (its letters are all lower case).
_HIDDEN_LOWER = re.compile(_HIDDEN.pattern)
#: A host name in text: ``(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})`` (group 1), or else a run of
#: labels to skip. When the host pattern fails at the start of such a run it fails at every later
#: position of the run too (each would see the same labels after it), so the second branch consumes
#: the run and the search never restarts inside it: linear, where the plain search is quadratic
#: (1.4 ms for 300 characters of ``a.a.a.``). The first match with group 1 is the plain search's.
_HOST_IN_TEXT = re.compile(
    r"(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})|[a-z0-9-]+(?:\.[a-z0-9-]+)*", re.IGNORECASE
)


def words(text: str, limit: int = 2000) -> list[str]:
    """Lower-cased word tokens (letters, digits, money amounts), at most ``limit``.

    Stops at the ``limit``-th word: a huge subject costs its first words, not all of them.
    """
    return [match.group() for match in itertools.islice(_WORD.finditer(text.lower()), max(0, limit))]


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


def host_in_text(text: str) -> str | None:
    """The first host name written in ``text`` (as ``_HOST_IN_TEXT``'s plain form would find it)."""
    for match in _HOST_IN_TEXT.finditer(text):
        if match.group(1) is not None:
            return match.group(1)
    return None


def anchor_names_other_host(href: str, text: str) -> bool:
    """True when a link's visible text names a host other than the one it points to."""
    named = host_in_text(text)
    if named is None:
        return False
    target = url_host(href)
    shown = named.lower()
    return bool(target) and not (
        target == shown or target.endswith("." + shown) or shown.endswith("." + target)
    )


def fold_case(text: str) -> str:
    """``text`` such that a pattern of lower-case ASCII letters matches it case-sensitively exactly
    where it matches ``text`` ignoring case, at C speed (case-insensitive Unicode matching is far
    slower: ~90 ms for a hostile subject of 480,000 characters).

    Ignoring case, an ASCII letter matches its capital and four other characters: ``\u0130`` and
    ``\u0131`` (i), ``\u017f`` (s) and ``\u212a`` (k). Lower-casing maps every character to one
    character of the same word class, and to an ASCII letter only from a capital or ``\u212a``, except
    ``\u0130`` (two characters); so those three are replaced first and positions and word boundaries
    stay where they were. (Checked over every code point by
    ``tests/unit/test_extraction_speed_equivalence.py``.)
    """
    return text.replace("\u0130", "i").replace("\u0131", "i").replace("\u017f", "s").lower()


def hidden_text_marks(html: str) -> int:
    """Styles that hide text from the reader (display:none, zero-size fonts)."""
    return len(_HIDDEN_LOWER.findall(fold_case(html)))
