"""Checks of raw input records beyond their schema: nesting and identifier tricks.

Called by :func:`features.ingest.decode.decode_mail_event` and
:func:`~features.ingest.decode.decode_activity_event` at ingest, for every kind. Each
check raises :class:`~streams.exceptions.MalformedRecord` with a one-line
reason that names the field and the offending code point or label shape,
never the raw value (reasons travel on the dead-letter topic and into logs).

Identifier tricks refused in addresses and URLs:

- invisible format characters (Unicode category ``Cf``): bidi overrides and
  isolates (U+202A..U+202E, U+2066..U+2069), zero-width space/joiners
  (U+200B..U+200D), word joiner, BOM, soft hyphen; and lone surrogates;
- control characters or whitespace in a domain or URL host;
- domain labels longer than 63 characters or domains longer than 253 (the
  DNS limits), where a domain needs more than ASCII checks;
- ``xn--`` labels that are not valid punycode (IDNA), and more distinct
  ``xn--`` labels in one record than ``IngestSettings.max_punycode_labels``;
- homoglyph labels: one domain label (after punycode decoding) whose letters
  come from more than one script, such as Latin ``paypal`` spelt with a
  Cyrillic ``\u0430``. Han, Hiragana, Katakana and Hangul mix legitimately in
  East Asian names and count as one script.

Control characters elsewhere in a URL (the corpus has spam with ``\\x01`` in
URL paths) are content, not identity, and are left to the content features.

Cost: every step is linear in the record at C speed (``bytes`` methods,
numpy lookups over code points, patterns that never rescan); Python loops
run once per address or URL and once per distinct ``xn--`` label, never per
character. The per-code-point tables (flags and scripts) come from the
running Unicode database, built once per process by :func:`warm` (~0.3 s;
the ingest agent and its child processes call it at start, so no record
pays for it). ``warden bench --only hostile`` measures the worst families.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from warden.features.ingest.text import url_host
from warden.streams.exceptions import MalformedRecord

#: The DNS limits (RFC 1035): characters per label, and per name.
MAX_LABEL_CHARS = 63
MAX_DOMAIN_CHARS = 253
#: East Asian scripts that legitimately share one label (Japanese mixes all of the first three).
_CJK = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC", "BOPOMOFO"})
_PLAIN_DOMAIN = re.compile(r"\A[A-Za-z0-9._-]*\Z")
#: Where ``text.lower()`` would hold "xn--" (no other character lower-cases to x, n or -).
_PUNYCODE_PREFIX = re.compile(r"[xX][nN]--")
_QUOTE = ord('"')
#: +1 for an opening bracket, -1 for a closing one, per byte value.
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


def check_nesting(raw: bytes, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth``, in one pass at C speed (before JSON parsing).

    Brackets inside strings do not count. A backslash escapes the byte after
    it, so removing escaped backslashes and then escaped quotes (each a
    left-to-right ``bytes.replace``) leaves only the quotes that open and
    close strings: a byte is inside a string when an odd number of quotes
    precede it. The depth is then a running sum over the brackets outside
    strings (numpy, no Python loop). Exact for every valid JSON document; on
    invalid JSON the figure may be off, and the decoder refuses it anyway.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    codes = np.frombuffer(raw.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    # Quotes counted modulo 256 (uint8 wraps): the parity is 1 inside a string, 0 outside.
    outside = np.cumsum(codes == _QUOTE, dtype=np.uint8)
    np.bitwise_xor(outside, 1, out=outside)
    np.bitwise_and(outside, 1, out=outside)
    steps = _DEPTH_STEP[codes] * outside
    if steps.size and int(np.cumsum(steps, dtype=np.int32).max()) > max_depth:
        raise MalformedRecord(f"payload nesting depth exceeds the limit of {max_depth} levels")


#: Bits of :attr:`_Tables.flags`.
_INVISIBLE = 1
_CONTROL_OR_SPACE = 2
#: Marks a unit boundary among script codes (no script has this code).
_BOUNDARY = 0xFFFF


@dataclass(frozen=True)
class _Tables:
    """Per-code-point facts from the Unicode database, built once per process (numpy lookups)."""

    #: ``_INVISIBLE``: format characters (Cf) and lone surrogates (Cs); ``_CONTROL_OR_SPACE``: any
    #: control, format, unassigned or private character (C*) or separator (Z*).
    flags: npt.NDArray[np.uint8]
    #: 0 unless a letter, else 1 + the index of the letter's script in ``names``.
    scripts: npt.NDArray[np.uint16]
    names: tuple[str, ...]


def _script_name(char: str) -> str:
    """The script of a letter, from the first word of its Unicode name (CJK scripts as one)."""
    name = unicodedata.name(char, "")
    word = name.split(" ", 1)[0].split("-", 1)[0] if name else "UNNAMED"
    return "CJK" if word in _CJK else word


#: Each general category's flag bits (the letter categories are told apart by the script table).
_CATEGORY_FLAGS = {
    "Cc": _CONTROL_OR_SPACE,
    "Cf": _CONTROL_OR_SPACE | _INVISIBLE,
    "Cs": _CONTROL_OR_SPACE | _INVISIBLE,
    "Co": _CONTROL_OR_SPACE,
    "Cn": _CONTROL_OR_SPACE,
    "Zs": _CONTROL_OR_SPACE,
    "Zl": _CONTROL_OR_SPACE,
    "Zp": _CONTROL_OR_SPACE,
}
_LETTER = 128  # a transient mark while building
_FIRST_WORD = re.compile(r"^[^ \n-]*", re.MULTILINE)


@functools.cache
def _tables() -> _Tables:
    # map() over C functions: the 1.1 million code points are classified without a Python loop.
    marks = defaultdict(int, _CATEGORY_FLAGS | dict.fromkeys(("Lu", "Ll", "Lt", "Lm", "Lo"), _LETTER))
    categories = map(unicodedata.category, map(chr, range(0x110000)))
    flags = np.frombuffer(bytes(map(marks.__getitem__, categories)), dtype=np.uint8).copy()
    letters = np.flatnonzero(flags == _LETTER)
    flags[letters] = 0
    # The first word of each letter's name, as _script_name takes it, all at once.
    letter_names = "\n".join(map(unicodedata.name, map(chr, letters.tolist()), itertools.repeat("")))
    words = [word or "UNNAMED" for word in _FIRST_WORD.findall(letter_names)]
    names: dict[str, int] = {}
    scripts = np.zeros(0x110000, dtype=np.uint16)
    scripts[letters] = [names.setdefault("CJK" if w in _CJK else w, len(names) + 1) for w in words]
    return _Tables(flags=flags, scripts=scripts, names=tuple(names))


def warm() -> None:
    """Build the character tables now (~0.5 s): called when an ingest agent or ingest child starts."""
    _tables()


def _code_points(texts: Sequence[str]) -> tuple[str, npt.NDArray[np.uint32], npt.NDArray[np.intp]]:
    """``texts`` joined by NUL, its code points, and the positions of the NULs that join them."""
    joined = "\x00".join(texts)
    points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    joints = np.cumsum([len(text) + 1 for text in texts[:-1]], dtype=np.intp) - 1
    return joined, points, joints


def _first_flagged(texts: Sequence[str], flag: int) -> str | None:
    """The first character of ``texts`` with ``flag`` (the NULs joining them aside), or None."""
    joined, points, joints = _code_points(texts)
    hits = _tables().flags[points] & flag
    hits[joints] = 0
    found = np.flatnonzero(hits)
    return joined[int(found[0])] if found.size else None


def _code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def _check_invisible(field: str, values: Sequence[str]) -> None:
    if values and (char := _first_flagged(values, _INVISIBLE)) is not None:
        raise MalformedRecord(f"{field}: holds the invisible character {_code_point(char)}")


def _scripts_of(text: str) -> list[str]:
    """The scripts of the letters of ``text`` (called only to word a refusal)."""
    return sorted({_script_name(c) for c in text if unicodedata.category(c)[0] == "L"})


def _check_one_script(field: str, units: Sequence[str], what: str) -> None:
    """Refuse when one of ``units`` (local parts, or decoded labels) mixes scripts."""
    if units:
        joined, points, joints = _code_points(units)
        boundary = np.zeros(len(points), dtype=bool)
        boundary[joints] = True
        _refuse_mixed(field, what, joined, points, boundary)


def _refuse_mixed(
    field: str, what: str, joined: str, points: npt.NDArray[np.uint32], boundary: npt.NDArray[np.bool_]
) -> None:
    """Refuse when a unit of ``joined`` (the text between ``boundary`` marks) mixes scripts.

    All units at once over their code points: the script of every letter,
    and a mark at every unit boundary; in that sequence (other characters
    left out) two neighbouring letters of different scripts are a mixed unit.
    """
    scripts = _tables().scripts[points]
    scripts[boundary] = _BOUNDARY
    marked = np.flatnonzero(scripts)
    sequence = scripts[marked]
    before, after = sequence[:-1], sequence[1:]
    mixed = np.flatnonzero((before != after) & (before != _BOUNDARY) & (after != _BOUNDARY))
    if mixed.size == 0:
        return
    at = int(marked[mixed[0] + 1])
    bounds = np.flatnonzero(boundary)
    stop = int(np.searchsorted(bounds, at))
    start = int(bounds[stop - 1]) + 1 if stop > 0 else 0
    unit = joined[start : int(bounds[stop]) if stop < bounds.size else len(joined)]
    raise MalformedRecord(f"{field}: {what} mixes scripts ({', '.join(_scripts_of(unit))}): a homoglyph")


def _decoded(field: str, label: str) -> str:
    """The Unicode form of an ``xn--`` label (refused when it is not valid punycode).

    The IDNA codec: punycode, nameprep and the round trip; pure Python, up to
    ~0.3 ms for a label of 63 characters, hence the cap on distinct labels.
    """
    try:
        decoded = label.encode("ascii").decode("idna")
    except (UnicodeError, ValueError):
        raise MalformedRecord(f"{field}: a domain label is not valid punycode") from None
    if (char := _first_flagged([decoded], _CONTROL_OR_SPACE)) is not None:
        raise MalformedRecord(f"{field}: a domain holds the control or space character {_code_point(char)}")
    return decoded


def _check_domains(field: str, domains: Sequence[str], decoded: dict[str, str], max_punycode: int) -> None:
    """Refuse domains with spaces, controls, over-long labels, bad punycode or homoglyph labels.

    Every step looks at all the domains at once, over their code points. An
    ``xn--`` label is checked in its decoded form: each distinct one is
    decoded once per record (``decoded``, shared by the record's fields; at
    most ``max_punycode`` of them) and checked on its own, since normal form
    and script are properties of a label alone.
    """
    if not domains:
        return
    if max(map(len, domains)) > MAX_DOMAIN_CHARS:
        raise MalformedRecord(f"{field}: a domain longer than {MAX_DOMAIN_CHARS} characters")
    joined, points, joints = _code_points(domains)
    flags = _tables().flags[points]
    flags[joints] = 0
    found = np.flatnonzero(flags & _CONTROL_OR_SPACE)
    if found.size:
        char = joined[int(found[0])]
        raise MalformedRecord(f"{field}: a domain holds the control or space character {_code_point(char)}")
    # From here no domain holds NUL: the NULs are the joints, and a label ends at "." or NUL.
    boundary = (points == ord(".")) | (points == 0)
    ends = np.flatnonzero(boundary)
    if int(np.diff(ends, prepend=-1, append=len(points)).max()) - 1 > MAX_LABEL_CHARS:
        raise MalformedRecord(f"{field}: a domain label longer than {MAX_LABEL_CHARS} characters")
    unicode_labels: list[str] = []
    if _PUNYCODE_PREFIX.search(joined) is not None:
        lowered = joined.lower()
        # (Lower-casing makes an "xn--" only of "XN--" and the like: no other character lowers to
        # one of those, and none to "." or NUL.) The ASCII labels stay in place: they are normal
        # and of one script, so only their decoded forms need checking.
        labels = dict.fromkeys(lowered.replace("\x00", ".").split("."))
        for label in [label for label in labels if label[:4] == "xn--"]:
            if label not in decoded:
                if len(decoded) >= max_punycode:
                    raise MalformedRecord(
                        f"{field}: more than {max_punycode} distinct punycode (xn--) labels in one record"
                    )
                decoded[label] = _decoded(field, label)
            unicode_labels.append(decoded[label])
    # NUL composes and reorders with nothing: the joined text is normal iff each label is.
    if not unicodedata.is_normalized("NFKC", "\x00".join([joined, *unicode_labels])):
        raise MalformedRecord(f"{field}: a domain label is not in Unicode normal form NFKC (a lookalike)")
    _refuse_mixed(field, "a domain label", joined, points, boundary)
    _check_one_script(field, unicode_labels, "a domain label")


def _check_addresses(
    field: str, addresses: Iterable[str], decoded: dict[str, str], max_punycode: int
) -> None:
    unicode_addresses: list[str] = []
    local_parts: list[str] = []
    domains: list[str] = []
    for address in addresses:
        local, _, domain = address.rpartition("@")
        if address.isascii():  # ASCII: no invisible characters and one script
            if "xn--" in domain.lower() or _PLAIN_DOMAIN.match(domain) is None:
                domains.append(domain)
            continue
        unicode_addresses.append(address)
        local_parts.append(local)
        domains.append(domain)
    _check_invisible(field, unicode_addresses)
    _check_one_script(field, local_parts, "the local part")
    _check_domains(field, domains, decoded, max_punycode)


def _check_urls(field: str, urls: Iterable[str], decoded: dict[str, str], max_punycode: int) -> None:
    unicode_urls: list[str] = []
    hosts = []
    for url in urls:
        if url.isascii():  # ASCII: no invisible characters and one script
            if "xn--" in url.lower():
                hosts.append(url_host(url))
            continue
        unicode_urls.append(url)
        hosts.append(url_host(url))
    _check_invisible(field, unicode_urls)
    _check_domains(field, hosts, decoded, max_punycode)


def check_identifiers(
    addresses: Sequence[tuple[str, Sequence[str]]], urls: Sequence[str], max_punycode_labels: int
) -> None:
    """Refuse an event whose addresses or URLs carry invisible characters, bad punycode or homoglyphs.

    Called at ingest for every event, whatever its kind: ``addresses`` are
    ``(field name, values)`` (a mail's sender and recipients, an invite's
    organizer and invitees, a card's owner, recipients and emails), ``urls``
    the event's URLs. At most ``max_punycode_labels`` distinct ``xn--``
    labels are decoded per record; a record with more is refused.
    """
    decoded: dict[str, str] = {}
    for field, values in addresses:
        _check_addresses(field, values, decoded, max_punycode_labels)
    _check_urls("urls", urls, decoded, max_punycode_labels)
