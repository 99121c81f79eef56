"""The outcome of the last ``warden retrain``, kept in the registry for the workers to export.

``warden retrain`` is a batch job (cron, a CronJob, Airflow) that Prometheus
never scrapes. At the end of every run that got the registry's lock it writes
one small record, :data:`RUN_FILE` in the registry's root: its outcome and
when it ended (a run refused by the lock writes nothing: another one is under
way). Workers read the registry for hot swaps already; they read this record
at the same refresh and export it as
``warden_retrain_last_run_timestamp_seconds{outcome}`` (docs: Operations,
"Alerts").

The record is not signed: it changes no model and no verdict, only what a
dashboard and an alert show, and only the pods that may write models may
write it. Read from a shared volume, it is still bounded: a record that is
too large, not JSON, or names an outcome outside :data:`RUN_OUTCOMES` is
refused with a reason, never turned into a label value.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from warden.models.exceptions import RegistryError

log = logging.getLogger(__name__)

#: The record's file name in the registry's root (beside the CURRENT and SHADOW pointers).
RUN_FILE = "RETRAIN"
#: A record is a few dozen bytes; anything past this is refused unread.
MAX_RECORD_BYTES = 1024

#: What a run ended with: :data:`models.retrain.Outcome`, or ``failed`` (an error stopped it).
RunOutcome = Literal[
    "promoted", "unchanged", "not_promoted", "too_little_data", "holdout_too_small", "failed"
]
RUN_OUTCOMES: tuple[RunOutcome, ...] = get_args(RunOutcome)


@dataclass(frozen=True)
class LastRun:
    """The last retrain run: its outcome and when it ended (epoch seconds, the job's clock)."""

    outcome: RunOutcome
    finished_at: float


def write_last_run(root: Path, outcome: RunOutcome, finished_at: float) -> bool:
    """Record a run's end; called by :func:`models.retrain.retrain` with the registry's lock held.

    Atomic (a reader sees the old record or the new one). A failure to write is
    logged and returns False, never raised: the run's own outcome stands, and
    the workers keep showing the previous run (whose age the alerts watch).
    """
    data = json.dumps({"outcome": outcome, "finished_at": finished_at}).encode()
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{RUN_FILE}.", dir=root)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, root / RUN_FILE)
    except OSError as exc:
        log.warning("retrain: could not record the run's outcome in %s: %s", root, exc)
        return False
    return True


def read_last_run(root: Path) -> LastRun | None:
    """The last run recorded in ``root``; called by the workers at each registry refresh.

    None when no run was recorded. Raises :class:`~models.exceptions.RegistryError`
    when the record cannot be read or is not one :func:`write_last_run` writes.
    """
    try:
        with (root / RUN_FILE).open("rb") as handle:
            raw = handle.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"retrain record unreadable: {exc.strerror}") from exc
    if len(raw) > MAX_RECORD_BYTES:
        raise RegistryError(f"retrain record longer than {MAX_RECORD_BYTES} bytes")
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError("retrain record is not JSON") from exc
    if not isinstance(record, dict):
        raise RegistryError("retrain record is not a JSON object")
    outcome, finished_at = record.get("outcome"), record.get("finished_at")
    if outcome not in RUN_OUTCOMES:
        raise RegistryError("retrain record names an unknown outcome")
    if (
        not isinstance(finished_at, int | float)
        or isinstance(finished_at, bool)
        or not math.isfinite(finished_at)
        or finished_at < 0
    ):
        raise RegistryError("retrain record has no valid end time")
    return LastRun(outcome, float(finished_at))
