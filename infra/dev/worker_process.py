"""A ``warden worker`` child process, for the demo, benchmarks and integration tests.

The child gets the non-secret settings in its environment and the secrets
through an inherited pipe (:mod:`infra.cli.secret_handoff`): nothing secret is
readable in its ``/proc/<pid>/environ``. It gets the registry's public key
and never the signing key (workers verify versions; only training signs).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from warden.infra.cli import secret_handoff
from warden.infra.exceptions import DevStackError
from warden.models import signing
from warden.streams.children import die_with_parent
from warden.streams.settings import WardenSettings


@contextlib.contextmanager
def child_process(
    argv: Sequence[str], env: Mapping[str, str] | None, log_path: Path, pass_fds: Sequence[int] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to ``log_path``, stopped (SIGTERM, then SIGKILL) on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=tuple(pass_fds),
            preexec_fn=die_with_parent,  # a killed parent leaves no orphan worker
        )
    try:
        yield proc
    except Exception:
        _print_tail(log_path)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _print_tail(log_path: Path, lines: int = 40) -> None:
    """The end of a child's log on stderr, so a failing test or demo shows what the child did."""
    try:
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    print(f"--- last {len(tail)} lines of {log_path} ---", *tail, sep="\n", file=sys.stderr)


@contextlib.contextmanager
def worker_process(
    settings: WardenSettings, base_env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``warden worker`` child process with ``settings``' services, names and secrets.

    Secrets go through a pipe; the registry's public key (in development the
    generated pair's) by path; the signing key not at all.
    """
    env = {**base_env, **worker_environment(settings)}
    with (
        secret_handoff.secrets_pipe(settings) as fd,
        child_process(
            [sys.executable, "-m", "warden.infra.cli", *secret_handoff.argv(fd), "worker"],
            env,
            log_path,
            (fd,),
        ) as proc,
    ):
        yield proc


def run_cli(
    settings: WardenSettings,
    base_env: Mapping[str, str],
    argv: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``warden argv...`` to its end with ``settings`` (secrets through a pipe); output captured.

    The child gets ``settings``' key-file paths as they are (``warden retrain``
    needs the signing key; a worker is started with :func:`worker_process`).
    """
    env = {**base_env, **settings.service_environment(), **(extra_env or {})}
    with secret_handoff.secrets_pipe(settings) as fd:
        return subprocess.run(
            [sys.executable, "-m", "warden.infra.cli", *secret_handoff.argv(fd), *argv],
            env=env,
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def worker_environment(settings: WardenSettings) -> dict[str, str]:
    """The non-secret ``WARDEN_*`` variables of a worker: the verify key's path, no signing key."""
    env = settings.service_environment()
    env.pop("WARDEN_MODELS__SIGNING_KEY_FILE", None)
    env["WARDEN_MODELS__VERIFY_KEY_FILE"] = str(signing.verify_key_path(settings))
    return env


def wait_healthy(settings: WardenSettings, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until the worker's /health says it has joined its group; raises DevStackError."""
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/health"
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise DevStackError(f"the worker exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                health = json.loads(response.read())
            if health.get("status") == "ok" and health.get("assigned_partitions", 0) > 0:
                return time.monotonic() - started
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.2)
    raise DevStackError(f"the worker did not become healthy within {timeout_s:.0f} s")
