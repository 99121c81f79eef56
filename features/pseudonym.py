"""Keyed-HMAC pseudonyms for raw identifiers.

Every identifier that leaves the ingest stage (addresses, domains, IPs, URL
hosts) is replaced by ``<key id>.<hex>``: HMAC-SHA256 under a key derived
per pseudonymisation domain from the secret key, truncated to 128 bits. The
same identifier always maps to the same pseudonym under one key, so
aggregates still join; without the key a pseudonym cannot be reversed or
tested against a guess. Identifiers are normalised first so that trivial
variants (case, surrounding spaces, angle brackets) do not split an entity.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Literal

from pydantic import SecretStr

Domain = Literal["address", "domain", "ip", "host", "token"]
_DOMAINS: tuple[Domain, ...] = ("address", "domain", "ip", "host", "token")


def normalise_address(address: str) -> str:
    """``' <Alice@Example.COM> '`` → ``'alice@example.com'``."""
    value = address.strip().strip("<>").strip().lower()
    return value.rstrip(".")


def address_domain(address: str) -> str:
    """The domain part of an address, normalised (empty if there is none)."""
    return normalise_address(address).rpartition("@")[2]


class Pseudonymiser:
    """Maps raw identifiers to pseudonyms under one key.

    Built once at the entry point from the privacy settings and passed to the
    ingest stage; the key never leaves this object and is never logged.
    """

    def __init__(self, key: SecretStr, key_id: str) -> None:
        secret = key.get_secret_value().encode("utf-8")
        self.key_id = key_id
        self._keys = {
            domain: hmac.new(secret, f"warden/pseudonym/{domain}".encode(), hashlib.sha256).digest()
            for domain in _DOMAINS
        }
        self._token_hash = hashlib.blake2b(key=self._keys["token"][:32], digest_size=8)
        # hash(word) -> the word's keyed digest as an int. See token_buckets.
        self._digests: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Pseudonymiser(key_id={self.key_id!r})"

    def _apply(self, domain: Domain, value: str) -> str:
        digest = hmac.digest(self._keys[domain], value.encode("utf-8"), "sha256").hex()
        return f"{self.key_id}.{digest[:32]}"

    def address(self, address: str) -> str:
        return self._apply("address", normalise_address(address))

    def domain(self, domain: str) -> str:
        return self._apply("domain", domain.strip().lower().rstrip("."))

    def ip(self, ip: str) -> str:
        return self._apply("ip", ip.strip().lower())

    def host(self, host: str) -> str:
        return self._apply("host", host.strip().lower().rstrip("."))

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
