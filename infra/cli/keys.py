"""Key commands of the ``warden`` CLI: ``keygen`` and ``models keygen``; the development-key warning.

Kept apart from :mod:`infra.cli.main` (which only registers and dispatches them).

- ``warden keygen`` prints a new random secret (32 bytes, hex): a
  pseudonymisation key (``WARDEN_PRIVACY__HMAC_KEY``) or a label source's key
  (``WARDEN_FEEDBACK__KEY_<SOURCE>``).
- ``warden models keygen --out DIR`` writes a new Ed25519 pair for the model
  registry: ``signing.pem`` (owner-only; for training and retraining) and
  ``verify.pem`` (for workers).
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any, TextIO

from warden.streams.settings import MIN_KEY_BYTES, WardenSettings


def add_parsers(commands: argparse._SubParsersAction[Any]) -> None:
    """``warden keygen``."""
    commands.add_parser(
        "keygen",
        help="print a new random secret key (for WARDEN_PRIVACY__HMAC_KEY or WARDEN_FEEDBACK__KEY_*)",
    )


def add_models_parser(actions: argparse._SubParsersAction[Any]) -> None:
    """``warden models keygen``."""
    keygen = actions.add_parser(
        "keygen", help="write a new Ed25519 pair: signing.pem (training only) and verify.pem (workers)"
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the two files")


def keygen(out: TextIO) -> int:
    """Print one new secret key (hex of :data:`MIN_KEY_BYTES` random bytes)."""
    out.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
    return 0


def models_keygen(directory: Path, out: TextIO) -> int:
    """Write a new registry key pair under ``directory``; raises SigningKeyError if a key is there."""
    from warden.models.signing import load_verify_key, write_pair

    signing_path, verify_path = write_pair(directory)
    key_id = load_verify_key(verify_path).key_id
    out.write(
        f"key id {key_id}\n"
        f"WARDEN_MODELS__SIGNING_KEY_FILE={signing_path}  (train and retrain only; keep it secret)\n"
        f"WARDEN_MODELS__VERIFY_KEY_FILE={verify_path}  (every worker)\n"
    )
    return 0


def development_warning(settings: WardenSettings) -> str | None:
    """One line for stderr when a long-running command (worker, demo, train, retrain) starts on
    public development keys; None when it does not."""
    found = settings.development_secrets()
    if not found:
        return None
    return (
        "warden: warning: development mode (WARDEN_ENVIRONMENT is not production): public development "
        f"keys protect {', '.join(found)}; never run it on real data"
    )
