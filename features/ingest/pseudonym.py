"""Keyed-HMAC pseudonyms for raw identifiers, with one key per domain and key rotation.

Every identifier that leaves the ingest stage (addresses, domains, IPs, URL
hosts, account ids) is replaced by ``<key id>.<hex>``: HMAC-SHA256 under the
key of its pseudonymisation domain, truncated to 128 bits. The same
identifier always maps to the same pseudonym under one key, so aggregates
still join; without the key a pseudonym cannot be reversed or tested against
a guess. Identifiers are normalised first so that trivial variants (case,
surrounding spaces, angle brackets) do not split an entity.

Keys come in *generations* (:class:`KeyRing`): each generation holds one key
per domain, each with its own id, and starts at a time (``since``). Rotation
adds a generation. For ``grace_seconds`` after a generation starts, ingest
serves the previous generation's pseudonyms (the aggregates read stay
continuous) and *links* every event to the new generation's pseudonyms, which
the feature store writes too (:func:`features.store.operations.plan`), so the new
generation's aggregates fill up before they are read. After the grace period
ingest serves the new generation alone and the old keys expire with their TTL.
A new generation must change every domain's key id except ``token`` (token
buckets are model inputs, not stored identifiers: rotating that key means
training a new model), so no Redis key is written by both generations.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal, get_args

from pydantic import SecretStr

from warden.features.exceptions import PseudonymKeyError
from warden.streams.settings import KEY_HINT, PrivacySettings, key_problem

Domain = Literal["address", "domain", "ip", "url_host", "account", "token"]
_DOMAINS: tuple[Domain, ...] = get_args(Domain)
#: The label each domain's key is derived under from a single secret (``host`` kept for url_host
#: so pseudonyms made before the domain was renamed still match).
_LABELS: dict[Domain, str] = {d: ("host" if d == "url_host" else d) for d in _DOMAINS}
_KEY_ID = r"^[A-Za-z0-9_-]{1,16}$"


def normalise_address(address: str) -> str:
    """``' <Alice@Example.COM> '`` → ``'alice@example.com'``."""
    value = address.strip().strip("<>").strip().lower()
    return value.rstrip(".")


def address_domain(address: str) -> str:
    """The domain part of an address, normalised (empty if there is none)."""
    return normalise_address(address).rpartition("@")[2]


@dataclass(frozen=True)
class DomainKey:
    """One domain's key: its id (carried in every pseudonym) and its secret (never shown)."""

    key_id: str
    secret: SecretStr

    def __post_init__(self) -> None:
        if not re.fullmatch(_KEY_ID, self.key_id):
            raise PseudonymKeyError(f"key id {self.key_id!r} must match {_KEY_ID}")
        if len(self.secret.get_secret_value()) < 16:
            raise PseudonymKeyError(f"key {self.key_id!r} is shorter than 16 characters")


