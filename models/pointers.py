"""Signed registry pointers: which version is served, said by the holder of the signing key.

Signed versions alone do not stop a rollback: whoever can write the registry's
directory could point ``CURRENT`` at an older, validly signed version known to
be weaker, and every worker would follow. So ``CURRENT`` and ``SHADOW`` are
signed statements too, made only by :meth:`~models.registry.Registry.promote`,
``rollback`` and ``set_shadow`` with the registry's Ed25519 signing key. A
statement names the registry's event kind, the pointer, the version (none for a
cleared shadow), the promotion history (``CURRENT`` only, for ``warden models
rollback``) and a sequence number; workers verify it before following it and
refuse one whose sequence is lower than one they already followed (a replayed
older pointer), keeping what they serve (:mod:`serving.slot`).

The sequence is the signer's clock in microseconds, or one more than the
highest sequence of a verified pointer in the registry when that is higher:
it increases with every signed change, and deleting the pointer files does not
reset it. A hand-written pointer (any text that is not a statement signed by
the registry's key, as every pointer written before this format was) is
refused: re-point such a registry with ``warden models promote VERSION``,
holding the signing key (its history starts again at that version).

Limit: a worker remembers the sequences it followed while it runs; a worker
started while the directory holds a replayed pointer follows it (it has
nothing to compare with), though only to a version signed by the registry's key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from warden.models.exceptions import RegistryError
from warden.models.signing import SigningKey, VerifyKey, canonical_json

PointerName = Literal["CURRENT", "SHADOW"]
POINTERS: tuple[PointerName, ...] = get_args(PointerName)
#: What a signed pointer says it is (changing the statement's shape changes this).
FORMAT = "warden-pointer-v1"
#: Promotions remembered for rollback (older ones drop off).
MAX_HISTORY = 1_000
#: A pointer with a full history is ~140 KB; anything larger is not one (read every reload).
MAX_POINTER_BYTES = 256_000
#: Sequences beyond this are not a clock reading in microseconds (year ~2262).
MAX_SEQUENCE = 2**63 - 1
#: How a refusal tells an operator to repair a pointer.
REPOINT_HINT = "re-point it with `warden models promote VERSION` (holder of the signing key)"


@dataclass(frozen=True)
class Pointer:
    """One verified pointer statement."""

    name: PointerName
    version: str | None
    sequence: int
    #: Promoted versions, oldest first, the current one last (``CURRENT`` only).
    history: tuple[str, ...] = ()


def next_sequence(highest: int) -> int:
    """The sequence of the next signed change, given the highest one verified in the registry."""
    return max(highest + 1, time.time_ns() // 1000)


def sign_pointer(kind: str, pointer: Pointer, key: SigningKey) -> bytes:
    """The bytes of ``pointer``'s file: the statement and its signature."""
    claim = _claim(kind, pointer)
    signed = {
        **claim,
        "key_id": key.verify_key.key_id,
        "signature": base64.b64encode(key.sign(canonical_json(claim))).decode("ascii"),
    }
    return json.dumps(signed, sort_keys=True, indent=2).encode("ascii") + b"\n"


def _claim(kind: str, pointer: Pointer) -> dict[str, object]:
    return {
        "format": FORMAT,
        "kind": kind,
        "pointer": pointer.name,
        "version": pointer.version,
        "sequence": pointer.sequence,
        "history": list(pointer.history[-MAX_HISTORY:]),
    }


def read_pointer(path: Path, kind: str, name: PointerName, key: VerifyKey) -> Pointer | None:
    """The verified statement in ``path``; None when there is no such file.

    Called each time a pointer is followed or changed. Raises
    :class:`RegistryError` with a one-line reason when the file is not a
    statement signed by ``key`` for this registry's ``kind`` and this pointer
    (hand-written, from before signed pointers, edited, signed by another key,
    or copied from another pointer or registry). The version ids it names are
    not checked here (the registry checks them).
    """
    where = f"{name} in {path.parent}"
    raw = _read(path, where)
    if raw is None:
        return None
    try:
        signed = json.loads(raw)
        signature = base64.b64decode(signed.pop("signature"), validate=True)
        key_id = signed.pop("key_id")
        claim = {
            field: signed[field] for field in ("format", "kind", "pointer", "version", "sequence", "history")
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RegistryError(
            f"{where} is not a signed pointer (written by hand, or by an older Warden): {REPOINT_HINT}"
        ) from None
    if not key.verifies(signature, canonical_json(claim)):
        if key_id != key.key_id:
            raise RegistryError(f"{where} is signed by another key ({key_id!s:.16}, trusted: {key.key_id})")
        raise RegistryError(f"{where}: its signature does not verify (statement changed)")
    if claim["format"] != FORMAT or claim["kind"] != kind or claim["pointer"] != name:
        raise RegistryError(
            f"{where} holds the signed {claim['pointer']} pointer of the {claim['kind']} registry "
            f"(copied from elsewhere)"
        )
    version, sequence, history = claim["version"], claim["sequence"], claim["history"]
    if (
        not (version is None or isinstance(version, str))
        or not isinstance(sequence, int)
        or isinstance(sequence, bool)
        or not 0 < sequence <= MAX_SEQUENCE
        or not isinstance(history, list)
        or not all(isinstance(item, str) for item in history)
    ):
        raise RegistryError(f"{where}: the signed statement is malformed")
    return Pointer(name, version, sequence, tuple(history))


def _read(path: Path, where: str) -> bytes | None:
    """At most ``MAX_POINTER_BYTES + 1`` bytes of a regular file, never through a symlink."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"cannot read {where}: {exc.strerror}") from None
    with contextlib.closing(os.fdopen(handle, "rb")) as source:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise RegistryError(f"{where} is not a regular file")
        raw = source.read(MAX_POINTER_BYTES + 1)
    if len(raw) > MAX_POINTER_BYTES:
        raise RegistryError(f"{where} is too large to be a pointer")
    return raw
