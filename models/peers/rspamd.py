"""Rspamd 3: its local rules, network modules off, and Bayes learned from the training mails.

Rspamd runs from the distribution's configuration with a private local
folder (``LOCAL_CONFDIR``) that overrides only what an offline comparison
needs: its workers on free loopback ports (``processes`` scanners, one
controller, no proxy), its data and logs in the private folder, every module
that asks the network off (DNS and RBL lists, SURBL/URIBL, fuzzy hashes, SPF,
DKIM, DMARC, ARC, reverse DNS, redirector lookups, external scanners and
exporters; the phishing module without its phishtank/openphish feeds, the host
filter without its HELO, host name and sender-domain lookups), and its
resolver pointed at a closed loopback port so that nothing left can reach the
network (maps it would download stay empty or use their packaged fallback). The Bayes classifier keeps its
statistics in a private ``redis-server`` started for the run, learns every
training mail through ``rspamc learn_spam``/``learn_ham`` (auto-learning
off), and the score of a test mail is Rspamd's total from ``rspamc --json``.

Rspamd's scores vary from one pass to the next over the same mails, with no
learning in between: on the corpus split nearly every difference is in its
Bayes symbols (BAYES_SPAM/BAYES_HAM), the rules' own symbols are stable. So the
test mails are scored twice and the difference is reported; the first pass is
the score.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import redis

from warden.features.store.redis_client import at, server_client
from warden.models.exceptions import PeerError
from warden.models.peers.common import (
    CpuMeter,
    Daemon,
    LabelledMail,
    MailFolders,
    PeerResult,
    daemons,
    first_line,
    free_port,
    missing_programs,
    run,
)
from warden.streams.settings import PeerSettings

NAME = "rspamd"
#: Modules that ask DNS or another server (Rspamd 3.x names); each gets ``enabled = false``.
NETWORK_MODULES = (
    "antivirus",
    "arc",
    "asn",
    "aws_s3",
    "bimi",
    "clickhouse",
    "dcc",
    "dkim",
    "dkim_signing",
    "dmarc",
    "elastic",
    "emails",
    "external_relay",
    "external_services",
    "fuzzy_check",
    "greylist",
    "history_redis",
    "metadata_exporter",
    "metric_exporter",
    "mx_check",
    "neural",
    "once_received",
    "p0f",
    "ratelimit",
    "rbl",
    "replies",
    "reputation",
    "rspamd_update",
    "spamtrap",
    "spf",
    "surbl",
    "url_redirector",
)
_BATCH = 500  # file names per rspamc process


class Rspamd:
    """The Rspamd peer."""

    name = NAME

    def __init__(self, settings: PeerSettings) -> None:
        self._settings = settings

    def missing(self) -> str | None:
        """Why Rspamd cannot run here (a program or its configuration not installed), or None."""
        s = self._settings
        absent = missing_programs([s.rspamd, s.rspamc, s.redis_server])
        if absent is not None:
            return absent
        if not s.rspamd_config.is_file():
            return f"Rspamd's configuration {s.rspamd_config} is not installed"
        return None

    def run(self, train: Sequence[LabelledMail], test: Sequence[bytes], work: Path) -> PeerResult:
        """Start Redis and Rspamd, learn, score twice, stop both (PeerError on failure)."""
        s = self._settings
        spam, ham, tests = MailFolders.write(train, test, work)
        redis_port, scan_port, control_port = free_port(), free_port(), free_port()
        local = _local_config(work, redis_port, scan_port, control_port, s.processes)
        with daemons() as started:
            store = Daemon(
                [
                    s.redis_server,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(local),
                ],
                work / "redis.log",
            )
            started.append(store)
            # Rspamd's own Redis, which this run started on loopback (no AUTH, no TLS): not the
            # configured store, so its address comes from here, not from the settings.
            client = server_client(at(f"redis://127.0.0.1:{redis_port}", socket_timeout_s=5))
            store.wait_until(lambda: _pings(client), s.start_timeout_s)
            rspamd = Daemon(
                [
                    s.rspamd,
                    "--no-fork",
                    "--insecure",  # allowed to run as root (CI): a private, loopback-only instance
                    "--config",
                    str(s.rspamd_config),
                    *(f"--var={k}={v}" for k, v in _folders(local).items()),
                ],
                work / "rspamd.out",
            )
            started.append(rspamd)
            log = local / "log" / "rspamd.log"
            rspamd.wait_until(lambda: _ready(scan_port, control_port, log, s.processes), s.start_timeout_s)
            meter = CpuMeter([store, rspamd])
            for command, paths in (("learn_spam", spam), ("learn_ham", ham)):
                # One at a time, in the given order: whether a mail is learned depends on those before it.
                self._rspamc(control_port, [command], paths, parallel=1)
            train_cpu = meter.elapsed()
            learned = {k.decode(): v.decode() for k, v in client.hgetall("RS").items()}  # type: ignore[union-attr]
            total = sum(int(learned.get(k, "0")) for k in ("learns_spam", "learns_ham"))
            # Workers refresh their copy of the learn counts from Redis on a timer; until then Bayes
            # judges with stale counts (or not at all). A long-running Rspamd has them current.
            rspamd.wait_until(lambda: self._learns_seen(control_port) == total, s.start_timeout_s)
            meter = CpuMeter([store, rspamd])
            first = self._scores(scan_port, tests)
            score_cpu = meter.elapsed()
            second = self._scores(scan_port, tests)
            client.close()
        changed = int(np.sum(first != second))
        largest = float(np.max(np.abs(first - second))) if len(first) else 0.0
        return PeerResult(
            name=NAME,
            status="ok",
            version=first_line([s.rspamd, "--version"]),
            settings=f"distribution config ({s.rspamd_config}) with network modules off and no resolver; "
            f"{s.processes} scanners; Bayes in a private Redis, learned with rspamc learn_spam/learn_ham "
            "(spam first), auto-learn off; "
            "score = total from rspamc --json",
            scores=first,
            train_mails=len(train),
            train_cpu_s=train_cpu,
            score_mails=len(test),
            score_cpu_s=score_cpu,
            notes=(
                f"Bayes learned {learned.get('learns_spam', '0')} spam and {learned.get('learns_ham', '0')} "
                "ham (Rspamd's default learn condition skips a mail it has learned before or that its Bayes "
                "already puts in the class at 95%; Bayes votes from 200 learns of each)",
                f"run to run: scoring the same {len(first)} mails twice changed {changed} scores, "
                f"by at most {largest:.3f}",
            ),
        )

    def _learns_seen(self, port: int) -> int:
        """The learn count the controller reports (``rspamc stat``: its copy of Redis's counts)."""
        found = re.search(
            rb"^Total learns: (\d+)",
            run([self._settings.rspamc, f"--connect=127.0.0.1:{port}", "stat"], 60),
            re.M,
        )
        return int(found.group(1)) if found else -1

    def _rspamc(self, port: int, command: Sequence[str], paths: Sequence[Path], parallel: int = 0) -> bytes:
        out = b""
        for start in range(0, len(paths), _BATCH):
            out += run(
                [
                    self._settings.rspamc,
                    f"--connect=127.0.0.1:{port}",
                    f"--max-requests={parallel or self._settings.processes}",
                    f"--timeout={self._settings.run_timeout_s:.0f}",
                    *command,
                    *(str(p) for p in paths[start : start + _BATCH]),
                ],
                self._settings.run_timeout_s,
            )
        return out

    def _scores(self, port: int, paths: Sequence[Path]) -> np.ndarray:
        return parse_scores(self._rspamc(port, ["--json", "symbols"], paths), paths)


def parse_scores(output: bytes, paths: Sequence[Path]) -> np.ndarray:
    """Each file's total score from ``rspamc --json`` output (one JSON object per file, concatenated)."""
    text = output.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    found: dict[str, float] = {}
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            break
        try:
            reply, at = decoder.raw_decode(text, at)
        except ValueError as exc:
            raise PeerError(f"rspamc printed something that is not JSON at character {at}") from exc
        if not isinstance(reply, dict) or "filename" not in reply:
            raise PeerError("rspamc printed a reply without a file name")
        if "error" in reply or not isinstance(reply.get("score"), (int, float)):
            raise PeerError(f"Rspamd did not score {Path(str(reply['filename'])).name}: {reply.get('error')}")
        found[str(reply["filename"])] = float(reply["score"])
    missing = [p.name for p in paths if str(p) not in found]
    if missing:
        raise PeerError(f"Rspamd gave no score for {len(missing)} mails (first: {missing[0]})")
    return np.asarray([found[str(p)] for p in paths], dtype=np.float64)


def _folders(local: Path) -> dict[str, Path]:
    return {
        "LOCAL_CONFDIR": local,
        "DBDIR": local / "db",
        "RUNDIR": local / "run",
        "LOGDIR": local / "log",
    }


def _local_config(work: Path, redis_port: int, scan_port: int, control_port: int, processes: int) -> Path:
    """The private LOCAL_CONFDIR (with its data folders); returns its path."""
    local = work / "rspamd"
    for folder in (local / "local.d", local / "override.d", *_folders(local).values()):
        folder.mkdir(parents=True, exist_ok=True)
    files = {
        "override.d/worker-normal.inc": f'bind_socket = "127.0.0.1:{scan_port}";\ncount = {processes};\n',
        "override.d/worker-controller.inc": f'bind_socket = "127.0.0.1:{control_port}";\n',
        "override.d/worker-proxy.inc": "enabled = false;\n",
        "override.d/worker-fuzzy.inc": "enabled = false;\n",
        # Port 9 (discard) on loopback: any lookup a remaining rule tries fails at once, offline.
        "override.d/options.inc": 'dns { nameserver = ["127.0.0.1:9"]; timeout = 0.1s; retransmits = 1; }\n',
        # Info: the workers say there when their compiled regexps are loaded (see _ready).
        "override.d/logging.inc": f'type = "file";\nfilename = "{local / "log" / "rspamd.log"}";\n'
        'level = "info";\n',
        "local.d/classifier-bayes.conf": f'backend = "redis";\nservers = "127.0.0.1:{redis_port}";\n'
        "autolearn = false;\n",
        **{f"local.d/{module}.conf": "enabled = false;\n" for module in NETWORK_MODULES},
        # These two keep their local checks; only their lookups go.
        "local.d/phishing.conf": "phishtank_enabled = false;\nopenphish_enabled = false;\n",
        "local.d/hfilter.conf": "helo_enabled = false;\nhostname_enabled = false;\nfrom_enabled = false;\n",
    }
    for name, text in files.items():
        (local / name).write_text(text)
    return local


def _pings(client: redis.Redis) -> bool:
    with contextlib.suppress(redis.RedisError):
        return bool(client.ping())
    return False


def _ready(scan_port: int, control_port: int, log: Path, processes: int) -> bool:
    """Both workers answer, and every scanner has loaded the compiled (hyperscan) regexps.

    Workers answer before the helper has compiled the regexps, and scan with
    slower fallbacks until then; a long-running Rspamd has them loaded, so the
    scoring waits for them (unless this Rspamd has no hyperscan at all).
    """
    if not (_pong(scan_port) and _pong(control_port)):
        return False
    text = log.read_bytes() if log.exists() else b""
    if b"loaded hyperscan engine" not in text:
        return True
    return text.count(b"(normal) rspamd_worker_hyperscan_ready") >= processes


def _pong(port: int) -> bool:
    """True when a worker on ``port`` answers ``GET /ping``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return False
    return b"pong" in reply
