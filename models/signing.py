"""Ed25519 signatures over every file of a registered model version.

Whoever can write the registry's directory could otherwise serve any graph
to every worker. So each version carries ``signature.json``: a statement
naming the version, its event kind and every file in it with its byte
length and SHA-256, signed with the registry's Ed25519 private key. Only
``warden train`` and ``warden retrain`` hold that key
(``ModelSettings.signing_key_file``); workers hold the public key
(``ModelSettings.verify_key_file``) and check the statement and every byte
of every file before a version is loaded or promoted (:func:`verify_version`).
A file added, removed, grown, shrunk, changed or replaced by a symlink, a
statement edited, or a statement signed by another key: the version is
refused.

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key),
made by ``warden models keygen``. In development, when neither file is set,
a pair is generated once under ``dev.state_dir`` (:func:`registry_keys`), so
the demo and the tests need no hand work; in production a missing key is an
error.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from warden.models.exceptions import ModelRefused, SigningKeyError
from warden.streams.settings import WardenSettings

SIGNATURE_FILE = "signature.json"
SIGNING_KEY_FILE = "signing.pem"
VERIFY_KEY_FILE = "verify.pem"
#: What the signed statement says it is (changing the statement's shape changes this).
FORMAT = "warden-registry-v1"
#: A statement is a few hundred bytes; anything much longer is not one.
MAX_STATEMENT_BYTES = 64_000
#: Where the development pair lives under ``dev.state_dir``.
DEV_KEYS_DIR = "registry-keys"


class VerifyKey:
    """The registry's public key: checks statements (held by every process that loads models)."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        #: Names the key in statements and refusals (not secret).
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"VerifyKey({self.key_id})"

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class SigningKey:
    """The registry's private key: signs statements (held by training and retraining only)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.verify_key = VerifyKey(key.public_key())

    def __repr__(self) -> str:
        return f"SigningKey({self.verify_key.key_id})"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class RegistryKeys:
    """The keys a process holds: always the verify key; the signing key only where versions are made."""

    verify: VerifyKey
    signing: SigningKey | None = None

    @classmethod
    def generate(cls) -> RegistryKeys:
        """A fresh pair in memory (tests)."""
        signing = SigningKey(Ed25519PrivateKey.generate())
        return cls(signing.verify_key, signing)


def write_pair(directory: Path, signing: SigningKey | None = None) -> tuple[Path, Path]:
    """Write a pair as ``signing.pem`` (owner-only) and ``verify.pem``; returns their paths.

    A new pair unless ``signing`` is given. Raises :class:`SigningKeyError`
    when either file exists (a key is never overwritten) or cannot be written.
    """
    signing = signing or SigningKey(Ed25519PrivateKey.generate())
    signing_path, verify_path = directory / SIGNING_KEY_FILE, directory / VERIFY_KEY_FILE
    for path in (signing_path, verify_path):
        if path.exists():
            raise SigningKeyError(f"{path} exists: keep it, or move it away first")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(signing_path, signing.pem(), 0o600)
        _write_new(verify_path, signing.verify_key.pem(), 0o644)
    except OSError as exc:
        raise SigningKeyError(f"cannot write keys in {directory}: {exc.strerror}") from None
    return signing_path, verify_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(handle, "wb") as out:
        out.write(data)


def load_signing_key(path: Path) -> SigningKey:
    """Read an Ed25519 private key; raises SigningKeyError (unreadable, not Ed25519, readable by all)."""
    data = _read_key_file(path, "signing")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"signing key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise SigningKeyError(f"signing key {path} is readable or writable by every user: chmod 600 it")
    return SigningKey(key)


def load_verify_key(path: Path) -> VerifyKey:
    """Read an Ed25519 public key; raises SigningKeyError."""
    data = _read_key_file(path, "verify")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"verify key {path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"verify key {path} is not an Ed25519 key")
    return VerifyKey(key)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_STATEMENT_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what} key {path}: {exc.strerror}") from None
    if len(data) > MAX_STATEMENT_BYTES:
        raise SigningKeyError(f"{what} key {path} is too large to be a key")
    return data


def _development_pair(settings: WardenSettings) -> tuple[Path, Path]:
    """The development pair's paths under ``dev.state_dir``, generated on first use."""
    directory = settings.dev.state_dir / DEV_KEYS_DIR
    signing_path, verify_path = directory / SIGNING_KEY_FILE, directory / VERIFY_KEY_FILE
    if not verify_path.exists():
        settings.dev.state_dir.mkdir(parents=True, exist_ok=True)
        # Made aside and renamed into place: two processes starting at once agree on one pair.
        staging = Path(tempfile.mkdtemp(prefix=".registry-keys-", dir=settings.dev.state_dir))
        write_pair(staging)
        try:
            staging.rename(directory)
        except OSError:  # another process won the race; its pair is the one
            for name in (SIGNING_KEY_FILE, VERIFY_KEY_FILE):
                (staging / name).unlink()
            staging.rmdir()
    return signing_path, verify_path


def verify_key_path(settings: WardenSettings) -> Path:
    """The verify key file a worker is given (the development pair's, generated if needed).

    Raises :class:`SigningKeyError` when only a signing key is configured (a worker
    must be handed the public half alone) or, in production, when none is.
    """
    if settings.models.verify_key_file is not None:
        return settings.models.verify_key_file
    if settings.models.signing_key_file is not None:
        raise SigningKeyError(
            "set WARDEN_MODELS__VERIFY_KEY_FILE too: workers get the public key, never the signing key"
        )
    if settings.environment != "development":
        raise SigningKeyError(_missing("WARDEN_MODELS__VERIFY_KEY_FILE", settings))
    return _development_pair(settings)[1]


