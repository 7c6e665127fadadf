"""The MPI backend's manners: signals, the progress bar on rank 0, and failure detection of a dead rank.

MPI one-sided communication has no failure detection: a worker rank that dies (``kill -9``, an OOM kill,
a lost host) simply stops touching the windows, and a collective that includes it (the end barrier, the
gather, ``Win.Free``) waits forever. The backend therefore keeps one *progress word* per worker in the
control window (papers.md §2: the store is the only shared state, so it is where liveness is kept too):

* a worker writes its beat number into its word at least every :data:`BEAT_S` seconds -- between
  updates, and inside every spin loop (lock acquisition, slot claim), so a rank that waits for a lock
  held by a dead rank is still seen alive -- and :data:`DONE` when it leaves its loop;
* rank 0 remembers when each word last changed; a word unchanged for :data:`RANK_TIMEOUT_S` seconds
  (``LEASHED_MPI_RANK_TIMEOUT_S``, default 10) declares that rank failed: rank 0 writes its rank into the
  FAILED word and the stop value into the ticket counter, the surviving workers leave their loops
  between two updates and send their records to rank 0 point-to-point (no collective includes the dead
  rank), rank 0 saves what it has, marked ``failed_rank``, and every surviving rank exits without
  ``MPI_Finalize`` (which could wait for the dead one).

Whatever the dead rank committed is in the store (a leashed update is committed by one CAS, so it is
there whole or not at all); only its per-update *records* die with it (``extra["records_lost"]``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

__all__ = ["BEAT_S", "DONE", "RANK_TIMEOUT_S", "Abandon", "InterruptFlag", "progress_bar"]

#: seconds between two writes of a worker's progress word (at most; one Wtime call per update otherwise)
BEAT_S = 0.25
#: a progress word unchanged this long marks its rank failed (``LEASHED_MPI_RANK_TIMEOUT_S``)
RANK_TIMEOUT_S = float(os.environ.get("LEASHED_MPI_RANK_TIMEOUT_S", "10"))
#: the value a worker writes into its progress word when it leaves its loop normally
DONE = -1
#: point-to-point tag of a worker's records after a failure (the normal path uses ``gather``)
PARTS_TAG = 717


class Abandon(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a spin loop once a rank has been declared failed: leave the update unfinished."""


class InterruptFlag:
    """SIGINT or SIGTERM while the ranks run: note it instead of raising, so a rank leaves its loop between
    two updates (no MPI call is cut short, no window left locked), stops the others through the ticket
    counter, and the partial result is gathered and saved, marked ``interrupted``. mpiexec forwards both
    signals to every rank; ``exit_status`` is 130 for SIGINT and 143 for SIGTERM (128 + signal number, as
    the shell reports a process killed by it)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def raised(self) -> bool:
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum if self.signum is not None else signal.SIGINT)

    def _note(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def progress_bar(total: int, enabled: bool | None = None) -> Any:
    """A tqdm bar of gradients on stderr, as the threaded runtime shows (None: only on a terminal); None
    when tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit="grad", file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not enabled, mininterval=0.2)