class Pseudonymiser:
    """Maps raw identifiers to pseudonyms under one key.

    Built once at the entry point from the privacy settings and passed to the
    ingest stage; the key never leaves this object and is never logged.
    """

    def __init__(self, key: SecretStr, key_id: str) -> None:
        """One secret for every domain: each domain's key is derived from it; all carry ``key_id``."""
        secret = key.get_secret_value().encode("utf-8")
        derived = {
            domain: hmac.new(secret, f"warden/pseudonym/{_LABELS[domain]}".encode(), hashlib.sha256).digest()
            for domain in _DOMAINS
        }
        self._set(derived, dict.fromkeys(_DOMAINS, key_id))

    @classmethod
    def of(cls, keys: Mapping[Domain, DomainKey]) -> Pseudonymiser:
        """A pseudonymiser with its own key (and key id) for each domain."""
        missing = [d for d in _DOMAINS if d not in keys]
        if missing:
            raise PseudonymKeyError(f"no key for domain(s) {', '.join(missing)}")
        self = cls.__new__(cls)
        self._set(
            {d: hashlib.sha256(keys[d].secret.get_secret_value().encode("utf-8")).digest() for d in _DOMAINS},
            {d: keys[d].key_id for d in _DOMAINS},
        )
        return self

    def _set(self, keys: dict[Domain, bytes], ids: dict[Domain, str]) -> None:
        self._keys = keys
        self.key_ids: dict[Domain, str] = ids
        #: The address key's id (what MailFeatures.key_id records).
        self.key_id = ids["address"]
        #: The key ring this pseudonymiser was served from (None for a single fixed key set).
        self.ring: KeyRing | None = None
        self._token_hash = hashlib.blake2b(key=self._keys["token"][:32], digest_size=8)
        # hash(word) -> the word's keyed digest as an int. See token_buckets.
        self._digests: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Pseudonymiser(key_ids={self.key_ids!r})"

    def _apply(self, domain: Domain, value: str) -> str:
        digest = hmac.digest(self._keys[domain], value.encode("utf-8"), "sha256").hex()
        return f"{self.key_ids[domain]}.{digest[:32]}"

    def address(self, address: str) -> str:
        return self._apply("address", normalise_address(address))

    def domain(self, domain: str) -> str:
        return self._apply("domain", domain.strip().lower().rstrip("."))

    def ip(self, ip: str) -> str:
        return self._apply("ip", ip.strip().lower())

    def host(self, host: str) -> str:
        return self._apply("url_host", host.strip().lower().rstrip("."))

    def url_host(self, host: str) -> str:
        """The same as :meth:`host` (the domain's name)."""
        return self.host(host)

    def account(self, account_id: str) -> str:
        """An account id (a user or operator id that is not an address), case and spaces ignored."""
        return self._apply("account", account_id.strip().lower())

    #: Most distinct words whose digests :meth:`token_buckets` remembers (~10 MB); the memory
    #: is dropped and refilled when full.
    DIGEST_CACHE_WORDS = 1 << 17

    def token_buckets(self, words: Iterable[str], buckets: int, limit: int) -> list[int]:
        """Distinct keyed-hash buckets of ``words`` (sorted, at most ``limit``).

        Keyed BLAKE2b: fast enough for hundreds of words per mail, and without
        the key a bucket cannot be tested against a guessed word. A word's
        bucket is its 8-byte digest, read big-endian, modulo ``buckets``; the
        buckets kept are the first ``limit`` distinct ones in word order (at
        least one).

        Words repeat across mails, so digests are remembered, keyed by the
        word's ``hash()`` and not by the word: the memory holds no text. That
        hash is SipHash under a key Python draws at random for each process
        (unless ``PYTHONHASHSEED`` fixes it), and the memory never leaves the
        process. Two words with one 64-bit hash would share a bucket; with at
        most :data:`DIGEST_CACHE_WORDS` remembered, the chance per word is
        below 1e-14.
        """
        keep = max(limit, 1)
        copy = self._token_hash.copy  # the keyed state is set up once; copying it is cheap
        digests = self._digests
        found: dict[int, None] = {}  # distinct buckets, first-seen order
        for word in dict.fromkeys(words):  # each distinct word once, first-seen order
            key = hash(word)
            value = digests.get(key)
            if value is None:
                state = copy()
                state.update(word.encode("utf-8"))
                value = int.from_bytes(state.digest(), "big")
                if len(digests) >= self.DIGEST_CACHE_WORDS:
                    digests.clear()
                digests[key] = value
            found[value % buckets] = None
            if len(found) >= keep:
                break
        return sorted(found)


@dataclass(frozen=True)
class Generation:
    """One key per domain, in force from ``since`` (epoch seconds)."""

    since: float
    keys: Mapping[Domain, DomainKey]

    def pseudonymiser(self) -> Pseudonymiser:
        return Pseudonymiser.of(self.keys)


@dataclass(frozen=True)
class Pseudonymisers:
    """What ingest uses at one moment: the served generation, and the one linked to it (if any)."""

    served: Pseudonymiser
    linked: Pseudonymiser | None


