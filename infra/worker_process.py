"""A ``warden worker`` child process, for the demo, benchmarks and integration tests."""

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

from infra.devstack import die_with_parent
from infra.exceptions import DevStackError
from infra.settings import WardenSettings


@contextlib.contextmanager
def child_process(
    argv: Sequence[str], env: Mapping[str, str] | None, log_path: Path
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
    """A ``warden worker`` child process with ``settings``' services and names."""
    env = {**base_env, **settings.service_environment()}
    with child_process([sys.executable, "-m", "infra.cli", "worker"], env, log_path) as proc:
        yield proc


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
