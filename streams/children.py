"""Child processes that die with their parent: the one helper every floor that starts one uses.

The dev stack's servers, the worker's ingest children and the peer filters'
daemons are started with :func:`die_with_parent` as their ``preexec_fn``, so
a killed Warden (even by SIGKILL) leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import signal

#: prctl(2) option: the signal a child receives when its parent thread exits (Linux).
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: receive SIGTERM when the parent dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
