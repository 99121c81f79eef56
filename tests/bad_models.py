"""Bad model versions planted in a registry behind its back, for the refusal tests.

Each kind copies a good version and breaks one thing, the way a bad disk, a
hand-edited manifest or a broken exporter would:

- ``corrupt``: the ONNX file is truncated (its hash no longer matches the manifest);
- ``garbage``: the ONNX file is not a graph at all, and the manifest was re-hashed to match;
- ``schema``: the manifest names another feature schema;
- ``nan``: a valid graph that scores NaN on real rows (finite on all-zero rows, so a
  warm-up on zeros does not notice), with a consistent manifest;
- ``lying``: a valid graph that is not the booster's (scores 0.5 everywhere) while
  the manifest still claims perfect parity.

Those are signed again, to test what the signature alone cannot catch;
:func:`tamper` makes versions whose signature no longer covers them.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from warden.features.definitions import FEATURE_NAMES
from warden.models.exceptions import RegistryError
from warden.models.export import INPUT_NAME, PROBABILITIES, TARGET_OPSET
from warden.models.pointers import POINTERS, Pointer, PointerName, next_sequence, read_pointer, sign_pointer
from warden.models.registry import (
    BOOSTER_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    PARITY_ROWS_FILE,
    TOKENS_FILE,
    Registry,
)
from warden.models.signing import SIGNATURE_FILE, SigningKey, sign_files

BadKind = Literal["corrupt", "garbage", "schema", "nan", "lying"]
BAD_KINDS: tuple[BadKind, ...] = ("corrupt", "garbage", "schema", "nan", "lying")


def graph(kind: Literal["nan", "half"]) -> bytes:
    """An ONNX graph with the scorer's input and output names.

    ``nan``: probabilities = sqrt(-x[:, :2]) (NaN wherever a feature is positive);
    ``half``: probabilities = 0.5 everywhere (a batch-shaped constant).
    """
    width = len(FEATURE_NAMES)
    constants = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
    ]
    nodes = [helper.make_node("Slice", [INPUT_NAME, "starts", "ends", "axes"], ["two"])]
    if kind == "nan":
        nodes += [
            helper.make_node("Neg", ["two"], ["negative"]),
            helper.make_node("Sqrt", ["negative"], [PROBABILITIES]),
        ]
    else:
        nodes += [
            helper.make_node("Shape", ["two"], ["shape"]),
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                [PROBABILITIES],
                value=numpy_helper.from_array(np.array([0.5], dtype=np.float32)),
            ),
        ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            f"warden-test-{kind}",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, width])],
            [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [None, 2])],
            constants,
        ),
        opset_imports=[helper.make_opsetid("", TARGET_OPSET)],
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def plant(registry: Registry, good: str, kind: BadKind) -> str:
    """Copy version ``good`` into a new version broken as ``kind`` says; returns its name.

    The broken version is signed again with the registry's signing key (as a
    trainer with a bug would sign it): these versions test the checks behind
    the signature. :func:`tamper` breaks the signature instead.
    """
    version = f"{good}-{kind}"
    target = copy_version(registry, good, version)
    manifest = registry.manifest(good)
    model = (target / MODEL_FILE).read_bytes()
    update: dict[str, object] = {"version": version}
    if kind == "corrupt":
        model = model[: len(model) // 2]
    elif kind == "garbage":
        model = b"\x08\x07not an onnx graph" * 64
        update["onnx_sha256"] = hashlib.sha256(model).hexdigest()
    elif kind == "schema":
        update["schema_hash"] = "0" * 16
    else:
        model = graph("nan" if kind == "nan" else "half")
        update["onnx_sha256"] = hashlib.sha256(model).hexdigest()
    (target / MODEL_FILE).write_bytes(model)
    (target / MANIFEST_FILE).write_text(manifest.model_copy(update=update).model_dump_json(indent=2))
    resign(registry, version)
    return version


def alias(registry: Registry, good: str, version: str) -> str:
    """A good, validly signed copy of ``good`` named ``version`` (an older model a rollback attack would
    point at); returns ``version``."""
    target = copy_version(registry, good, version)
    manifest = registry.manifest(good).model_copy(update={"version": version})
    (target / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    resign(registry, version)
    return version


def resign(registry: Registry, version: str, key: SigningKey | None = None) -> None:
    """Sign ``version``'s files as they are now (with ``key``, default the registry's own)."""
    key = key or registry.keys.signing
    assert key is not None, "the test registry holds its signing key"
    target = registry.root / "versions" / version
    (target / SIGNATURE_FILE).unlink(missing_ok=True)
    files = {path.name: path.read_bytes() for path in target.iterdir()}
    (target / SIGNATURE_FILE).write_bytes(sign_files(registry.kind, version, files, key))


def copy_version(registry: Registry, good: str, version: str) -> Path:
    """A writable copy of version ``good`` named ``version`` (its signature still names ``good``)."""
    target = registry.root / "versions" / version
    shutil.copytree(registry.root / "versions" / good, target)
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


#: Each file of a version, changed by one byte behind the registry's back.
TAMPERED_FILES = (MODEL_FILE, BOOSTER_FILE, PARITY_ROWS_FILE, TOKENS_FILE, MANIFEST_FILE, SIGNATURE_FILE)
#: What else can be wrong with a version's files or its signature.
SignatureBreak = Literal["unsigned", "other_key", "extra_file", "missing_file", "symlinked_file", "renamed"]
SIGNATURE_BREAKS: tuple[SignatureBreak, ...] = get_args(SignatureBreak)


def tamper(registry: Registry, good: str, what: str) -> str:
    """A copy of ``good`` whose signature no longer covers it; ``what`` is a file name (one byte of it
    flipped) or a :data:`SignatureBreak`. Returns the new version's name."""
    version = f"{good}-{what.replace('.', '_').replace('_', '-')}"
    target = copy_version(registry, good, version)
    resign(registry, version)  # a valid signature first: only ``what`` breaks it
    if what in TAMPERED_FILES:
        data = bytearray((target / what).read_bytes())
        data[len(data) // 2] ^= 0x01
        (target / what).write_bytes(bytes(data))
    elif what == "unsigned":
        (target / SIGNATURE_FILE).unlink()
    elif what == "other_key":
        resign(registry, version, SigningKey(Ed25519PrivateKey.generate()))
    elif what == "extra_file":
        (target / "extra.py").write_text("print('not signed')\n")
    elif what == "missing_file":
        (target / TOKENS_FILE).unlink()
    elif what == "symlinked_file":
        outside = target.parent.parent.parent / f"outside-{version}.onnx"
        outside.write_bytes((target / MODEL_FILE).read_bytes())
        (target / MODEL_FILE).unlink()
        (target / MODEL_FILE).symlink_to(outside)
    else:  # renamed: a good version's files and signature under another version id
        shutil.rmtree(target)
        copy_version(registry, good, version)
    return version


def highest_sequence(registry: Registry) -> int:
    """The highest sequence of the registry's pointers that verify (0: none)."""
    highest = 0
    for name in POINTERS:
        try:
            found = read_pointer(registry.root / name, registry.kind, name, registry.keys.verify)
        except RegistryError:
            continue
        if found is not None:
            highest = max(highest, found.sequence)
    return highest


def point_at(
    registry: Registry,
    version: str | None,
    name: PointerName = "CURRENT",
    key: SigningKey | None = None,
    sequence: int | None = None,
) -> bytes:
    """Sign ``name`` to ``version`` with none of :meth:`Registry.promote`'s checks, as a tool holding
    the signing key (or ``key``) could; the sequence is above every verified one unless given.
    Returns the bytes written."""
    signing = key or registry.keys.signing
    if signing is None:
        raise RegistryError("point_at needs a signing key")
    number = sequence if sequence is not None else next_sequence(highest_sequence(registry))
    history = (version,) if name == "CURRENT" and version is not None else ()
    data = sign_pointer(registry.kind, Pointer(name, version, number, history), signing)
    write_pointer(registry, name, data)
    return data


def write_pointer(registry: Registry, name: str, data: bytes) -> None:
    """Replace a pointer file with ``data`` (hand-edited text, or bytes kept from before)."""
    path = registry.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.by-hand")
    tmp.write_bytes(data)
    tmp.replace(path)
