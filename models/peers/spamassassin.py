"""SpamAssassin 4: local rules only, and Bayes learned from the training mails.

What its users run: ``sa-learn`` learns every training mail into a private
Bayes database; ``spamd`` (local tests only, ``-L``: no DNS, no network rules;
no user configuration, ``-x``) scans the test mails handed over by ``spamc``,
``processes`` at a time. Auto-learning is off, so the test mails never train
it. The rules are the installed ones: the distribution's package (Debian ships
a rule set in the package; ``sa-update`` needs the network and is never run).

SpamAssassin prints its total with one decimal; the score used here is the sum
of the scores of the rules that fired (``_TESTSSCORES_`` in a header added for
this purpose), which is the same total to the rules' own precision, so fewer
mails tie. It is checked against the printed total.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

import numpy as np

from warden.models.exceptions import PeerError
from warden.models.peers.common import (
    CpuMeter,
    Daemon,
    LabelledMail,
    MailFolders,
    PeerResult,
    daemons,
    first_line,
    missing_programs,
    run,
)
from warden.streams.settings import PeerSettings

NAME = "spamassassin"
#: Where Debian installs the package's rules, and where sa-update would put newer ones.
PACKAGE_RULES = Path("/usr/share/spamassassin")
UPDATED_RULES = Path("/var/lib/spamassassin")
_TESTS_HEADER = "X-Spam-Tests"
_CONFIG = ("bayes_auto_learn 0", f"add_header all {_TESTS_HEADER.removeprefix('X-Spam-')} _TESTSSCORES(,)_")
_STATUS_SCORE = re.compile(r"score=(-?\d+(?:\.\d+)?)")
_MAGIC = re.compile(rb"^\S+\s+\S+\s+(\d+)\s+\S+\s+non-token data: (nspam|nham)$", re.MULTILINE)


class SpamAssassin:
    """The SpamAssassin peer."""

    name = NAME

    def __init__(self, settings: PeerSettings) -> None:
        self._settings = settings

    def missing(self) -> str | None:
        """Why SpamAssassin cannot run here (a program or its rules not installed), or None."""
        absent = missing_programs([self._settings.sa_learn, self._settings.spamd, self._settings.spamc])
        if absent is not None:
            return absent
        if not rule_source():
            return (
                f"no SpamAssassin rules are installed (none in {PACKAGE_RULES}; sa-update needs the network)"
            )
        return None

    def run(self, train: Sequence[LabelledMail], test: Sequence[bytes], work: Path) -> PeerResult:
        """Learn the training mails with sa-learn, score the test mails with spamd (PeerError on failure)."""
        s = self._settings
        spam, ham, tests = MailFolders.write(train, test, work)
        # spamd refuses to scan as root: it then runs its children as nobody, who must read the database.
        as_nobody = os.geteuid() == 0
        with tempfile.TemporaryDirectory(prefix="warden-sa-") as private:
            home = Path(private) / "home"
            home.mkdir()
            database = home / "bayes"
            learn = [s.sa_learn, "-L", f"--dbpath={database}", *(f"--cf={line}" for line in _CONFIG)]
            meter = CpuMeter()
            for flag, paths in (("--spam", spam), ("--ham", ham)):
                if paths:
                    run([*learn, flag, str(paths[0].parent)], s.run_timeout_s)
            train_cpu = meter.elapsed()
            learned = learned_counts(run([*learn, "--dump", "magic"], s.run_timeout_s))
            options: list[str] = []
            if as_nobody:
                nobody = pwd.getpwnam("nobody")
                Path(private).chmod(0o711)
                for path in (home, *home.iterdir()):
                    os.chown(path, nobody.pw_uid, nobody.pw_gid)
                options = ["-u", "nobody"]
            socket_path = Path(private) / "spamd.sock"
            with daemons() as started:
                spamd = Daemon(
                    [
                        s.spamd,
                        "-L",
                        "-x",
                        f"--helper-home-dir={home}",
                        f"--socketpath={socket_path}",
                        f"--max-children={s.processes}",
                        f"--min-children={s.processes}",
                        f"--max-spare={s.processes}",
                        "--syslog=stderr",
                        f"--cf=bayes_path {database}",
                        *(f"--cf={line}" for line in _CONFIG),
                        *options,
                    ],
                    work / "spamd.log",
                )
                started.append(spamd)
                spamd.wait_until(lambda: _answers(socket_path), s.start_timeout_s)
                meter = CpuMeter([spamd])
                with ThreadPoolExecutor(max_workers=s.processes) as pool:
                    outputs = list(pool.map(lambda p: self._spamc(socket_path, p), tests))
                score_cpu = meter.elapsed()
        scores = np.asarray([total_score(out, path.name) for out, path in zip(outputs, tests, strict=True)])
        return PeerResult(
            name=NAME,
            status="ok",
            version=first_line([s.spamd, "--version"]),
            settings=f"spamd -L (local tests only), no user config, {s.processes} children; rules: "
            f"{rule_source()}; Bayes from the training mails (sa-learn), auto-learn off; "
            "score = sum of the scores of the rules hit",
            scores=scores,
            train_mails=len(train),
            train_cpu_s=train_cpu,
            score_mails=len(test),
            score_cpu_s=score_cpu,
            notes=(
                f"Bayes learned {learned.get('nspam', 0)} spam and {learned.get('nham', 0)} ham "
                "(SpamAssassin uses Bayes once it has learned 200 of each)",
            ),
        )

    def _spamc(self, socket_path: Path, path: Path) -> bytes:
        # -x: a failed scan is an error, not the message passed back unscanned.
        return run(
            [self._settings.spamc, "-x", "-U", str(socket_path)],
            self._settings.run_timeout_s,
            stdin=path.read_bytes(),
        )


def rule_source() -> str:
    """Which rules SpamAssassin loads here: sa-update's when present, else the package's; "" when none."""
    updated = sorted(UPDATED_RULES.glob("*/updates_spamassassin_org/*.cf"))
    if updated:
        return f"sa-update rules in {updated[0].parent}"
    if any(PACKAGE_RULES.glob("*.cf")):
        return f"the package's default rules ({PACKAGE_RULES})"
    return ""


def _answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, contextlib.suppress(OSError):
        sock.connect(str(socket_path))
        return True
    return False


def learned_counts(dump: bytes) -> dict[str, int]:
    """``nspam`` and ``nham`` from ``sa-learn --dump magic``."""
    return {name.decode(): int(count) for count, name in _MAGIC.findall(dump)}


def total_score(output: bytes, name: str) -> float:
    """The total score of one mail from spamc's output (the message with spamd's headers).

    Raises PeerError when spamd's headers are missing or disagree with each other.
    """
    end = min((i for i in (output.find(b"\n\n"), output.find(b"\n\r\n")) if i >= 0), default=len(output))
    headers = BytesHeaderParser(policy=compat32).parsebytes(output[:end])
    tests, status = headers.get(_TESTS_HEADER), headers.get("X-Spam-Status")
    if tests is None or status is None:
        raise PeerError(f"spamd returned mail {name} without its {_TESTS_HEADER} and X-Spam-Status headers")
    unfolded = "".join(str(tests).split())
    total = 0.0
    if unfolded != "none":
        for item in unfolded.split(","):
            rule, _, value = item.partition("=")
            try:
                total += float(value)
            except ValueError as exc:
                raise PeerError(
                    f"spamd listed rule {rule[:60]!r} with an unreadable score {value[:30]!r}"
                ) from exc
    printed = _STATUS_SCORE.search(" ".join(str(status).split()))
    if printed is None or abs(round(total, 3) - float(printed.group(1))) > 0.051:
        raise PeerError(f"spamd's rules of mail {name} add up to {total:.3f}, not its score ({status!s:.80})")
    return round(total, 3)
