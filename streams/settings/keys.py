"""Secret keys: where deployments mount them, the development stand-ins, and what a real key must be."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

#: Where deployments mount Warden's Secrets as files (see :mod:`warden.streams.settings`); absent is fine.
SECRETS_DIR = Path("/run/secrets/warden")

#: The development pseudonymisation key. Refused when ``environment`` is "production".
DEV_HMAC_KEY = "warden-development-key-not-secret"
#: The shortest secret key accepted outside development (UTF-8 bytes).
MIN_KEY_BYTES = 32
#: How to make a key, said by every refusal.
KEY_HINT = "make one with `warden keygen`"
#: Values shipped in this repository's own files (deploy stand-ins, old examples): public, never keys.
_PUBLISHED_KEYS = frozenset(
    {
        DEV_HMAC_KEY,
        "replace-with-32-random-bytes-hex",
        "0123456789abcdef-test-only-key",
    }
)
#: Words that only an example or a stand-in value contains.
_STAND_IN = re.compile(r"replace|change.?me|example|dummy|not.?secret|development", re.IGNORECASE)


def development_feedback_key(source: str) -> SecretStr:
    """The public development key of a label source (used only when ``environment`` is development)."""
    return SecretStr(f"warden-development-feedback-key-{source}")


def development_training_example_key() -> SecretStr:
    """The public development key of training examples (used only when ``environment`` is development)."""
    return SecretStr("warden-development-training-example-key")


def key_problem(value: str) -> str | None:
    """Why ``value`` cannot be a secret key outside development, or None when it can.

    Refused: fewer than :data:`MIN_KEY_BYTES` bytes, a value published in this
    repository (the development keys, the deploy files' stand-ins), a value
    that says it is an example, and a value of fewer than 8 distinct characters.
    The reason never contains the value.
    """
    size = len(value.encode("utf-8"))
    if size < MIN_KEY_BYTES:
        return f"is {size} bytes, needs at least {MIN_KEY_BYTES} random bytes"
    if value in _PUBLISHED_KEYS or _STAND_IN.search(value):
        return "is a published example or development key, not a secret"
    if len(set(value)) < 8:
        return "repeats too few characters to be random"
    return None
