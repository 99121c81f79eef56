"""What every peer filter shares: its result, programs, daemons and CPU accounting.

CPU time is the processes' own: children this process ran and waited for are
read from ``getrusage(RUSAGE_CHILDREN)``; a daemon that lives across phases
(spamd, Rspamd, its Redis) is read from ``/proc/<pid>/stat`` for it and every
descendant (own time, plus the time of descendants it has already reaped).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np

from warden.models.exceptions import PeerError
from warden.streams.children import die_with_parent

Status = Literal["ok", "missing", "failed"]
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class LabelledMail:
    """A training mail as a filter receives it (raw RFC 822 bytes) and its label."""

    raw: bytes
    is_spam: bool


@dataclass(frozen=True)
class PeerResult:
    """One peer's run: per-mail scores (higher = spammier) or why there are none."""

    name: str
    status: Status
    #: Why the peer is missing or failed; empty when it ran.
    reason: str = ""
    version: str = ""
    #: A short description of how it was configured.
    settings: str = ""
    #: One real-valued score per test mail, in the test mails' order (None unless ``ok``).
    scores: np.ndarray | None = None
    train_mails: int = 0
    train_cpu_s: float = 0.0
    score_mails: int = 0
    score_cpu_s: float = 0.0
    #: Further facts worth printing (what was learned, run-to-run variation).
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def train_per_cpu_s(self) -> float:
        """Training mails per CPU-second (NaN when nothing was measured)."""
        return self.train_mails / self.train_cpu_s if self.train_cpu_s > 0 else float("nan")

    @property
    def score_per_cpu_s(self) -> float:
        """Scored mails per CPU-second (NaN when nothing was measured)."""
        return self.score_mails / self.score_cpu_s if self.score_cpu_s > 0 else float("nan")


class Peer(Protocol):
    """A spam filter that learns from labelled mails and scores others."""

    name: str

    def missing(self) -> str | None:
        """Why the peer cannot run here (a program not installed), or None when it can."""

    def run(self, train: Sequence[LabelledMail], test: Sequence[bytes], work: Path) -> PeerResult:
        """Learn ``train``, score ``test``; every file and process lives in ``work`` (a private folder).

        Raises PeerError when a program fails; no process outlives the call.
        """


def program(name: str) -> str | None:
    """The full path of ``name`` (a path or a name on the PATH), or None when it is not installed."""
    return shutil.which(name)


def missing_programs(names: Sequence[str]) -> str | None:
    """``"<name> is not installed"`` for the first program not found, else None."""
    for name in names:
        if program(name) is None:
            return f"{name} is not installed (not found on the PATH)"
    return None


def write_mails(folder: Path, mails: Sequence[bytes]) -> list[Path]:
    """Each mail as its own file (numbered in order) in a new ``folder``."""
    folder.mkdir(parents=True)
    paths = []
    for i, raw in enumerate(mails):
        path = folder / f"{i:06d}.eml"
        path.write_bytes(raw)
        paths.append(path)
    return paths


class MailFolders(NamedTuple):
    """The files a peer learns and scores: training spam, training ham, and the test mails in order."""

    spam: list[Path]
    ham: list[Path]
    test: list[Path]

    @classmethod
    def write(cls, train: Sequence[LabelledMail], test: Sequence[bytes], work: Path) -> MailFolders:
        """Each mail as its own file under ``work`` (``spam/``, ``ham/``, ``test/``)."""
        return cls(
            write_mails(work / "spam", [m.raw for m in train if m.is_spam]),
            write_mails(work / "ham", [m.raw for m in train if not m.is_spam]),
            write_mails(work / "test", test),
        )


def run(
    command: Sequence[str], timeout_s: float, stdin: bytes | None = None, ok: tuple[int, ...] = (0,)
) -> bytes:
    """Run a program to its end and return its standard output.

    Raises PeerError when it cannot start, runs out of time or exits with a code not in ``ok``.
    """
    try:
        done = subprocess.run(list(command), input=stdin, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{Path(command[0]).name} took more than {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise PeerError(f"{Path(command[0]).name} could not start: {exc}") from exc
    if done.returncode not in ok:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise PeerError(
            f"{Path(command[0]).name} exited with {done.returncode}: {message[-1] if message else ''}"
        )
    return done.stdout


def first_line(command: Sequence[str]) -> str:
    """The first line a program prints (its version)."""
    return run(command, 60.0).decode("utf-8", "replace").strip().splitlines()[0].strip()


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """A server started in its own process group, stopped (with every descendant) on exit."""

    def __init__(self, command: Sequence[str], log: Path) -> None:
        self.name = Path(command[0]).name
        self.log = log
        with log.open("wb") as out:
            try:
                self.process = subprocess.Popen(
                    list(command),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                raise PeerError(f"{self.name} could not start: {exc}") from exc

    def wait_until(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``ready`` until it answers True; raises PeerError when the daemon dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PeerError(f"{self.name} exited with {self.process.returncode}: {self.last_log_line()}")
            if ready():
                return
            time.sleep(0.1)
        raise PeerError(f"{self.name} did not answer within {timeout_s:.0f} s: {self.last_log_line()}")

    def last_log_line(self) -> str:
        """The daemon's last line of output, for an error message."""
        lines = self.log.read_bytes()[-2000:].decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:300] if lines else "(no output)"

    def cpu_s(self) -> float:
        """CPU seconds used so far by the daemon and every descendant (see the module docstring)."""
        return tree_cpu_s(self.process.pid)

    def stop(self) -> None:
        """SIGTERM to the daemon's process group, SIGKILL after 10 s; waits for the daemon."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # Workers that outlived their parent are still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def daemons() -> Iterator[list[Daemon]]:
    """A list to put started daemons in; all of them are stopped when the block ends, even on error."""
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in reversed(started):
            daemon.stop()


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and its descendants (and of those they reaped)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue  # ended meanwhile
        fields = stat.rpartition(b")")[2].split()
        # After the command: state, ppid, ... utime (14th field), stime, cutime, cstime.
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = sum(int(v) for v in fields[11:15])
    total, stack = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack += children.get(pid, [])
    return total / _TICKS


class CpuMeter:
    """CPU seconds of waited-for children plus the given daemons, read between two moments."""

    def __init__(self, daemons: Sequence[Daemon] = ()) -> None:
        self._daemons = tuple(daemons)
        self._start = self._now()

    def _now(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime + sum(d.cpu_s() for d in self._daemons)

    def elapsed(self) -> float:
        """CPU seconds since the meter was made."""
        return self._now() - self._start
