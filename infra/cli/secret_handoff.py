"""Secrets handed to a ``warden`` child process through an inherited pipe, never its environment.

A process's environment is readable in ``/proc/<pid>/environ`` for its whole
life (and is copied into every process it starts). So a parent that starts
``warden worker`` (the demo, the benchmarks, the tests) passes the non-secret
settings as ``WARDEN_*`` variables (:meth:`WardenSettings.service_environment`)
and the secrets (:meth:`WardenSettings.secret_settings`) as JSON written into
a pipe: the child gets the pipe's read end and ``--secrets-fd N``, reads it
to the end once at start-up and closes it. Nothing is written to disk and
nothing is left to read afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from warden.streams.exceptions import SettingsError, UsageError
from warden.streams.settings import WardenSettings

#: The CLI option that names the inherited descriptor.
OPTION = "--secrets-fd"
#: A pipe holds at least this much before a writer blocks (Linux: 64 KiB); the secrets are far
#: smaller, so the parent writes them all before the child starts and never waits on it.
PIPE_BYTES = 60_000
#: The most a child reads: anything longer is not a secrets document.
MAX_BYTES = 1_000_000


@contextlib.contextmanager
def secrets_pipe(settings: WardenSettings) -> Iterator[int]:
    """A pipe holding ``settings``' secrets; yields its read end for the child to inherit.

    Give the child ``pass_fds=(fd,)`` and the arguments :func:`argv` returns.
    The parent's ends are closed on exit. Raises :class:`SettingsError` when
    the secrets would not fit in the pipe.
    """
    payload = json.dumps(settings.secret_settings()).encode("utf-8")
    if len(payload) > PIPE_BYTES:
        raise SettingsError(f"the secrets take {len(payload)} bytes, more than a pipe holds ({PIPE_BYTES})")
    read_end, write_end = os.pipe()
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(write_end, view) :]
        os.close(write_end)
        write_end = -1
        yield read_end
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def argv(fd: int) -> list[str]:
    """The ``warden`` arguments (before the command) that tell a child where its secrets are."""
    return [OPTION, str(fd)]


def read_secrets(fd: int) -> dict[str, Any]:
    """Read and close the secrets pipe ``fd``; returns nested settings for ``load_settings``.

    Called once by the CLI entry point. Raises :class:`UsageError` with a one-line
    reason (never a secret) when the descriptor cannot be read or holds no
    secrets document.
    """
    chunks = []
    size = 0
    try:
        while chunk := os.read(fd, 65_536):
            size += len(chunk)
            if size > MAX_BYTES:
                raise UsageError(f"{OPTION} {fd}: more than {MAX_BYTES} bytes, not a secrets document")
            chunks.append(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read secrets from {OPTION} {fd}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        document = json.loads(b"".join(chunks))
    except ValueError:
        raise UsageError(f"{OPTION} {fd} does not hold a JSON secrets document") from None
    if not isinstance(document, dict) or not all(
        isinstance(part, dict) and all(isinstance(v, str) for v in part.values())
        for part in document.values()
    ):
        raise UsageError(f"{OPTION} {fd}: secrets must be an object of objects of strings")
    return document
