"""Every system's score of every evaluated mail, as one CSV, so anyone can recompute the figures.

One row per evaluated mail, in the order the protocol evaluated them, and one
column per system (wide, so a ROC curve is one column against ``label``):

``file``
    the corpus file the mail came from (``<folder>/<name>.txt`` in the npm
    package's ``data`` folder), or empty for a mail that has none;
``event_id``
    the mail's event id in Warden's reports;
``label``
    ``spam`` or ``ham``;
``time``
    the mail's trusted time (its receiving server's clock), ISO 8601 in UTC;
then one column per system (``warden``, the baselines, the peers that ran),
each its own score as that system gives it: Warden's and the baselines'
probabilities, bogofilter's spamicity, SpamAssassin's and Rspamd's points.
Higher is spammier in every column; the scales differ. A peer that did not
run has no column (the report and ``peers.json`` say why).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from warden.models.exceptions import ReportError

FIXED_COLUMNS = ("file", "event_id", "label", "time")


@dataclass(frozen=True)
class ScoreTable:
    """The evaluated mails of one protocol and each system's scores of them."""

    files: Sequence[str]
    event_ids: Sequence[str]
    labels: np.ndarray  # 1 = spam
    times: np.ndarray  # epoch seconds
    scores: Mapping[str, np.ndarray]

    def write(self, path: Path) -> Path:
        """Write the CSV to ``path`` (replacing it); raises ReportError when the columns differ in length."""
        n = len(self.event_ids)
        lengths = {
            len(self.files),
            len(self.labels),
            len(self.times),
            *(len(s) for s in self.scores.values()),
        }
        if lengths - {n}:
            raise ReportError(f"score table columns differ in length: {sorted(lengths | {n})}")
        clash = set(self.scores) & set(FIXED_COLUMNS)
        if clash:
            raise ReportError(f"a system may not be named like a fixed column: {sorted(clash)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow([*FIXED_COLUMNS, *self.scores])
            for i in range(n):
                writer.writerow(
                    [
                        self.files[i],
                        self.event_ids[i],
                        "spam" if self.labels[i] else "ham",
                        datetime.fromtimestamp(float(self.times[i]), UTC).isoformat(timespec="seconds"),
                        *(repr(float(s[i])) for s in self.scores.values()),
                    ]
                )
        tmp.replace(path)
        return path


def read(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of a score CSV (as strings) and its system columns, for checks and tests."""
    with path.open(newline="", encoding="utf-8") as source:
        reader = csv.DictReader(source)
        rows = list(reader)
        systems = [c for c in reader.fieldnames or () if c not in FIXED_COLUMNS]
    return rows, systems
