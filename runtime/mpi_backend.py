"""The MPI backend: lock, hogwild and leashed across processes with MPI one-sided communication.

``mpiexec -n P python -m leashed train --backend mpi ...`` runs the asynchronous algorithms of papers.md §2
with P − 1 *worker ranks* and one *store rank* (rank 0). Rank 0 hosts the shared state in two MPI RMA
windows made with ``MPI.Win.Allocate``: a control window of int64 words (ticket counter, version or latest
word, lock word, per-slot state and reader counts) and a data window of float32 parameter vectors. Workers
never send messages during the run: they read the latest parameters and publish updates with passive-target
one-sided operations (``Lock_all`` for the whole run, every operation completed with ``Flush`` before the
next is issued, so the atomics on the control words are sequentially consistent, as papers.md §2.1 asks of
the pin/reclaim handshake).

Work sharing (papers.md §2, E·R gradients in total): an atomic ticket counter (``Fetch_and_op`` SUM);
ticket k is batch ``k % nb`` of epoch ``k // nb`` of a per-epoch permutation drawn from the seed (the schedule
of :mod:`leashed.sim.batches`, shared with the threaded runtime and the simulator), so the same batches are
used whatever the rank count.

Algorithms (papers.md §2):

``lock``
    LOCK: a spin lock on a control word (``Compare_and_swap`` 0 → rank, released with an atomic
    ``Fetch_and_op`` REPLACE after ``Flush``) around the read (Get θ, read t0) and around the apply
    (read t, Get θ, θ ← θ − α_c·s(τ)·g, Put θ, t ← t + 1). MPI's own exclusive window lock was measured at
    2–4 ms per acquisition when rank 0 is not inside MPI (the lock request needs target progress), against
    about 25 µs for the CAS lock, so the CAS lock is used.
``hogwild``
    HOG: no lock. Reads are ``Get_accumulate`` with ``NO_OP`` (element-wise atomic, torn across elements:
    MPI's counterpart of relaxed atomic loads, as fast as a plain ``Get``); the version counter is a
    ``Fetch_and_op`` SUM (the exact "ideal counter" of papers.md §2); the update is one ``Accumulate`` with
    ``MPI.SUM``, element-wise atomic, so no update is lost (a difference from threaded HOGWILD!'s racing
    stores).
``leashed``
    Leashed-SGD (papers.md §2.1) with a pool of 2·workers + 2 slots in the data window. The latest word
    packs (version, slot) and is replaced only by ``Compare_and_swap`` (ABA-safe: a recycled slot carries a
    new version). PIN = ``Fetch_and_op`` +1 on the slot's reader count, then re-read the latest word; the
    pin holds only if it is unchanged. A worker pins, Gets the latest vector, unpins, computes the gradient
    on its copy, then for each attempt pins the latest L, Gets it, unpins, applies α_c·s(τ)·g, Puts the
    result into a private slot N (claimed FREE → LIVE by CAS on the slot's state word) and publishes
    with CAS(latest, (t1, L), (t1 + 1, N)). A failed CAS retries the same gradient on the newer vector; after
    T_p failures (``persistence``) the gradient is dropped. The winner marks L STALE and reclaims it; a slot
    returns to FREE when STALE with no readers, by one rank's CAS STALE → FREE. Reader counts are never
    reset, so a late reader of a recycled slot only delays reclamation.

Instrumentation: every computed gradient is one record (thread = worker index, version read and committed,
τ, CAS attempts, dropped, and ``MPI.Wtime`` stamps relative to each rank's exit from a common start
``Barrier``), gathered to rank 0 after the run and assembled into one :class:`~leashed.results.RunResult`
(``source="runtime"``, ``extra["backend"] = "mpi"``). During the run rank 0 only polls the version word and
takes about ``spec.evaluations`` parameter snapshots (a consistent read of the latest vector), evaluated
after the run (training loss on up to 10,000 training rows, test accuracy on the test set).

Bad input raises :class:`~leashed.errors.SpecError` on every rank alike (checked collectively), so all ranks
stop together; :func:`mpi_command` prints the one-line error on rank 0 only and returns 2 on every rank.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leashed import errors
from leashed.algorithms import algorithm as algorithm_entry
from leashed.algorithms import entries as algorithm_entries
from leashed.assembly import commit_order as _commit_order  # shared with runtime/run.py
from leashed.assembly import lost_updates as _lost_updates
from leashed.errors import LeashedError, SpecError
from leashed.results import RunResult, Samples, machine_metadata
from leashed.runtime.mpi_health import (
    BEAT_S,
    DONE,
    PARTS_TAG,
    RANK_TIMEOUT_S,
    Abandon,
    InterruptFlag,
    progress_bar,
)
from leashed.sim.batches import BatchSchedule
from leashed.spec import ExperimentSpec, sparsifier_k
from leashed.steprules import fleet_beta, step_factor

__all__ = ["MPI_ALGORITHMS", "RankFailed", "mpi_command", "mpi_rank_from_env", "run_mpi"]

#: the algorithms the MPI backend runs (the registry's ``mpi`` trait: seq and sync have no asynchronous
#: store to share)
MPI_ALGORITHMS = tuple(a.name for a in algorithm_entries() if a.mpi)

# ---------------------------------------------------------------- control window layout (int64 words)
_TICKET = 0      # next ticket (gradient number); Fetch_and_op SUM
_LATEST = 1      # lock/hogwild: version t; leashed: (version << _SLOT_BITS) | slot
_LOCK = 2        # lock: 0 free, else the holder's rank
_DIVERGED = 3    # -1, or the version at which a worker saw a non-finite loss
_FAILED = 4      # -1, or the rank that rank 0 declared failed (runtime/mpi_health.py)
_END = 5         # rank 0's verdict at the end: 0 running, _END_OK every worker done, _END_FAILED a rank dead
_END_OK, _END_FAILED = 1, 2
_HEADER = 8      # per-slot words start here: state[S], then readers[S], then progress[workers]

_SLOT_BITS = 20
_SLOT_MASK = (1 << _SLOT_BITS) - 1
#: slot states: FREE (in the pool), LIVE (claimed: private while built, then published), STALE (replaced)
_FREE, _LIVE, _STALE = 0, 2, 3
_STOP = 1 << 62  # written into the ticket counter to stop all workers (divergence, Ctrl-C)

#: training rows the sampled loss is evaluated on (the test set is always used whole)
LOSS_ROWS = 10_000
#: seconds between rank 0's polls of the version word (``LEASHED_MPI_POLL_S``); on transports where
#: passive-target operations need the target's progress engine, this bounds their latency (docs/mpi.md)
POLL_INTERVAL_S = float(os.environ.get("LEASHED_MPI_POLL_S", "0.002"))


def _import_mpi() -> Any:
    """mpi4py's MPI module, or a one-line SpecError saying how to install it."""
    try:
        import mpi4py
    except ImportError:
        raise SpecError("the mpi backend needs mpi4py and an MPI library: "
                        "pip install 'leashed-sgd[mpi]' (or use --backend threads)") from None
    if "mpi4py.MPI" not in sys.modules and "MPI4PY_RC_THREAD_LEVEL" not in os.environ:
        # The ranks are single-threaded Python processes (loss_grad only releases the GIL); asking for
        # less than MPI_THREAD_MULTIPLE spares MPICH its global critical section on every RMA call
        # (measured: 30-70% more updates/s on the counter model). MPI4PY_RC_THREAD_LEVEL=multiple
        # restores it, e.g. for MPICH's asynchronous progress thread (docs/mpi.md).
        mpi4py.rc.thread_level = "funneled"
    from mpi4py import MPI

    return MPI