def registry_keys(settings: WardenSettings, *, signing: bool = False) -> RegistryKeys:
    """The keys of this process: the verify key, and the signing key when ``signing`` is asked.

    Raises :class:`SigningKeyError` with a one-line reason when a key is
    missing (in production), unreadable, or the two files are not one pair.
    """
    models = settings.models
    signing_path, verify_path = models.signing_key_file, models.verify_key_file
    if signing_path is None and verify_path is None:
        if settings.environment != "development":
            name = "WARDEN_MODELS__SIGNING_KEY_FILE" if signing else "WARDEN_MODELS__VERIFY_KEY_FILE"
            raise SigningKeyError(_missing(name, settings))
        signing_path, verify_path = _development_pair(settings)
    private: SigningKey | None = None
    if signing_path is not None and (signing or verify_path is None):
        private = load_signing_key(signing_path)
    if signing and private is None:
        raise SigningKeyError(_missing("WARDEN_MODELS__SIGNING_KEY_FILE", settings))
    if verify_path is None:
        if private is None:
            raise SigningKeyError(_missing("WARDEN_MODELS__VERIFY_KEY_FILE", settings))
        public = private.verify_key
    else:
        public = load_verify_key(verify_path)
        if private is not None and private.verify_key.key_id != public.key_id:
            raise SigningKeyError(
                f"signing key {signing_path} (key id {private.verify_key.key_id}) and verify key "
                f"{verify_path} (key id {public.key_id}) are not one pair"
            )
    return RegistryKeys(public, private if signing else None)


def _missing(variable: str, settings: WardenSettings) -> str:
    return (
        f"{settings.environment} needs {variable}: make a pair with "
        "`warden models keygen --out DIR` (the signing key goes to training only)"
    )


def statement(kind: str, version: str, files: Mapping[str, bytes]) -> dict[str, object]:
    """What is signed: the version, its kind, and each file's length and SHA-256."""
    return {
        "format": FORMAT,
        "kind": kind,
        "version": version,
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(files.items())
        },
    }


def canonical_json(claim: Mapping[str, object]) -> bytes:
    """The signed bytes of a statement (version or pointer): sorted keys, no spaces, ASCII."""
    return json.dumps(claim, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_files(kind: str, version: str, files: Mapping[str, bytes], key: SigningKey) -> bytes:
    """The ``signature.json`` bytes for a version made of ``files`` (name -> content)."""
    claim = statement(kind, version, files)
    signed = {
        **claim,
        "key_id": key.verify_key.key_id,
        "signature": base64.b64encode(key.sign(canonical_json(claim))).decode("ascii"),
    }
    return json.dumps(signed, sort_keys=True, indent=2).encode("ascii")


def verify_version(directory: Path, kind: str, version: str, key: VerifyKey) -> dict[str, bytes]:
    """Check ``directory`` against its signed statement; returns every file's bytes as checked.

    Called before a version is loaded, promoted or shadowed. The bytes
    returned are the ones checked: callers load from them, never from the
    files again, so a file swapped after the check is never served. Raises
    :class:`ModelRefused` with a one-line reason (unsigned, signed by another
    key, statement not verifying, a file missing, extra, a symlink, or of
    other length or content).
    """
    where = f"version {version}"
    raw = _read_regular(directory / SIGNATURE_FILE, MAX_STATEMENT_BYTES, where)
    if raw is None:
        raise ModelRefused(f"{where} is unsigned (no {SIGNATURE_FILE})")
    try:
        signed = json.loads(raw)
        signature = base64.b64decode(signed.pop("signature"), validate=True)
        key_id = signed.pop("key_id")
        claim = {name: signed[name] for name in ("format", "kind", "version", "files")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ModelRefused(f"{where}: {SIGNATURE_FILE} is not a signed statement") from None
    if not key.verifies(signature, canonical_json(claim)):
        if key_id != key.key_id:
            raise ModelRefused(f"{where} is signed by another key ({key_id!s:.16}, trusted: {key.key_id})")
        raise ModelRefused(f"{where}: its signature does not verify (statement changed)")
    if claim["format"] != FORMAT or claim["version"] != version or claim["kind"] != kind:
        raise ModelRefused(f"{where}: the signed statement is for {claim['kind']} version {claim['version']}")
    files: dict[str, dict[str, object]] = claim["files"]
    try:
        present = {entry.name for entry in os.scandir(directory)} - {SIGNATURE_FILE}
    except OSError as exc:
        raise ModelRefused(f"{where} cannot be listed: {exc.strerror}") from None
    extra = sorted(present - set(files))
    if extra:
        raise ModelRefused(f"{where} holds a file its signature does not cover: {extra[0]}")
    out = {}
    for name, expected in sorted(files.items()):
        size, digest = int(str(expected["bytes"])), str(expected["sha256"])
        data = _read_regular(directory / name, size, where)
        if data is None:
            raise ModelRefused(f"{where} misses the signed file {name}")
        if len(data) != size or not hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest):
            raise ModelRefused(f"{where}: {name} is not the file that was signed")
        out[name] = data
    return out


def _read_regular(path: Path, limit: int, where: str) -> bytes | None:
    """At most ``limit + 1`` bytes of a regular file, never through a symlink; None if absent."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelRefused(f"{where}: {path.name} cannot be opened as a file: {exc.strerror}") from None
    with contextlib.closing(os.fdopen(handle, "rb")) as source:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise ModelRefused(f"{where}: {path.name} is not a regular file")
        return source.read(limit + 1)
