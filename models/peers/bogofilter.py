"""bogofilter: a Bayesian filter that registers every training mail.

Every training mail is registered (``-s`` spam, ``-n`` ham; one process per
class, reading the file names from its standard input with ``-b``) into a
private word list (``-d``); the test mails are classified in one process the
same way, printing the spamicity with 16 decimals (``-TT``). No configuration
file is read (``-C``; Debian's ``/etc/bogofilter.cf`` sets nothing), so the
settings are bogofilter's defaults. bogofilter's spamicity is exactly 0 or 1
for the clearest mails: those tie, as they would for its users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from warden.models.exceptions import PeerError
from warden.models.peers.common import (
    CpuMeter,
    LabelledMail,
    MailFolders,
    PeerResult,
    first_line,
    missing_programs,
    run,
)
from warden.streams.settings import PeerSettings

NAME = "bogofilter"
# bogofilter exits 0 (spam), 1 (ham) or 2 (unsure) after classifying; 3 is an error.
_CLASSIFIED = (0, 1, 2)


class Bogofilter:
    """The bogofilter peer."""

    name = NAME

    def __init__(self, settings: PeerSettings) -> None:
        self._settings = settings

    def missing(self) -> str | None:
        """Why bogofilter cannot run here, or None."""
        return missing_programs([self._settings.bogofilter])

    def run(self, train: Sequence[LabelledMail], test: Sequence[bytes], work: Path) -> PeerResult:
        """Register every training mail, then classify the test mails (PeerError on failure)."""
        binary = self._settings.bogofilter
        timeout = self._settings.run_timeout_s
        wordlist = work / "wordlist"
        wordlist.mkdir()
        spam, ham, tests = MailFolders.write(train, test, work)
        base = [binary, "-C", "-d", str(wordlist)]
        meter = CpuMeter()
        for flag, paths in (("-s", spam), ("-n", ham)):
            if paths:
                run([*base, flag, "-b"], timeout, stdin=_names(paths))
        train_cpu = meter.elapsed()
        meter = CpuMeter()
        output = run([*base, "-TT", "-b"], timeout, stdin=_names(tests), ok=_CLASSIFIED)
        score_cpu = meter.elapsed()
        return PeerResult(
            name=NAME,
            status="ok",
            version=first_line([binary, "-V"]),
            settings="defaults (-C: no config file); every training mail registered (-s/-n); spamicity (-TT)",
            scores=parse_scores(output, tests),
            train_mails=len(train),
            train_cpu_s=train_cpu,
            score_mails=len(test),
            score_cpu_s=score_cpu,
        )


def _names(paths: Sequence[Path]) -> bytes:
    return "".join(f"{p}\n" for p in paths).encode()


def parse_scores(output: bytes, paths: Sequence[Path]) -> np.ndarray:
    """The spamicity of each file in ``paths`` from ``-TT -b`` output (``<file> <spamicity>`` lines)."""
    found: dict[str, float] = {}
    for line in output.decode("utf-8", "replace").splitlines():
        name, _, value = line.rpartition(" ")
        try:
            score = float(value)
        except ValueError as exc:
            raise PeerError(f"bogofilter printed an unreadable line: {line[:200]!r}") from exc
        if not math.isfinite(score):
            raise PeerError(f"bogofilter printed a spamicity that is not a number: {line[:200]!r}")
        found[name] = score
    missing = [p.name for p in paths if str(p) not in found]
    if missing:
        raise PeerError(f"bogofilter gave no spamicity for {len(missing)} mails (first: {missing[0]})")
    return np.asarray([found[str(p)] for p in paths], dtype=np.float64)