def mpi_rank_from_env() -> int:
    """This process's rank as the launcher announces it (0 without a launcher), without importing MPI.

    For command-line code that must decide who prints before MPI is initialised (e.g. usage errors).
    """
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID"):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


class _State:
    """Process-wide: a rank was declared failed during this process's run (see :func:`mpi_command`)."""

    broken = False


_state = _State()


# ================================================================ collective error handling
class _PeerFailed(Exception):
    """Another rank failed with an unexpected (non-user) error; this rank stops quietly."""


def _collective(comm: Any, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on every rank; if it fails anywhere, every rank raises (the same one-line error).

    A user error (:class:`LeashedError`) of the lowest failing rank is raised on all ranks with the same
    class and message; an unexpected exception is re-raised where it happened and stops the others quietly.
    """
    value, failure, exc_kept = None, None, None
    try:
        value = fn()
    except LeashedError as exc:
        failure = ("user", type(exc).__name__, str(exc))
        exc_kept = exc
    except Exception as exc:  # noqa: BLE001 - reported below, after telling the other ranks
        failure = ("internal", type(exc).__name__, str(exc))
        exc_kept = exc
    failures = comm.allgather(failure)
    first = next((f for f in failures if f is not None), None)
    if first is None:
        return value
    kind, name, message = first
    if failure is not None and failure == first and kind == "internal":
        raise exc_kept  # type: ignore[misc]
    if kind == "user":
        cls = getattr(errors, name, None)
        if not (isinstance(cls, type) and issubclass(cls, LeashedError)):
            cls = LeashedError
        raise cls(message)
    raise _PeerFailed(f"{name}: {message}")


# ================================================================ workload
@dataclass
class _Workload:
    """Model, data and derived sizes (the threaded runtime's :func:`leashed.runtime.run.prepare`)."""

    prep: Any
    k_keep: int

    @property
    def model(self) -> Any:
        return self.prep.model

    @property
    def dataset(self) -> Any:
        return self.prep.dataset

    @property
    def total(self) -> int:
        return int(self.prep.total)

    @property
    def n_rows(self) -> int:
        return int(self.prep.bound.n_rows)


def _build_workload(spec: ExperimentSpec) -> _Workload:
    """Load and bind exactly as the threaded runtime does, so both backends train the same problem."""
    from leashed.runtime.run import prepare

    prep = prepare(spec)
    return _Workload(prep, sparsifier_k(spec.sparsifier, int(prep.model.n_params)))


# ================================================================ step sizes and sparsifiers
def _step_factor_fn(spec: ExperimentSpec, workers: int) -> Callable[[int], float]:
    """s(τ) of papers.md §3: the spec's step table if it has one (s(min(τ, K))), else constant, inverse
    or fleet (with the integer floor of papers.md §3.1) in closed form."""
    policy = "normalised" if spec.step_table else spec.step_policy
    if policy != "tail":
        return lambda tau: step_factor(policy, tau, workers, table=spec.step_table)
    raise SpecError(f"step policy {policy!r} needs a step table on the mpi backend (its staleness sample "
                    f"would be state shared across ranks); pass one from `leashed fit`, use constant, "
                    f"inverse or fleet, or --backend threads")


class _Sparsifier:
    """Φ of papers.md §5 on a worker's gradient: top-k (ties: lower index) or rand-k, optional memory."""

    def __init__(self, spec: ExperimentSpec, n_params: int, k: int, worker: int) -> None:
        self.kind = spec.sparsifier.split(":")[0]
        self.k, self.n = k, n_params
        self.memory = np.zeros(n_params, np.float32) if spec.error_memory and self.kind != "none" else None
        self.rng = np.random.default_rng([spec.seed, 1_000_003, worker])

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.k < self.n

    def __call__(self, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) kept from ``grad`` (+ memory); updates the memory."""
        v = grad if self.memory is None else self.memory + grad
        if self.kind == "topk":
            mag = np.abs(v)
            kth = np.partition(mag, self.n - self.k)[self.n - self.k]
            above = np.flatnonzero(mag > kth)
            ties = np.flatnonzero(mag == kth)[: self.k - len(above)]
            idx = np.sort(np.concatenate([above, ties]))
        else:
            idx = np.sort(self.rng.choice(self.n, self.k, replace=False))
        vals = v[idx].copy()
        if self.memory is not None:
            self.memory[...] = v
            self.memory[idx] = 0.0
        return idx, vals


# ================================================================ the shared store (RMA windows)
class _Store:
    """The two RMA windows on rank 0 and the one-sided operations on them (each completed by a Flush)."""

    def __init__(self, MPI: Any, comm: Any, n_params: int, n_slots: int) -> None:
        self.MPI, self.comm = MPI, comm
        self.n, self.slots = n_params, n_slots
        self.state0 = _HEADER
        self.readers0 = _HEADER + n_slots
        self.progress0 = _HEADER + 2 * n_slots  # one progress word per worker (runtime/mpi_health.py)
        n_ctrl = self.n_ctrl = self.progress0 + comm.Get_size() - 1
        #: called every few spins of a wait (lock, slot claim): heartbeats, and Abandon after a failure
        self.spin_hook: Callable[[], None] | None = None
        self.broken = False  # a rank was declared failed: no collective on these windows any more
        here = comm.Get_rank() == 0
        self.ctrl = MPI.Win.Allocate(n_ctrl * 8 if here else 0, 8, comm=comm)
        self.data = MPI.Win.Allocate(n_slots * n_params * 4 if here else 0, 4, comm=comm)
        self._one = np.zeros(1, np.int64)
        self._cmp = np.zeros(1, np.int64)
        self._res = np.zeros(1, np.int64)
        self._states = np.zeros(n_slots, np.int64)

    def initialise(self, theta0: np.ndarray, latest: int) -> None:
        """Rank 0: zero the control words, write θ_0 into slot 0 (before the start barrier)."""
        MPI = self.MPI
        ctrl = np.zeros(self.n_ctrl, np.int64)
        ctrl[_LATEST] = latest
        ctrl[_DIVERGED] = -1
        ctrl[_FAILED] = -1
        ctrl[self.state0] = _LIVE
        for win, buf in ((self.ctrl, ctrl), (self.data, theta0)):
            win.Lock(0, MPI.LOCK_EXCLUSIVE)
            win.Put(buf, 0)
            win.Unlock(0)

    def open(self) -> None:
        self.ctrl.Lock_all()
        self.data.Lock_all()

    def close(self) -> None:
        self.data.Unlock_all()
        self.ctrl.Unlock_all()

    def free(self) -> None:
        self.data.Free()
        self.ctrl.Free()

    # ------------------------------------------------------------ control words (atomic, flushed)
    def fop(self, word: int, value: int, op: Any = None) -> int:
        """Fetch_and_op (SUM by default) on a control word; returns the old value."""
        self._one[0] = value
        self.ctrl.Fetch_and_op(self._one, self._res, 0, word, self.MPI.SUM if op is None else op)
        self.ctrl.Flush(0)
        return int(self._res[0])

    def read(self, word: int) -> int:
        self.ctrl.Fetch_and_op(self._one, self._res, 0, word, self.MPI.NO_OP)
        self.ctrl.Flush(0)
        return int(self._res[0])

    def write(self, word: int, value: int) -> None:
        self.fop(word, value, self.MPI.REPLACE)

    def cas(self, word: int, expected: int, new: int) -> int:
        """Compare_and_swap; returns the old value (success iff it equals ``expected``)."""
        self._one[0] = new
        self._cmp[0] = expected
        self.ctrl.Compare_and_swap(self._one, self._cmp, self._res, 0, word)
        self.ctrl.Flush(0)
        return int(self._res[0])

    def slot_states(self) -> np.ndarray:
        self.ctrl.Get_accumulate(self._one, self._states, 0, (self.state0, self.slots, self.MPI.INT64_T),
                                 self.MPI.NO_OP)
        self.ctrl.Flush(0)
        return self._states

    # ------------------------------------------------------------ parameter vectors
    def _target(self, slot: int) -> tuple[int, int, Any]:
        return (slot * self.n, self.n, self.MPI.FLOAT)

    def get(self, slot: int, out: np.ndarray) -> None:
        self.data.Get(out, 0, self._target(slot))
        self.data.Flush(0)

    def get_atomic(self, out: np.ndarray, scratch: np.ndarray) -> None:
        """Element-wise atomic read of slot 0 (hogwild): Get_accumulate with NO_OP."""
        self.data.Get_accumulate(scratch, out, 0, self._target(0), self.MPI.NO_OP)
        self.data.Flush(0)

    def put(self, slot: int, buf: np.ndarray) -> None:
        self.data.Put(buf, 0, self._target(slot))
        self.data.Flush(0)

    def accumulate(self, buf: np.ndarray) -> None:
        self.data.Accumulate(buf, 0, self._target(0), self.MPI.SUM)
        self.data.Flush(0)

    # ------------------------------------------------------------ lock (CAS spin lock)
    def acquire(self, me: int) -> None:
        spins = 0
        while self.cas(_LOCK, 0, me) != 0:
            spins += 1
            if spins > 4:
                os.sched_yield()  # oversubscribed hosts: let the holder run
            if self.spin_hook is not None and spins % 16 == 0:
                self.spin_hook()  # the holder may be dead: heartbeat, and leave once it is declared so

    def release(self) -> None:
        self.write(_LOCK, 0)

    # ------------------------------------------------------------ leashed: pin / reclaim / claim
    def pin(self) -> tuple[int, int, int]:
        """PIN (papers.md §2.1): (slot, version, latest word) of a vector that cannot be recycled."""
        while True:
            word = self.read(_LATEST)
            slot = word & _SLOT_MASK
            self.fop(self.readers0 + slot, 1)
            if self.read(_LATEST) == word:
                return slot, word >> _SLOT_BITS, word
            if self.fop(self.readers0 + slot, -1) == 1:  # replaced meanwhile: back off (and reclaim)
                self.reclaim(slot)

    def unpin(self, slot: int) -> None:
        """UNPIN: the last reader out reclaims (the count after the decrement comes with the Fetch_and_op;
        if others remain, the last of them reclaims)."""
        if self.fop(self.readers0 + slot, -1) == 1:
            self.reclaim(slot)

    def reclaim(self, slot: int) -> None:
        """RECLAIM: a STALE slot without readers returns to FREE, by exactly one rank's CAS."""
        if self.read(self.state0 + slot) == _STALE and self.read(self.readers0 + slot) == 0:
            self.cas(self.state0 + slot, _STALE, _FREE)

    def claim(self, start: int) -> int:
        """A FREE slot, made LIVE by CAS: private to this rank until published. Nobody else touches a LIVE
        slot that is not the latest (only the rank that replaces the latest marks it STALE), so claiming
        straight into LIVE spares a state write before the publishing CAS."""
        spins = 0
        while True:
            states = self.slot_states()
            for i in range(self.slots):
                slot = (start + i) % self.slots
                if states[slot] == _FREE and self.cas(self.state0 + slot, _FREE, _LIVE) == _FREE:
                    return slot
            spins += 1
            if spins > 2:
                os.sched_yield()
            if self.spin_hook is not None and spins % 16 == 0:
                self.spin_hook()

    def live_vectors(self) -> int:
        return int(np.count_nonzero(self.slot_states() != _FREE))


#: the former name of :class:`~leashed.runtime.mpi_health.InterruptFlag` (now SIGINT and SIGTERM)
_InterruptFlag = InterruptFlag


class RankFailed(LeashedError):
    """A worker rank stopped writing its progress word (runtime/mpi_health.py): the partial result was
    saved, marked ``failed_rank``; status 1."""

    exit_code = 1


# ================================================================ the worker ranks
class _Recorder:
    """Per-update records of one worker, preallocated for every ticket it could draw."""

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.thread = np.zeros(capacity, np.int32)
        self.version_read = np.zeros(capacity, np.int64)
        self.version_commit = np.zeros(capacity, np.int64)
        self.staleness = np.zeros(capacity, np.int64)
        self.attempts = np.zeros(capacity, np.int32)
        self.dropped = np.zeros(capacity, np.bool_)
        self.t_start = np.zeros(capacity, np.float64)
        self.t_grad = np.zeros(capacity, np.float64)
        self.t_commit = np.zeros(capacity, np.float64)

    def add(self, thread: int, t0: int, t1: int, attempts: int, dropped: bool,
            t_start: float, t_grad: float, t_commit: float) -> None:
        i = self.n
        self.thread[i] = thread
        self.version_read[i] = t0
        self.version_commit[i] = -1 if dropped else t1
        self.staleness[i] = -1 if dropped else t1 - t0
        self.attempts[i] = attempts
        self.dropped[i] = dropped
        self.t_start[i], self.t_grad[i], self.t_commit[i] = t_start, t_grad, t_commit
        self.n = i + 1

    def export(self) -> dict[str, np.ndarray]:
        names = ("thread", "version_read", "version_commit", "staleness", "attempts", "dropped",
                 "t_start", "t_grad", "t_commit")
        return {name: getattr(self, name)[: self.n].copy() for name in names}


class _Worker:
    """One worker rank: draws tickets and runs its algorithm against the store (papers.md §2)."""

    def __init__(self, spec: ExperimentSpec, work: _Workload, store: _Store, MPI: Any, rank: int,
                 workers: int) -> None:
        self.spec, self.work, self.store, self.MPI = spec, work, store, MPI
        self.rank, self.index = rank, rank - 1
        self.total = work.total
        self.bound = work.prep.bound
        self.batches = BatchSchedule(work.n_rows, spec.batch_size, spec.seed)
        self.step = _step_factor_fn(spec, workers)
        self.sparse = _Sparsifier(spec, work.model.n_params, work.k_keep, self.index)
        n = int(work.model.n_params)
        self.theta = np.zeros(n, np.float32)   # the copy the gradient is computed on
        self.buf = np.zeros(n, np.float32)     # the vector being built (lock, leashed) / the update (hogwild)
        self.grad = np.zeros(n, np.float32)
        self.scratch = np.zeros(n, np.float32)
        self.rec = _Recorder(self.total)
        self.cas_failures = 0
        self.persistence = spec.persistence
        self.t_origin = 0.0
        self.diverged = False
        self.interrupted = False
        self.abandoned = False  # rank 0 declared some rank failed (runtime/mpi_health.py)
        self.beat, self.next_beat = 0, 0.0
        self.progress_word = store.progress0 + self.index
        store.spin_hook = self._spin

    def now(self) -> float:
        return self.MPI.Wtime() - self.t_origin

    def heartbeat(self) -> None:
        """Write the next beat into this rank's progress word, at most every BEAT_S seconds."""
        t = self.MPI.Wtime()
        if t >= self.next_beat:
            self.beat += 1
            self.store.write(self.progress_word, self.beat)
            self.next_beat = t + BEAT_S

    def _spin(self) -> None:
        """Inside a wait: stay visibly alive; leave the wait once rank 0 has declared a rank failed."""
        self.heartbeat()
        if self.store.read(_FAILED) >= 0:
            raise Abandon

    def _gradient(self, ticket: int, version: int) -> bool:
        """g ← ∇f_B(θ_loc) (sparsified); False (and every worker stopped) on a non-finite loss."""
        loss = self.bound.loss_grad(self.theta, self.batches.rows(ticket), self.grad)
        if math.isfinite(loss):
            return True
        self.store.cas(_DIVERGED, -1, version)
        self.store.write(_TICKET, _STOP)
        self.diverged = True
        return False

    def _apply(self, target: np.ndarray, factor: float) -> None:
        """target ← target − α_c·s(τ)·g (or only the sparsifier's coordinates)."""
        alpha = np.float32(self.spec.lr * factor)
        if self.sparse.active:
            idx, vals = self.sparse(self.grad)
            target[idx] -= alpha * vals
        else:
            np.multiply(self.grad, alpha, out=self.scratch)
            target -= self.scratch

    def run(self, interrupt: InterruptFlag | None = None) -> None:
        algorithm = self.spec.algorithm
        body = {"lock": self._lock, "hogwild": self._hogwild, "leashed": self._leashed}[algorithm]
        store = self.store
        with np.errstate(all="ignore"):  # a diverging run is detected from the loss and reported once
            try:
                while True:
                    if interrupt is not None and interrupt.raised:  # a signal: stop every rank, keep the rest
                        store.write(_TICKET, _STOP)
                        self.interrupted = True
                        break
                    self.heartbeat()
                    ticket = store.fop(_TICKET, 1)
                    if ticket >= self.total or not body(ticket):
                        break
            except Abandon:  # the update in hand is left uncommitted (it was never published)
                self.abandoned = True
        store.write(self.progress_word, DONE)

    # ------------------------------------------------------------ LOCK
    def _lock(self, ticket: int) -> bool:
        store, me = self.store, self.rank
        t_start = self.now()
        store.acquire(me)
        store.get(0, self.theta)
        t0 = store.read(_LATEST)
        store.release()
        if not self._gradient(ticket, t0):
            return False
        t_grad = self.now()
        store.acquire(me)
        t1 = store.read(_LATEST)
        store.get(0, self.buf)
        self._apply(self.buf, self.step(t1 - t0))
        store.put(0, self.buf)
        store.write(_LATEST, t1 + 1)
        store.release()
        self.rec.add(self.index, t0, t1, 1, False, t_start, t_grad, self.now())
        return True

    # ------------------------------------------------------------ HOGWILD!
    def _hogwild(self, ticket: int) -> bool:
        store = self.store
        t_start = self.now()
        t0 = store.read(_LATEST)
        store.get_atomic(self.theta, self.scratch)
        if not self._gradient(ticket, t0):
            return False
        t_grad = self.now()
        t1 = store.fop(_LATEST, 1)
        self.buf.fill(0.0)
        self._apply(self.buf, self.step(t1 - t0))
        store.accumulate(self.buf)
        self.rec.add(self.index, t0, t1, 1, False, t_start, t_grad, self.now())
        return True

    # ------------------------------------------------------------ Leashed-SGD
    def _leashed(self, ticket: int) -> bool:
        store = self.store
        t_start = self.now()
        slot, t0, _ = store.pin()
        store.get(slot, self.theta)
        store.unpin(slot)
        if not self._gradient(ticket, t0):
            return False
        t_grad = self.now()
        if self.sparse.active:  # Φ once per gradient: retries re-apply the same sparse update
            idx, vals = self.sparse(self.grad)
            self.grad.fill(0.0)
            self.grad[idx] = vals
        mine = store.claim(2 * self.index)
        failures = 0
        while True:
            latest, t1, word = store.pin()
            store.get(latest, self.buf)
            store.unpin(latest)
            np.multiply(self.grad, np.float32(self.spec.lr * self.step(t1 - t0)), out=self.scratch)
            self.buf -= self.scratch
            store.put(mine, self.buf)
            if store.cas(_LATEST, word, ((t1 + 1) << _SLOT_BITS) | mine) == word:
                store.write(store.state0 + latest, _STALE)
                store.reclaim(latest)
                self.rec.add(self.index, t0, t1, failures + 1, False, t_start, t_grad, self.now())
                return True
            failures += 1
            self.cas_failures += 1
            if failures > self.persistence:
                store.write(store.state0 + mine, _FREE)  # never published: nobody else can hold it
                self.rec.add(self.index, t0, -1, failures, True, t_start, t_grad, self.now())
                return True


# ================================================================ rank 0: store, snapshots, assembly
@dataclass
class _Snapshot:
    time: float
    version: int
    live: int
    theta: np.ndarray


class _Host:
    """Rank 0 during the run: polls version and live vectors, takes parameter snapshots (as the threaded
    runtime's coordinator does) until the workers' end barrier completes."""

    def __init__(self, spec: ExperimentSpec, work: _Workload, store: _Store, MPI: Any, workers: int) -> None:
        self.spec, self.work, self.store, self.MPI = spec, work, store, MPI
        self.workers = workers
        self.snapshots: list[_Snapshot] = []
        self.live: tuple[list[float], list[int], list[int]] = ([], [], [])
        self.t_origin = 0.0
        self.interrupted = False
        self.signum: int | None = None  # the signal rank 0 received (SIGINT, SIGTERM), if any
        self.pooled = algorithm_entry(spec.algorithm).uses_pool  # leashed: latest word packs (version, slot)
        #: the worker rank declared failed (runtime/mpi_health.py), or None
        self.failed_rank: int | None = None
        self._beats = np.zeros(workers, np.int64)
        self._beat_seen = np.zeros(workers, np.float64)  # rank 0's Wtime when each word last changed
        self.rank_timeout_s = RANK_TIMEOUT_S
        store.spin_hook = self._spin

    def now(self) -> float:
        return self.MPI.Wtime() - self.t_origin

    def version(self) -> int:
        word = self.store.read(_LATEST)
        return word >> _SLOT_BITS if self.pooled else word

    def live_vectors(self) -> int:
        """Leashed: window slots not FREE (published and not recycled, or being built); the baselines:
        the shared vector plus one private copy per worker."""
        return self.store.live_vectors() if self.pooled else self.workers + 1

    def check_health(self) -> bool:
        """True when every worker has left its loop. Declares a worker failed when its progress word has
        not changed for ``rank_timeout_s``: the FAILED word gets its rank, the ticket counter the stop
        value and the END word its verdict (runtime/mpi_health.py)."""
        if self.failed_rank is not None:
            return False
        t = self.MPI.Wtime()
        if not self._beat_seen.any():
            self._beat_seen[:] = t
        done = 0
        for i in range(self.workers):
            word = self.store.read(self.store.progress0 + i)
            if word != self._beats[i]:
                self._beats[i], self._beat_seen[i] = word, t
            done += word == DONE
            if word != DONE and t - self._beat_seen[i] > self.rank_timeout_s:
                self.failed_rank = i + 1
                self.store.write(_FAILED, i + 1)
                self.store.write(_TICKET, _STOP)
                self.store.write(_END, _END_FAILED)
                return False
        return done == self.workers

    def _spin(self) -> None:
        self.check_health()
        if self.failed_rank is not None:
            raise Abandon

    def snapshot(self) -> _Snapshot:
        """A consistent read of the latest vector (lock: under the lock; leashed: pinned; hogwild: an
        element-wise atomic read)."""
        store, algorithm = self.store, self.spec.algorithm
        theta = np.empty(store.n, np.float32)
        t = self.now()
        if algorithm == "lock" and self.failed_rank is not None:
            # the dead rank may hold the lock forever; it cannot write any more, so read without it
            store.get(0, theta)
            version = store.read(_LATEST)
        elif algorithm == "lock":
            store.acquire(self.workers + 1)  # a lock id no worker rank uses
            store.get(0, theta)
            version = store.read(_LATEST)
            store.release()
        elif algorithm == "hogwild":
            version = store.read(_LATEST)
            store.get_atomic(theta, np.empty_like(theta))
        else:
            slot, version, _ = store.pin()
            store.get(slot, theta)
            store.unpin(slot)
        snap = _Snapshot(t, int(version), self.live_vectors(), theta)
        self.snapshots.append(snap)
        return snap

    def run(self, interrupt: InterruptFlag | None = None, progress: bool | None = None) -> None:
        """Poll until every worker has written DONE into its progress word (then the END word says so) or
        a worker is declared failed; on SIGINT/SIGTERM stop the workers through the ticket counter and go
        on waiting for them. No collective is started before every worker is known to be alive: one that
        includes a dead rank never completes (and UCX may crash in it).
        ``progress``: a tqdm bar of gradients drawn on stderr (None: when stderr is a terminal)."""
        bar = progress_bar(self.work.total, progress)
        try:
            self._poll(interrupt, bar)
        except Abandon:  # a rank was declared failed while rank 0 waited for the lock (snapshot)
            pass
        finally:
            if bar is not None:
                bar.close()

    def _poll(self, interrupt: InterruptFlag | None, bar: Any) -> None:
        evals = max(int(self.spec.evaluations), 0)
        thresholds = [math.ceil(k * self.work.total / evals) for k in range(1, evals)] if evals else []
        if evals:
            self.snapshots.append(_Snapshot(0.0, 0, 1, self.work.prep.theta0.copy()))
        times, versions, lives = self.live
        every, next_live, next_health, drawn = POLL_INTERVAL_S, 0.0, 0.0, 0
        while True:
            time.sleep(POLL_INTERVAL_S)
            if interrupt is not None and interrupt.raised and not self.interrupted:
                self.store.write(_TICKET, _STOP)
                self.interrupted = True
            now, version = self.now(), self.version()
            if now >= next_health:
                if self.check_health():
                    self.store.write(_END, _END_OK)
                    return
                if self.failed_rank is not None:
                    return
                next_health = now + 0.01
                if bar is not None and not bar.disable:
                    ticket = min(self.store.read(_TICKET), self.work.total)
                    bar.update(max(ticket - drawn, 0))
                    drawn = max(drawn, ticket)
            if now >= next_live:
                times.append(now)
                versions.append(version)
                lives.append(self.live_vectors())
                next_live = now + every
                if len(times) >= 8192:  # long runs: halve the density, as the threaded runtime does
                    del times[1::2], versions[1::2], lives[1::2]
                    every *= 2
            if thresholds and version >= thresholds[0]:
                while thresholds and version >= thresholds[0]:
                    thresholds.pop(0)
                self.snapshot()


def _evaluate(spec: ExperimentSpec, work: _Workload, host: _Host,
              snaps: list[_Snapshot]) -> tuple[Samples, int]:
    """Samples as the threaded runtime makes them: the live-vector polls (loss and accuracy NaN) and the
    snapshots, evaluated on the same seeded 10,000 training rows and on the test set, sorted by time."""
    ds, model = work.dataset, work.model
    rng = np.random.default_rng([spec.seed, 3])
    n_train = int(ds.X_train.shape[0])
    rows = np.sort(rng.choice(n_train, size=min(n_train, LOSS_ROWS), replace=False))
    X_eval = ds.X_train[rows]
    y_eval = None if spec.model == "counter" or ds.y_train is None else ds.y_train[rows]
    with_accuracy = ds.X_test is not None and len(ds.X_test) and getattr(ds, "n_classes", 0)
    times, versions, lives = (list(v) for v in host.live)
    loss = [math.nan] * len(times)
    acc = [math.nan] * len(times)
    for snap in snaps:
        times.append(snap.time)
        versions.append(snap.version)
        lives.append(snap.live)
        if not np.all(np.isfinite(snap.theta)):
            loss.append(math.nan)
            acc.append(math.nan)
            continue
        loss.append(float(model.evaluate(snap.theta, X_eval, y_eval)[0]))
        acc.append(float(model.evaluate(snap.theta, ds.X_test, ds.y_test)[1]) if with_accuracy else math.nan)
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    pick = [np.asarray(v)[order] for v in (times, versions, lives, loss, acc)]
    samples = Samples(time=pick[0], version=pick[1], live_vectors=pick[2], loss=pick[3], accuracy=pick[4])
    return samples, len(rows)


# ================================================================ entry points
def _validate(spec: ExperimentSpec, size: int) -> int:
    """The worker count (size − 1), or a one-line SpecError."""
    if size < 2:
        raise SpecError(f"the mpi backend needs at least 2 ranks (rank 0 holds the parameters, the others "
                        f"are workers) but was launched with {size}: run it as `mpiexec -n P leashed train "
                        f"--backend mpi ...` with P >= 2")
    if spec.algorithm not in MPI_ALGORITHMS:
        raise SpecError(f"algorithm {spec.algorithm} is not available on the mpi backend; choose one of "
                        f"{', '.join(MPI_ALGORITHMS)} (or --backend threads)")
    workers = size - 1
    if spec.threads not in (1, workers):
        raise SpecError(f"--threads {spec.threads} does not match the launch: mpiexec -n {size} gives "
                        f"{workers} worker(s); use mpiexec -n {spec.threads + 1} or drop --threads")
    if workers + 1 > _SLOT_MASK // 2:
        raise SpecError(f"too many ranks ({size}) for the slot pool; use at most {_SLOT_MASK // 2}")
    _step_factor_fn(spec, workers)
    return workers


def run_mpi(spec: ExperimentSpec, out_path: str | os.PathLike[str] | None = None,
            comm: Any = None, progress: bool | None = None) -> RunResult | None:
    """Run ``spec`` on all ranks of ``comm`` (default ``MPI.COMM_WORLD``); collective.

    Rank 0 holds the store, returns the assembled :class:`RunResult` and saves it to ``out_path`` (if
    given); the worker ranks return None. Bad input raises the same one-line :class:`SpecError` (or
    :class:`~leashed.errors.DataError`) on every rank. ``progress``: a bar on rank 0's stderr (None: on a
    terminal). A worker declared dead (runtime/mpi_health.py) gives a partial result with
    ``totals["failed_rank"]``; the windows are then not freed (that would wait for the dead rank).
    """
    MPI = _import_mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    workers = _collective(comm, lambda: _validate(spec, size))
    spec = spec.replace(threads=workers, backend="mpi")

    # Rank 0 loads first (a first load converts and caches the data set), then the others.
    first = _collective(comm, lambda: _build_workload(spec) if rank == 0 else None)
    later = _collective(comm, lambda: _build_workload(spec) if rank != 0 else None)
    work: _Workload = first if rank == 0 else later

    from threadpoolctl import threadpool_limits

    n_slots = 2 * workers + 2 if algorithm_entry(spec.algorithm).uses_pool else 1
    store = _Store(MPI, comm, int(work.model.n_params), n_slots)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            outcome = _run(spec, work, store, MPI, comm, workers, progress)
    finally:
        if not store.broken:
            store.free()  # collective: before rank 0 evaluates, so no rank waits in it meanwhile
        else:
            _state.broken = True  # mpi_command leaves without MPI_Finalize, which could wait for the dead
    if outcome is None:
        return None
    return _assemble(spec, work, *outcome, MPI, out_path)


def _run(spec: ExperimentSpec, work: _Workload, store: _Store, MPI: Any, comm: Any, workers: int,
         progress: bool | None = None) -> tuple[_Host, _Snapshot, list[dict[str, Any]], int] | None:
    """The run proper, on every rank; rank 0 gets what :func:`_assemble` needs, the workers None."""
    rank = comm.Get_rank()
    if rank == 0:
        store.initialise(work.prep.theta0, 0)
        host = _Host(spec, work, store, MPI, workers)
    else:
        worker = _Worker(spec, work, store, MPI, rank, workers)
    comm.Barrier()
    store.open()
    comm.Barrier()  # the common start: every rank's clock origin is its exit from this barrier
    t_origin = MPI.Wtime()
    part: dict[str, Any] = {}
    with InterruptFlag() as interrupt:
        try:
            if rank == 0:
                host.t_origin = t_origin
                host.run(interrupt, progress)
                final = host.snapshot()
                if not spec.evaluations or (len(host.snapshots) > 1
                                            and host.snapshots[-2].version == final.version):
                    host.snapshots.pop()  # no evaluations, or the last threshold already saw this version
                diverged_at = store.read(_DIVERGED)
                host.signum = interrupt.signum
                if host.failed_rank is not None:
                    store.broken = True
            else:
                worker.t_origin = t_origin
                worker.run(interrupt)
                t_end = MPI.Wtime() - t_origin
                part = {"records": worker.rec.export(), "t_end": t_end, "cas_failures": worker.cas_failures,
                        "host": socket.gethostname(), "interrupted": worker.interrupted or interrupt.raised,
                        "signum": interrupt.signum}
                if _wait_for_verdict(store) == _END_FAILED:
                    store.broken = True
        except Exception:
            traceback.print_exc()
            sys.stderr.flush()
            comm.Abort(1)
            raise
        finally:
            if not store.broken:  # Unlock_all notifies every rank, the dead one too: it would fail
                store.close()
    if store.broken:  # a rank is dead: no collective may include it (runtime/mpi_health.py)
        if rank != 0:
            comm.send(part, dest=0, tag=PARTS_TAG)
            return None
        parts = _receive_parts(comm, host.failed_rank)
    else:
        gathered = comm.gather(part, root=0)
        parts = gathered[1:] if rank == 0 else []
    if rank != 0:
        return None
    return host, final, parts, diverged_at


def _wait_for_verdict(store: _Store) -> int:
    """A worker at the end (DONE written): wait for rank 0's END word, _END_OK or _END_FAILED."""
    while True:
        verdict = store.read(_END)
        if verdict:
            return verdict
        time.sleep(0.002)


def _receive_parts(comm: Any, failed: int | None) -> list[dict[str, Any]]:
    """Rank 0 after a failure: the survivors' records, point-to-point, waiting at most RANK_TIMEOUT_S
    for each that has not sent yet; a part that does not come (a second dead rank) is left out."""
    pending = [r for r in range(1, comm.Get_size()) if r != failed]
    parts: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + RANK_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for r in list(pending):
            message = comm.improbe(source=r, tag=PARTS_TAG)
            if message is not None:
                parts[r] = message.recv()
                pending.remove(r)
        time.sleep(0.002)
    return [parts[r] for r in sorted(parts)]


def _assemble(spec: ExperimentSpec, work: _Workload, host: _Host, final: _Snapshot,
              parts: list[dict[str, Any]], diverged_at: int, MPI: Any,
              out_path: str | os.PathLike[str] | None) -> RunResult:
    updates = _commit_order([p["records"] for p in parts])
    applied = int(np.count_nonzero(~updates.dropped))
    params = final.theta
    if diverged_at < 0 and not np.all(np.isfinite(params)):
        diverged_at = final.version
    samples, eval_rows = _evaluate(spec, work, host, host.snapshots)
    failed = host.failed_rank
    # After a failure the dead rank's records are gone but its committed updates are in the store: the
    # counter model is checked against the store's version count (lock, leashed: one per commit).
    lost, lost_extra = _lost_updates(spec, params, applied if failed is None else int(final.version))
    per_thread = {
        "computed": [len(p["records"]["thread"]) for p in parts],
        "applied": [int(np.count_nonzero(~p["records"]["dropped"])) for p in parts],
        "dropped": [int(np.count_nonzero(p["records"]["dropped"])) for p in parts],
        "cas_failures": [int(p["cas_failures"]) for p in parts],
    }
    totals = {
        "updates_applied": applied,
        "updates_dropped": int(np.count_nonzero(updates.dropped)),
        "cas_failures": int(sum(per_thread["cas_failures"])),
        "wall_time_s": float(max(p["t_end"] for p in parts)),
        "diverged_at": int(diverged_at),
        "interrupted": bool(host.interrupted or failed is not None
                            or any(p.get("interrupted") for p in parts)),
        "lost_updates": lost,
        "failed_rank": failed,
    }
    extra: dict[str, Any] = {
        "backend": "mpi",
        "engine": "leashed.runtime.mpi_backend",
        "ranks": len(parts) + 1,
        "workers": host.workers,
        "store_host": socket.gethostname(),
        "worker_hosts": [p["host"] for p in parts],
        "mpi_library": " ".join(MPI.Get_library_version().split()[:3]),
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "dataset_used": work.prep.dataset_name,
        "n_params": int(len(params)),
        "total_gradients": work.total,
        "gradients_computed": int(len(updates)),
        "batches_per_epoch": work.n_rows // spec.batch_size,
        "final_version": int(final.version),
        "per_thread": per_thread,
        "eval_train_rows": eval_rows,
        "lock": "cas-spinlock" if spec.algorithm == "lock" else None,  # per-algorithm implementation notes
        "hogwild_read": "get_accumulate(NO_OP)" if spec.algorithm == "hogwild" else None,
        "hogwild_update": "accumulate(SUM)" if spec.algorithm == "hogwild" else None,
        **lost_extra,
    }
    signums = [host.signum, *(p.get("signum") for p in parts)]
    signum = next((n for n in signums if n is not None), None)
    if signum is not None:
        extra["stopped_by"] = signal.Signals(signum).name
    if failed is not None:
        extra["failed_rank"] = failed
        extra["rank_timeout_s"] = host.rank_timeout_s
        extra["records_lost"] = int(final.version) - applied  # commits whose records died with the rank
    if spec.step_policy == "fleet" and not spec.step_table:
        extra["fleet_beta"] = fleet_beta(len(parts))
    if host.pooled:
        extra["pool_slots"] = host.store.slots
        extra["live_vectors_max"] = int(samples.live_vectors.max()) if len(samples) else None
    metadata = machine_metadata(seed=spec.seed, blas_threads=1)
    result = RunResult(spec=spec, source="runtime", updates=updates, samples=samples, params=params,
                       totals=totals, metadata=metadata, extra=extra)
    if out_path is not None:
        try:
            result.save(out_path)
        except OSError as exc:
            raise LeashedError(f"cannot write {out_path}: {exc.strerror or exc}; "
                               f"choose another --out") from None
    return result


def mpi_command(make_spec: Callable[[], ExperimentSpec], out_path: str | os.PathLike[str],
                on_result: Callable[[RunResult], int | None] | None = None) -> int:
    """``leashed train --backend mpi``: build the spec, run it, save it; the exit status for every rank.

    ``make_spec`` is called on every rank inside the collective error handling, so a bad option gives
    one ``leashed: error: ...`` line (from rank 0) and status 2 on every rank, without a traceback.
    Rank 0 saves the result to ``out_path`` (``.npz`` added if missing, as ``RunResult.save`` does), then
    calls ``on_result(result)``, e.g. to print a summary; what it returns (None: 0) is rank 0's exit
    status, and a :class:`LeashedError` it raises (e.g. for a diverged run) is printed as one line and
    gives status 2. A run stopped by SIGINT or SIGTERM (:class:`InterruptFlag`) is saved with
    ``interrupted`` set, reported in one line instead, and gives status 130 or 143. A run where a worker
    was declared dead (runtime/mpi_health.py) is saved marked ``failed_rank`` and reported in one line; the
    process then leaves at once with status 1 (``os._exit``: MPI_Finalize could wait for the dead rank),
    on rank 0 and on the survivors. Worker ranks otherwise return 0.
    """
    try:
        return _mpi_command(make_spec, out_path, on_result)
    finally:
        if _state.broken:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)


def _mpi_command(make_spec: Callable[[], ExperimentSpec], out_path: str | os.PathLike[str],
                 on_result: Callable[[RunResult], int | None] | None) -> int:
    rank = mpi_rank_from_env()
    try:
        MPI = _import_mpi()
        comm = MPI.COMM_WORLD
        rank = comm.Get_rank()
        spec = _collective(comm, make_spec)
        result = run_mpi(spec, None, comm)
        if result is None:
            return 0
        try:
            path = result.save(out_path)
        except OSError as exc:
            raise LeashedError(f"cannot write {out_path}: {exc.strerror or exc}; "
                               f"choose another --out") from None
        if result.totals.get("failed_rank") is not None:
            raise RankFailed(f"rank {result.totals['failed_rank']} stopped (its progress word unchanged for "
                             f"{result.extra['rank_timeout_s']:g} s): partial result "
                             f"({result.extra['final_version']} updates committed, "
                             f"{result.extra['records_lost']} of their records lost) saved to {path}")
        if result.totals["interrupted"]:
            sys.stderr.write(f"leashed: interrupted: partial result ({result.totals['updates_applied']} "
                             f"updates) saved to {path}\n")
            sys.stderr.flush()
            return 128 + signal.SIGTERM if result.extra.get("stopped_by") == "SIGTERM" else 130
        return int(on_result(result) or 0) if on_result is not None else 0
    except LeashedError as exc:
        if rank == 0:
            sys.stderr.write(f"leashed: error: {exc}\n")
            sys.stderr.flush()
        return exc.exit_code
    except _PeerFailed:
        return 1


def _main(argv: list[str] | None = None) -> int:
    """``python -m leashed.runtime.mpi_backend SPEC_JSON OUT``: a spec given as JSON (tests, scripts)."""
    import json

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: mpiexec -n P python -m leashed.runtime.mpi_backend SPEC_JSON OUT.npz\n")
        return 2

    def make_spec() -> ExperimentSpec:
        text = args[0]
        data = json.loads(Path(text).read_text() if text.endswith(".json") else text)
        return ExperimentSpec.from_dict(data)

    def report(result: RunResult) -> int:
        path = args[1] if args[1].endswith(".npz") else args[1] + ".npz"
        s = result.summary()
        print(f"wrote {path}: {s['updates_applied']} updates applied, {s['updates_dropped']} dropped in "
              f"{s['wall_time_s']:.2f} s ({s['updates_per_s']:.0f}/s), mean staleness "
              f"{s['staleness_mean'] if s['staleness_mean'] is None else round(s['staleness_mean'], 3)}",
              flush=True)
        if result.totals["diverged_at"] >= 0:
            raise errors.DivergenceError(f"training diverged (non-finite loss) at version "
                                         f"{result.totals['diverged_at']}; results saved to {path}; "
                                         f"try a smaller --lr")
        return 0

    return mpi_command(make_spec, args[1], report)


if __name__ == "__main__":
    sys.exit(_main())