class KeyRing:
    """Key generations and the rotation grace period; built once at the entry point.

    :meth:`at` is called per ingest batch with the worker's clock. Secrets stay
    inside the :class:`Pseudonymiser` objects; ``repr`` shows key ids only.
    """

    def __init__(self, generations: Sequence[Generation], grace_seconds: float) -> None:
        if not generations:
            raise PseudonymKeyError("a key ring needs at least one generation")
        ordered = sorted(generations, key=lambda g: g.since)
        for older, newer in pairwise(ordered):
            for domain in _DOMAINS:
                if domain != "token" and older.keys[domain].key_id == newer.keys[domain].key_id:
                    raise PseudonymKeyError(
                        f"generation from {newer.since:g} reuses {domain} key id "
                        f"{older.keys[domain].key_id!r}: a rotation must change every key id except token's"
                    )
        self._generations = ordered
        self._pseudonymisers = [g.pseudonymiser() for g in ordered]
        self.grace_seconds = grace_seconds
        for pseudonymiser in self._pseudonymisers:
            pseudonymiser.ring = self

    def __repr__(self) -> str:
        ids = [sorted(set(g.keys[d].key_id for d in _DOMAINS)) for g in self._generations]
        return f"KeyRing(generations={ids}, grace_seconds={self.grace_seconds:g})"

    @classmethod
    def from_settings(cls, settings: PrivacySettings) -> KeyRing:
        """The key file's generations when one is set, else one generation from ``hmac_key``."""
        if settings.key_file is not None:
            return load_key_file(settings.key_file, settings.rotation_grace_seconds)
        return cls.single(settings.hmac_key, settings.key_id)

    @classmethod
    def single(cls, key: SecretStr, key_id: str) -> KeyRing:
        """One generation derived from one secret (the ``hmac_key`` setting)."""
        ring = cls.__new__(cls)
        ring._generations = []
        ring._pseudonymisers = [Pseudonymiser(key, key_id)]
        ring.grace_seconds = 0.0
        ring._pseudonymisers[0].ring = ring
        return ring

    def at(self, now: float) -> Pseudonymisers:
        """The served and linked pseudonymisers at ``now``.

        Before the newest generation's grace period ends, the previous one is
        served and the newest linked; generations that start in the future are
        ignored (so a key file can be deployed before its rotation time).
        """
        if not self._generations:
            return Pseudonymisers(self._pseudonymisers[0], None)
        live = [i for i, g in enumerate(self._generations) if g.since <= now] or [0]
        current = live[-1]
        if current > 0 and now < self._generations[current].since + self.grace_seconds:
            return Pseudonymisers(self._pseudonymisers[current - 1], self._pseudonymisers[current])
        return Pseudonymisers(self._pseudonymisers[current], None)

    def current(self) -> Pseudonymiser:
        """The pseudonymiser served now by wall clock (what training uses); its ``ring`` is this ring,
        so :func:`features.ingest.extraction.to_features` given a ``now`` can still link a rotation."""
        return self.at(time.time()).served


def load_key_file(path: Path, grace_seconds: float) -> KeyRing:
    """Read a key file: ``{"generations": [{"since": 0, "keys": {"address": {"id": "a1",
    "secret": "..."}, ...}}, ...]}``, one key for each of the six domains per generation.

    Every secret must pass :func:`streams.settings.key_problem` (32 random bytes or more).
    Raises :class:`PseudonymKeyError` with a one-line reason that never includes a secret.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PseudonymKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    except ValueError:
        raise PseudonymKeyError(f"key file {path} is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("generations"), list):
        raise PseudonymKeyError(f"key file {path} needs a list of generations")
    generations = []
    for index, entry in enumerate(document["generations"]):
        where = f"key file {path}, generation {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("keys"), dict):
            raise PseudonymKeyError(f"{where}: needs keys")
        since = entry.get("since", 0)
        if not isinstance(since, int | float):
            raise PseudonymKeyError(f"{where}: since must be epoch seconds")
        keys: dict[Domain, DomainKey] = {}
        for domain in _DOMAINS:
            item = entry["keys"].get(domain)
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise PseudonymKeyError(f"{where}: no key for domain {domain}")
            if not isinstance(item.get("secret"), str):
                raise PseudonymKeyError(f"{where}: the {domain} key has no secret")
            # A key file is a deliberate deployment: its keys meet production's bar in every environment.
            problem = key_problem(item["secret"])
            if problem is not None:
                raise PseudonymKeyError(f"{where}: the {domain} key {problem}: {KEY_HINT}")
            keys[domain] = DomainKey(item["id"], SecretStr(item["secret"]))
        generations.append(Generation(float(since), keys))
    return KeyRing(generations, grace_seconds)
