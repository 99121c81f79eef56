"""Machine-written benchmark results: what ``warden bench --json FILE`` writes and the docs read.

A results file holds one run of ``warden bench``: one record per section that
ran, each with the moment it ended, the machine it ran on (cores, load
average, CPU model, Python), the parameters it ran with and its figures. The
docs site (``docs/hooks.py``, :mod:`infra.docs_pages`) renders the newest
record of each section from the files committed in ``docs/bench-results/``,
so a page's figures are always one run's, with its date and machine, and
their history lives in git.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warden.streams.exceptions import UsageError

#: The version of the file layout below; a reader refuses files of another version.
FORMAT = 1
#: Where the docs site reads committed results from (relative to the repository root).
RESULTS_DIR = Path("docs/bench-results")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    """The machine a section ran on, taken when it ends (the load average covers the run's last minutes)."""
    one, five, fifteen = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "load_average": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "cpu_model": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{platform.system()} {platform.machine()}",
    }


def _commit() -> str | None:
    """The git commit of the code measured, when it runs from a checkout (None otherwise)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


@dataclass
class Recorder:
    """Collects the sections of one ``warden bench`` run and writes them to ``path`` as each ends.

    Called by the bench after every section, so the file holds what finished
    even if a later section fails; a file that cannot be written is a
    :class:`UsageError` (a one-line message, before any section runs when the
    folder does not exist).
    """

    path: Path
    sections: list[dict[str, Any]] = field(default_factory=list)
    commit: str | None = field(default_factory=_commit)

    def __post_init__(self) -> None:
        if not self.path.parent.is_dir():
            raise UsageError(f"--json: folder {self.path.parent} does not exist")

    def add(
        self,
        section: str,
        figures: Mapping[str, float],
        started: float,
        parameters: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one section that began at ``started`` (epoch seconds) and ended now, then write the file."""
        ended = time.time()
        record: dict[str, Any] = {
            "section": section,
            "date": datetime.fromtimestamp(ended, UTC).isoformat(timespec="seconds"),
            "seconds": round(ended - started, 1),
            "machine": machine(),
            "commit": self.commit,
            "parameters": dict(parameters or {}),
            "figures": {name: float(value) for name, value in figures.items()},
        }
        if details is not None:
            record["details"] = dict(details)
        self.sections.append(record)
        self.write()

    def write(self) -> None:
        document = {"format": FORMAT, "sections": self.sections}
        try:
            self.path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--json: cannot write {self.path}: {exc.strerror}") from None


def load(path: Path) -> list[dict[str, Any]]:
    """The section records of one results file; ValueError names the file when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable results file ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path}: not a results file of format {FORMAT}")
    sections = document.get("sections")
    if not isinstance(sections, list) or not all(
        isinstance(s, dict) and {"section", "date", "machine", "figures"} <= s.keys() for s in sections
    ):
        raise ValueError(f"{path}: every section needs section, date, machine and figures")
    return sections


def latest(files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """The newest record of each section over ``files`` (by its date), with the file it came from."""
    newest: dict[str, dict[str, Any]] = {}
    for path in sorted(files):
        for record in load(path):
            name = record["section"]
            if name not in newest or record["date"] > newest[name]["date"]:
                newest[name] = {**record, "file": path.name}
    return newest
