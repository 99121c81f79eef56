"""A local Redis Cluster: three masters, no replicas, on free loopback ports.

Used by the integration tests to run the feature-store contract on a real
cluster. The nodes run the dev stack's server binary
(:func:`infra.dev.devstack.redis_binary`), keep everything in memory, and die with
their parent like the dev stack's children. Each node's cluster bus gets its
own free port (``--cluster-port``, Redis >= 7 or Valkey): the default, the
client port + 10000, can be out of range or taken. Start-up splits the 16384
slots evenly with ``CLUSTER ADDSLOTSRANGE``, joins the nodes with ``CLUSTER
MEET`` and waits until every node reports ``cluster_state:ok``.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from warden.features.store.redis_client import CLIENT_ERRORS, at, server_client
from warden.infra.dev import devstack
from warden.infra.dev.devstack import _terminate, _wait, redis_ready
from warden.infra.exceptions import DevStackError
from warden.streams.children import die_with_parent
from warden.streams.settings import DevSettings, RedisSettings

#: Hash slots in every Redis Cluster.
SLOTS = 16384


@dataclass(frozen=True)
class ClusterState:
    """Where a running cluster's nodes listen (``redis://host:port``), and their process ids."""

    urls: tuple[str, ...]
    pids: tuple[int, ...]
    binary: str

    def redis_settings(self) -> RedisSettings:
        """Settings that point Warden's clients at this cluster (every node a start-up node)."""
        return RedisSettings(cluster_nodes=",".join(self.urls))


@dataclass(frozen=True)
class _Node:
    port: int
    bus_port: int
    proc: subprocess.Popen[bytes]


class LocalCluster:
    """A Redis Cluster of ``masters`` attached child processes, started and stopped as one."""

    def __init__(self, settings: DevSettings, masters: int = 3) -> None:
        if masters < 1:
            raise DevStackError(f"a cluster needs at least one master, not {masters}")
        self._settings = settings
        self._masters = masters
        self._nodes: list[_Node] = []
        self.state: ClusterState | None = None

    def start(self, attempts: int = 3) -> ClusterState:
        """Start every node and wait until the cluster is ok; raises DevStackError.

        A port can be taken between choosing and binding it, so a failed start
        is retried on fresh ports.
        """
        return devstack.retry_on_fresh_ports(self._start_once, attempts)

    def _start_once(self) -> ClusterState:
        host = self._settings.host
        run_dir = self._settings.state_dir / "cluster"
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            server = devstack.redis_binary()
            ports = _free_ports(host, 2 * self._masters)
            for port, bus_port in zip(ports[::2], ports[1::2], strict=True):
                self._nodes.append(_Node(port, bus_port, self._spawn(server, host, port, bus_port, run_dir)))
            deadline = time.monotonic() + self._settings.start_timeout_s
            for node in self._nodes:
                _wait(functools.partial(redis_ready, _url(host, node.port)), deadline, node.proc, _name(node))
            self._form(host)
            for node in self._nodes:
                _wait(functools.partial(_cluster_ok, host, node.port), deadline, node.proc, _name(node))
        except BaseException:
            self.stop()
            raise
        self.state = ClusterState(
            urls=tuple(_url(host, node.port) for node in self._nodes),
            pids=tuple(node.proc.pid for node in self._nodes),
            binary=server,
        )
        return self.state

    def _spawn(
        self, server: str, host: str, port: int, bus_port: int, run_dir: Path
    ) -> subprocess.Popen[bytes]:
        config = run_dir / f"nodes-{port}.conf"
        # A node reads its config file at start: a stale one would rejoin an earlier cluster.
        config.unlink(missing_ok=True)
        argv = [
            server,
            *("--port", str(port), "--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
            *("--cluster-config-file", str(config), "--save", "", "--appendonly", "no"),
            *("--bind", host, "--dir", str(run_dir)),
        ]
        with (run_dir / f"node-{port}.log").open("wb") as log:
            return subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def _form(self, host: str) -> None:
        """Give each node its share of the slots and a distinct epoch, then introduce them all."""
        try:
            for index, node in enumerate(self._nodes):
                first = index * SLOTS // self._masters
                last = (index + 1) * SLOTS // self._masters - 1
                with _node(host, node.port, 5.0) as client:
                    client.cluster("ADDSLOTSRANGE", first, last)
                    # Distinct epochs, as `redis-cli --cluster create` sets them: no collision round.
                    client.cluster("SET-CONFIG-EPOCH", index + 1)
            with _node(host, self._nodes[0].port, 5.0) as client:
                for node in self._nodes[1:]:
                    client.cluster("MEET", host, node.port, node.bus_port)
        except CLIENT_ERRORS as exc:
            raise DevStackError(f"could not form the redis cluster: {exc}") from exc

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        for node in reversed(self._nodes):
            _terminate(node.proc.pid, lambda p=node.proc: p.poll() is not None)  # type: ignore[misc]
        self._nodes.clear()
        self.state = None

    def __enter__(self) -> ClusterState:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_cluster(settings: DevSettings, masters: int = 3) -> Iterator[ClusterState]:
    """Start an attached local cluster for the duration of a ``with`` block."""
    with LocalCluster(settings, masters) as state:
        yield state


def _free_ports(host: str, count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = devstack.free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def _url(host: str, port: int) -> str:
    return f"redis://{host}:{port}"


def _node(host: str, port: int, timeout_s: float) -> contextlib.closing[redis.Redis]:
    """A client for one node on its own (cluster commands go to the node, not routed by slot)."""
    return contextlib.closing(server_client(at(_url(host, port), socket_timeout_s=timeout_s)))


def _name(node: _Node) -> str:
    return f"redis cluster node on port {node.port}"


def _cluster_ok(host: str, port: int) -> bool:
    try:
        with _node(host, port, 1.0) as client:
            info = client.cluster("INFO")
    except CLIENT_ERRORS:
        return False
    # redis-py parses CLUSTER INFO into a dict of strings.
    return isinstance(info, dict) and info.get("cluster_state") == "ok"
