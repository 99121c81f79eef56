"""Content features: numbers computed from one raw mail at ingest.

:class:`MailView` parses a mail once (headers, Received chain, links, body
statistics); each :class:`ContentFeature` reads one number off it. The list
:data:`CONTENT` is part of the ordered schema in :mod:`features.definitions`.
Raw text exists only here, inside the ingest stage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from warden.features.ingest.headers import (
    ReceivedHop,
    address_domain_in,
    display_name,
    helo_mismatch,
    is_private_ip,
    parse_date,
    received_hops,
    timezone_minutes,
)
from warden.features.ingest.pseudonym import address_domain
from warden.features.ingest.text import (
    anchor_names_other_host,
    anchors,
    caps_runs,
    count_images,
    fold_case,
    hidden_text_marks,
    is_ip_literal,
    longest_run,
    url_hosts,
    visible_text_head,
)
from warden.streams.records import MailEvent

_SPAM_PHRASES = re.compile(
    r"\b(free|click here|act now|limited time|100%|guarantee[d]?|winner|cash|credit|"
    r"viagra|mortgage|unsubscribe|remove me|no obligation|risk[- ]free|order now|"
    r"earn \$|\$\$\$|money back|special promotion|lowest price|dear friend)\b",
    re.IGNORECASE,
)
#: The same pattern for :func:`~features.ingest.text.fold_case` text (it has no capitals): the same matches.
_SPAM_PHRASES_FOLDED = re.compile(_SPAM_PHRASES.pattern)
_MESSAGE_ID = re.compile(r"^\s*<[^<>@\s]+@([^<>@\s]+)>\s*$")
_REPLY_PREFIX = re.compile(r"^\s*(re|fwd?|aw)\s*:", re.IGNORECASE)
_LIST_HEADERS = frozenset({"list-id", "list-unsubscribe", "list-post", "mailing-list"})
_DROP_DIGITS = str.maketrans("", "", "0123456789")
_ASCII_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LETTERS = _ASCII_UPPER + _ASCII_UPPER.lower()
_ASCII_DIGITS = b"0123456789"
_FOREIGN_CHARSET = re.compile(
    r"charset\s*=\s*[\"']?(gb2312|gbk|big5|koi8|windows-125[1-8]|iso-2022|euc-|ks_c|shift_jis)",
    re.IGNORECASE,
)
_SHORTENERS = frozenset(
    {
        "bit.ly",
        "tinyurl.com",
        "goo.gl",
        "t.co",
        "ow.ly",
        "is.gd",
        "buff.ly",
        "rebrand.ly",
        "tiny.cc",
        "cutt.ly",
        "shorturl.at",
        "rb.gy",
        "x.co",
        "snipurl.com",
        "u.nu",
        "go2.me",
    }
)
#: Top-level domains that carried a large share of abuse in public reports (coarse).
_RISKY_TLDS = frozenset(
    {
        "biz",
        "info",
        "ru",
        "cn",
        "tk",
        "top",
        "xyz",
        "ws",
        "cc",
        "su",
        "ro",
        "kr",
        "tw",
        "br",
        "pw",
        "club",
        "work",
        "click",
        "link",
        "loan",
        "win",
        "bid",
        "download",
    }
)
#: Character statistics look at the first this-many characters of the body.
_SAMPLE = 20_000


@dataclass(frozen=True)
class SampleCounts:
    """Character counts of the body sample, taken once (C speed) for several features."""

    chars: int
    non_ascii: int
    upper: int
    letters: int
    digits: int

    @classmethod
    def of(cls, sample: str) -> SampleCounts:
        # Dropping the non-ASCII characters keeps every ASCII one: the counts are the same.
        ascii_only = sample.encode("ascii", "ignore")
        size = len(ascii_only)
        return cls(
            chars=len(sample),
            non_ascii=len(sample) - size,
            upper=size - len(ascii_only.translate(None, _ASCII_UPPER)),
            letters=size - len(ascii_only.translate(None, _ASCII_LETTERS)),
            digits=size - len(ascii_only.translate(None, _ASCII_DIGITS)),
        )


@dataclass(frozen=True)
class MailView:
    """A mail parsed once for all content features (ingest stage only: holds raw text)."""

    event: MailEvent
    #: Characters of the body: the text, or else the HTML's visible text
    #: (:func:`features.ingest.text.visible_text_head`).
    body_chars: int
    #: The host of every URL of the mail, in order (:func:`features.ingest.text.url_host`).
    hosts: tuple[str, ...]
    headers: dict[str, list[str]]
    sender_domain: str
    hops: tuple[ReceivedHop, ...]
    date: float | None
    links: tuple[tuple[str, str], ...]
    #: The first characters of the body that character statistics look at.
    sample: str
    counts: SampleCounts
    #: Relay IPs of the Received chain that are public, newest hop first (repeats kept).
    public_ips: tuple[str, ...]
    #: How many hops name a private, loopback or link-local relay IP.
    private_ips: int

    @classmethod
    def of(cls, event: MailEvent) -> MailView:
        """Parse ``event`` for the content features; called once per mail at ingest."""
        headers: dict[str, list[str]] = {}
        for name, value in event.headers:
            headers.setdefault(name.lower(), []).append(value)
        if event.text:
            body_chars, sample = len(event.text), event.text[:_SAMPLE]
        else:
            body_chars, sample = visible_text_head(event.html, _SAMPLE)
        hops = tuple(received_hops(headers.get("received", [])))
        private: dict[str, bool] = {}  # per distinct IP: a Received chain repeats its relays
        for hop in hops:
            if hop.ip and hop.ip not in private:
                private[hop.ip] = is_private_ip(hop.ip)
        return cls(
            event=event,
            body_chars=body_chars,
            hosts=url_hosts(event.urls),
            headers=headers,
            sender_domain=address_domain(event.sender),
            hops=hops,
            date=parse_date(headers.get("date", [""])[0]),
            links=tuple(anchors(event.html)),
            sample=sample,
            counts=SampleCounts.of(sample),
            public_ips=tuple(h.ip for h in hops if h.ip and not private[h.ip]),
            private_ips=sum(bool(h.ip) and private[h.ip] for h in hops),
        )

    def header(self, name: str) -> str:
        values = self.headers.get(name, [])
        return values[0] if values else ""


@dataclass(frozen=True)
class ContentFeature:
    """A number computed from one mail alone."""

    name: str
    compute: Callable[[MailView], float]
    doc: str


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(pattern.findall(text))


def _count_chars(text: str, drop: dict[int, int | None]) -> int:
    """How many characters of ``text`` the translation table deletes (C speed)."""
    return len(text) - len(text.translate(drop))


def _non_ascii(text: str) -> int:
    return len(text) - len(text.encode("ascii", "ignore"))


def _upper_ratio(text: str) -> float:
    """Share of ASCII letters that are capitals (counted over bytes: C speed for any text)."""
    counts = SampleCounts.of(text)
    return _ratio(counts.upper, counts.letters)


def spam_phrases(text: str) -> int:
    """Stock spam phrases in ``text``, ignoring case (case-sensitively on folded text: far cheaper)."""
    return _count(_SPAM_PHRASES_FOLDED, fold_case(text))


def _spam_phrases(view: MailView) -> int:
    # The subject's first _SAMPLE characters, as for the body (issue 17: a subject of 480,000
    # characters at a phrase boundary everywhere cost ~40 ms); a longer subject is its own feature.
    return spam_phrases(view.event.subject[:_SAMPLE] + " " + view.sample)


def _domain_differs(view: MailView, header: str) -> float:
    value = view.header(header)
    if not value:
        return 0.0
    domain = address_domain_in(value)
    return 1.0 if not domain else float(domain != view.sender_domain)


def _date_skew_hours(view: MailView) -> float:
    """|Date header - time the first relay received it|, in hours (0 when unknown)."""
    received = next((h.time for h in view.hops if h.time is not None), None)
    if view.date is None or received is None:
        return 0.0
    return min(abs(received - view.date) / 3600.0, 24.0 * 365)


def _odd_timezone(view: MailView) -> float:
    minutes = timezone_minutes(view.header("date"))
    if minutes is None:
        return 0.0
    return float(minutes % 15 != 0 or abs(minutes) > 14 * 60)


def _display_name_trick(view: MailView) -> float:
    """The From display name shows an address on another domain (or any address at all)."""
    name = display_name(view.header("from"))
    shown = address_domain_in(name)
    return float(bool(shown) and shown != view.sender_domain)


def _message_id_foreign(view: MailView) -> float:
    match = _MESSAGE_ID.match(view.header("message-id"))
    if match is None:
        return 0.0
    domain = match.group(1).lower().rstrip(".")
    sender = view.sender_domain
    return float(not (domain.endswith(sender) or sender.endswith(domain.split(".", 1)[-1])))


def _auth(view: MailView, verdict: str) -> float:
    text = " ".join(
        view.headers.get("authentication-results", []) + view.headers.get("received-spf", [])
    ).lower()
    return float(verdict in text)


def _tld(host: str) -> str:
    return host.rsplit(".", 1)[-1] if "." in host else ""


CONTENT: tuple[ContentFeature, ...] = (
    # Subject
    ContentFeature("subject_chars", lambda v: float(len(v.event.subject)), "subject length"),
    ContentFeature(
        "subject_upper_ratio", lambda v: _upper_ratio(v.event.subject), "share of subject letters in capitals"
    ),
    ContentFeature(
        "subject_punct_run",
        lambda v: float(longest_run(v.event.subject, "!?$*")),
        "longest run of ! ? $ * in the subject",
    ),
    ContentFeature(
        "subject_is_reply",
        lambda v: float(bool(_REPLY_PREFIX.match(v.event.subject))),
        "subject starts with Re:/Fwd:",
    ),
    ContentFeature(
        "subject_non_ascii",
        lambda v: float(_non_ascii(v.event.subject)),
        "non-ASCII characters in the subject",
    ),
    # Body
    ContentFeature("body_chars_log", lambda v: math.log1p(v.body_chars), "log body length"),
    ContentFeature("html_chars_log", lambda v: math.log1p(len(v.event.html)), "log HTML length"),
    ContentFeature(
        "html_only",
        lambda v: float(bool(v.event.html) and not v.event.text),
        "HTML body with no plain-text part",
    ),
    ContentFeature(
        "html_share",
        lambda v: _ratio(len(v.event.html), len(v.event.html) + len(v.event.text)),
        "HTML share of the body bytes",
    ),
    ContentFeature(
        "html_hidden_marks",
        lambda v: float(hidden_text_marks(v.event.html[:200_000])),
        "styles that hide text (display:none, zero-size fonts)",
    ),
    ContentFeature(
        "images",
        # In the first 200,000 characters, as for the hidden-text marks (issue 17: 480,000 of "<img"
        # cost ~13 ms, one match object each).
        lambda v: float(count_images(v.event.html[:200_000])),
        "<img> tags",
    ),
    ContentFeature(
        "body_upper_ratio",
        lambda v: _ratio(v.counts.upper, v.counts.letters),
        "share of body letters in capitals",
    ),
    ContentFeature(
        "body_caps_runs", lambda v: float(caps_runs(v.sample)), "runs of two or more words in capitals"
    ),
    ContentFeature(
        "body_exclaims_per_kchar",
        lambda v: 1000.0 * _ratio(v.sample.count("!"), v.counts.chars),
        "exclamation marks per 1,000 body characters",
    ),
    ContentFeature(
        "body_punct_run", lambda v: float(longest_run(v.sample, "!?$")), "longest run of ! ? $ in the body"
    ),
    ContentFeature(
        "body_digit_ratio",
        lambda v: _ratio(v.counts.digits, v.counts.chars),
        "share of digits in the body",
    ),
    ContentFeature(
        "non_ascii_ratio",
        lambda v: _ratio(v.counts.non_ascii, v.counts.chars),
        "share of non-ASCII characters in the body",
    ),
    ContentFeature(
        "foreign_charset",
        lambda v: float(bool(_FOREIGN_CHARSET.search(v.header("content-type")))),
        "declares an East-Asian or Cyrillic character set",
    ),
    ContentFeature(
        "base64_body",
        lambda v: float("base64" in v.header("content-transfer-encoding").lower()),
        "top-level body sent as base64",
    ),
    ContentFeature(
        "spam_phrases",
        lambda v: float(_spam_phrases(v)),
        "count of stock spam phrases",
    ),
    # Links
    ContentFeature("url_count", lambda v: float(len(v.event.urls)), "URLs in the body"),
    ContentFeature("url_hosts", lambda v: float(len(set(v.hosts) - {""})), "distinct URL hosts"),
    ContentFeature(
        "url_ip_literals",
        lambda v: float(sum(map(is_ip_literal, v.hosts))),
        "URLs whose host is an IP address",
    ),
    ContentFeature(
        "url_shorteners",
        lambda v: float(sum(h in _SHORTENERS for h in v.hosts)),
        "URLs on link-shortener hosts",
    ),
    ContentFeature(
        "url_risky_tld_share",
        lambda v: _ratio(sum(_tld(h) in _RISKY_TLDS for h in v.hosts), len(v.hosts)),
        "share of URLs on high-abuse top-level domains",
    ),
    ContentFeature(
        "url_off_sender_share",
        lambda v: _ratio(sum(bool(h) and not h.endswith(v.sender_domain) for h in v.hosts), len(v.hosts)),
        "share of URLs not on the sender's domain",
    ),
    ContentFeature("url_max_chars", lambda v: float(max(map(len, v.event.urls), default=0)), "longest URL"),
    ContentFeature(
        "anchor_host_mismatch",
        lambda v: float(sum(anchor_names_other_host(h, t) for h, t in v.links)),
        "links whose text names another host than their target",
    ),
    # Headers
    ContentFeature("recipients", lambda v: float(len(v.event.recipients)), "recipient count"),
    ContentFeature("received_hops", lambda v: float(len(v.hops)), "Received headers (relay hops)"),
    ContentFeature(
        "received_public_ips",
        lambda v: float(len(v.public_ips)),
        "public relay IPs in the Received chain",
    ),
    ContentFeature(
        "received_private_ips",
        lambda v: float(v.private_ips),
        "private or loopback relay IPs in the Received chain",
    ),
    ContentFeature(
        "helo_mismatches",
        lambda v: float(sum(map(helo_mismatch, v.hops))),
        "relays whose HELO name disagrees with their reverse DNS",
    ),
    ContentFeature(
        "date_skew_hours", _date_skew_hours, "hours between the Date header and the first relay's time"
    ),
    ContentFeature("date_missing", lambda v: float(v.date is None), "no parseable Date header"),
    ContentFeature("date_odd_timezone", _odd_timezone, "Date with an impossible UTC offset"),
    ContentFeature(
        "message_id_ok",
        lambda v: float(bool(_MESSAGE_ID.match(v.header("message-id")))),
        "Message-ID present and well formed",
    ),
    ContentFeature("message_id_foreign", _message_id_foreign, "Message-ID domain unrelated to the sender's"),
    ContentFeature(
        "reply_to_differs",
        lambda v: _domain_differs(v, "reply-to"),
        "Reply-To domain differs from the sender's",
    ),
    ContentFeature(
        "return_path_differs",
        lambda v: _domain_differs(v, "return-path"),
        "Return-Path domain differs from the sender's",
    ),
    ContentFeature(
        "display_name_trick", _display_name_trick, "From display name shows an address on another domain"
    ),
    ContentFeature(
        "list_headers",
        lambda v: float(bool(_LIST_HEADERS & v.headers.keys())),
        "carries mailing-list headers",
    ),
    ContentFeature(
        "has_mailer",
        lambda v: float(bool(v.header("x-mailer") or v.header("user-agent"))),
        "names its mail client",
    ),
    ContentFeature("missing_to", lambda v: float(not v.header("to")), "no To header"),
    ContentFeature("mime_version", lambda v: float(bool(v.header("mime-version"))), "declares MIME-Version"),
    ContentFeature(
        "priority_high",
        lambda v: float(v.header("x-priority").strip()[:1] in ("1", "2")),
        "marked high priority",
    ),
    ContentFeature("auth_pass", lambda v: _auth(v, "pass"), "SPF/DKIM results say pass"),
    ContentFeature(
        "auth_fail", lambda v: max(_auth(v, "fail"), _auth(v, "softfail")), "SPF/DKIM results say fail"
    ),
    ContentFeature(
        "sender_local_digits",
        lambda v: float(_count_chars(v.event.sender.rpartition("@")[0], _DROP_DIGITS)),
        "digits in the sender's local part",
    ),
    ContentFeature("header_count", lambda v: float(len(v.event.headers)), "number of headers"),
)
