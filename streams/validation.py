"""Checks of raw input records beyond their schema: nesting and identifier tricks.

Called by :func:`streams.records.decode_mail_event` at ingest. Each check
raises :class:`~streams.exceptions.MalformedRecord` with a one-line reason
that names the field and the offending code point or label shape, never the
raw value (reasons travel on the dead-letter topic and into logs).

Identifier tricks refused in addresses and URLs:

- invisible format characters (Unicode category ``Cf``): bidi overrides and
  isolates (U+202A..U+202E, U+2066..U+2069), zero-width space/joiners
  (U+200B..U+200D), word joiner, BOM, soft hyphen; and lone surrogates;
- control characters or whitespace in a domain or URL host;
- ``xn--`` labels that are not valid punycode (IDNA);
- homoglyph labels: one domain label (after punycode decoding) whose letters
  come from more than one script, such as Latin ``paypal`` spelt with a
  Cyrillic ``\u0430``. Han, Hiragana, Katakana and Hangul mix legitimately in
  East Asian names and count as one script.

Control characters elsewhere in a URL (the corpus has spam with ``\\x01`` in
URL paths) are content, not identity, and are left to the content features.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from features.text import url_host
from streams.exceptions import MalformedRecord

#: East Asian scripts that legitimately share one label (Japanese mixes all of the first three).
_CJK = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC", "BOPOMOFO"})
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9._-]*\Z")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_nesting(raw: bytes, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` (cheap when there are few brackets)."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > max_depth:
                raise MalformedRecord(f"payload nesting depth exceeds the limit of {max_depth} levels")
        else:
            depth -= 1


def _code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def _script(char: str) -> str | None:
    """The script of a letter, from its Unicode name (None for digits, marks and punctuation)."""
    if not unicodedata.category(char).startswith("L"):
        return None
    name = unicodedata.name(char, "")
    word = name.split(" ", 1)[0].split("-", 1)[0] if name else "UNNAMED"
    return "CJK" if word in _CJK else word


def _check_invisible(field: str, value: str) -> None:
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cf", "Cs"):
            raise MalformedRecord(f"{field}: holds the invisible character {_code_point(char)}")


def _check_scripts(field: str, text: str, what: str) -> None:
    scripts = {script for char in text if (script := _script(char)) is not None}
    if len(scripts) > 1:
        raise MalformedRecord(f"{field}: {what} mixes scripts ({', '.join(sorted(scripts))}): a homoglyph")


def _check_label(field: str, label: str) -> None:
    for char in label:
        if unicodedata.category(char)[0] in "CZ":
            raise MalformedRecord(
                f"{field}: a domain holds the control or space character {_code_point(char)}"
            )
    if label[:4].lower() == "xn--":
        try:
            label = label.encode("ascii").decode("idna")
        except (UnicodeError, ValueError):
            raise MalformedRecord(f"{field}: a domain label is not valid punycode") from None
    if unicodedata.normalize("NFKC", label) != label:
        raise MalformedRecord(f"{field}: a domain label is not in Unicode normal form NFKC (a lookalike)")
    _check_scripts(field, label, "a domain label")


def _check_domain(field: str, domain: str) -> None:
    for label in domain.split("."):
        if label:
            _check_label(field, label)


def check_addresses(field: str, addresses: Iterable[str]) -> None:
    """Refuse addresses with invisible characters, bad punycode or homoglyphs.

    Called at ingest for the sender and the recipients of every mail event.
    """
    for address in addresses:
        local, _, domain = address.rpartition("@")
        if address.isascii():
            if "xn--" in domain.lower() or _PLAIN_DOMAIN.match(domain) is None:
                _check_domain(field, domain)
            continue  # ASCII: no invisible characters and one script
        _check_invisible(field, address)
        _check_scripts(field, local, "the local part")
        _check_domain(field, domain)


def check_urls(field: str, urls: Iterable[str]) -> None:
    """Refuse URLs with invisible characters, or hosts with bad punycode or homoglyphs.

    Called at ingest for the URLs of every mail event.
    """
    for url in urls:
        if url.isascii() and "xn--" not in url.lower():
            continue  # ASCII without punycode: no invisible characters and one script
        _check_invisible(field, url)
        _check_domain(field, url_host(url))
