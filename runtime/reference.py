"""Pure-Python twin of the runtime: every algorithm of papers.md §2 in plain Python and numpy, slow, obvious.

Same ticket -> batch mapping (``leashed.batches``, shared with the simulator), same initial
parameters, same float32 update ``theta - float32(lr * s(tau)) * g`` and the same step policies
(:func:`step_factor`, papers.md §3.1). With one thread and a fixed seed the Cython runtime reproduces this
module's final parameters (to float32 rounding; in practice bit for bit, BLAS single-threaded in both);
``sync`` is deterministic for any thread count. With several threads the asynchronous algorithms here run
on Python threads (the GIL interleaves them), which is enough to check their invariants, not their speed:

* ``lock``: one ``threading.Lock``; copy and version read under it, apply under it.
* ``hogwild``: no lock; element updates on the shared array, version counter behind a tiny lock (an
  "ideal" atomic counter).
* ``leashed``: immutable published vectors, the latest swapped by a compare-and-swap (emulated with a
  lock around compare + assign); failed attempts retry the same gradient, dropped after ``persistence``
  + 1 failures. Memory is Python's: no pool, no reader counts (the garbage collector reclaims).
* ``seqlock`` (docs/seqlock.md): one shared array updated in place by writers under a lock that make a
  sequence counter odd while they apply; readers copy without the lock and retry the copy when the
  counter was odd or changed meanwhile (numpy may release the GIL while it copies, so retries happen).

Sparsifiers (papers.md §5): each thread owns a :class:`leashed.sparsify.NumpySparsifier` (the numpy
statement of the kernels, seeded like the runtime's threads, :func:`leashed.runtime.run.thread_seeds`);
each gradient is sparsified once, right after it is computed, and the update writes only the K kept
coordinates (``theta[idx] - step * val`` in float32), on every attempt of a leashed retry; ``sync`` sums
the dense forms. The final error memories are in :attr:`ReferenceResult.memory`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leashed import algorithms, steprules
from leashed.models.registry import model_descriptor
from leashed.spec import INF, ExperimentSpec

__all__ = ["ReferenceResult", "TailState", "reference_run", "step_factor"]

@dataclass
class TailState:
    """TAIL-tau's sample (papers.md §3.1): staleness of the updates producing versions (10m, 15m]."""

    threads: int
    samples: dict[int, int] = field(default_factory=dict)
    sorted_samples: list[int] | None = None

    def observe(self, t1: int, tau: int) -> None:
        lo, n = 10 * self.threads, 5 * self.threads
        if self.sorted_samples is None and lo <= t1 < lo + n:
            self.samples[t1] = tau
            if len(self.samples) == n:
                self.sorted_samples = sorted(self.samples.values())

    def fraction_below(self, tau: int) -> float | None:
        if self.sorted_samples is None:
            return None
        return sum(1 for s in self.sorted_samples if s < tau) / len(self.sorted_samples)


def step_factor(policy: str, tau: int, threads: int, *, tail: TailState | None = None,
                table: tuple[float, ...] | None = None, tail_a: float = 1.0) -> float:
    """s(tau) of :func:`leashed.steprules.step_factor`, with F(tau) from the TAIL-tau sample ``tail``."""
    frac = None if tail is None else tail.fraction_below(tau)
    return steprules.step_factor(policy, tau, threads, table=table, tail_fraction=frac, tail_a=tail_a)


@dataclass
class ReferenceResult:
    """Final parameters and per-update records (lists, in commit order) of a reference run."""

    params: np.ndarray
    version: int
    thread: list[int] = field(default_factory=list)
    version_read: list[int] = field(default_factory=list)
    version_commit: list[int] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)
    dropped: list[bool] = field(default_factory=list)
    computed: int = 0
    #: each thread's final error memory e (papers.md §5), None without error memory
    memory: list[np.ndarray] | None = None

    @property
    def applied(self) -> int:
        return sum(1 for d in self.dropped if not d)


class _Tickets:
    """The shared ticket counter and the ticket -> rows mapping (leashed.batches)."""

    def __init__(self, spec: ExperimentSpec, n_rows: int, total: int) -> None:
        from leashed.batches import BatchSchedule

        self.lock = threading.Lock()
        self.next = 0
        self.total = total
        self.counter = not model_descriptor(spec.model).reads_rows  # the runtime passes zeros
        self.batch_size = spec.batch_size
        self.schedule = BatchSchedule(n_rows, spec.batch_size, spec.seed)

    def take(self) -> int | None:
        with self.lock:
            if self.next >= self.total:
                return None
            k = self.next
            self.next += 1
            return k

    def rows(self, k: int) -> np.ndarray:
        if self.counter:
            return np.zeros(self.batch_size, dtype=np.int64)
        with self.lock:
            return np.array(self.schedule.rows(k))


def reference_run(spec: ExperimentSpec, prepared: Any = None) -> ReferenceResult:
    """Run ``spec`` with the reference algorithms; ``prepared`` is a :class:`leashed.runtime.run.Prepared`
    (built from the spec if not given)."""
    from threadpoolctl import threadpool_limits

    from leashed.runtime.run import prepare

    prep = prepared if prepared is not None else prepare(spec)
    sparsifiers = _sparsifiers(spec, int(prep.theta0.shape[0]))
    tickets = _Tickets(spec, int(prep.bound.n_rows), prep.total)
    out = ReferenceResult(params=prep.theta0.copy(), version=0)
    runner = algorithms.algorithm(spec.algorithm).resolve("reference")  # the registry names the runner
    with threadpool_limits(limits=1, user_api="blas"):  # as the runtime: BLAS results depend on threads
        runner(spec, prep, tickets, out, sparsifiers)
    if sparsifiers is not None and spec.error_memory:
        out.memory = [sp.memory.copy() for sp in sparsifiers]
    return out


def _sparsifiers(spec: ExperimentSpec, n_params: int) -> list[Any] | None:
    """One numpy sparsifier per thread (papers.md §5), seeded as the runtime seeds its threads; None for
    dense runs. SpecError for a K the model cannot have (as the runtime)."""
    from leashed.runtime.run import sparse_config, thread_seeds
    from leashed.sparsify import NumpySparsifier

    kind, k = sparse_config(spec, n_params)
    if kind == "none":
        return None
    return [NumpySparsifier(kind, n_params, k, spec.error_memory, int(s)) for s in thread_seeds(spec)]


_Selection = tuple[np.ndarray, np.ndarray] | None


def _select(sparsifiers: list[Any] | None, tid: int, grad: np.ndarray) -> _Selection:
    """Φ(g) of thread ``tid`` as (indices, values), once per gradient; None for dense runs."""
    return None if sparsifiers is None else sparsifiers[tid](grad)


def _updated(theta: np.ndarray, step: np.float32, grad: np.ndarray, sel: _Selection) -> np.ndarray:
    """A new vector theta - step * g (dense) or theta with only the selected coordinates updated."""
    if sel is None:
        return theta - step * grad
    new = theta.copy()
    new[sel[0]] = theta[sel[0]] - step * sel[1]
    return new


def _step(spec: ExperimentSpec, tau: int, tail: TailState) -> np.float32:
    return np.float32(spec.lr * step_factor(spec.step_policy, tau, spec.threads, tail=tail,
                                            table=spec.step_table))


def _record(out: ReferenceResult, tid: int, t0: int, t1: int, dropped: bool = False) -> None:
    out.thread.append(tid)
    out.version_read.append(t0)
    out.version_commit.append(-1 if dropped else t1)
    out.staleness.append(-1 if dropped else t1 - t0)
    out.dropped.append(dropped)


def _seq(spec: ExperimentSpec, prep: Any, tickets: _Tickets, out: ReferenceResult,
         sparsifiers: list[Any] | None) -> None:
    theta = out.params
    grad = np.zeros_like(theta)
    tail = TailState(spec.threads)
    while (k := tickets.take()) is not None:
        prep.bound.loss_grad(theta, tickets.rows(k), grad)
        out.computed += 1
        theta = _updated(theta, _step(spec, 0, tail), grad, _select(sparsifiers, 0, grad))
        tail.observe(k, 0)
        _record(out, 0, k, k)
    out.params, out.version = theta, tickets.total


def _sync(spec: ExperimentSpec, prep: Any, tickets: _Tickets, out: ReferenceResult,
          sparsifiers: list[Any] | None) -> None:
    """Round s: gradients of tickets s*m .. s*m+m-1 on the same theta, then one step on their mean
    (sparse: the mean of the dense forms of the threads' selections)."""
    theta = out.params
    m = spec.threads
    tail = TailState(m)
    rounds = -(-tickets.total // m)
    for s in range(rounds):
        grads = []
        for i in range(min(m, tickets.total - s * m)):
            g = np.zeros_like(theta)
            prep.bound.loss_grad(theta, tickets.rows(s * m + i), g)
            out.computed += 1
            if sparsifiers is not None:
                g = sparsifiers[i].dense(g)
            grads.append(g)
            _record(out, i, s, s)
        acc = grads[0].copy()
        for g in grads[1:]:
            acc += g
        coef = np.float32(spec.lr * step_factor(spec.step_policy, 0, m, tail=tail, table=spec.step_table)
                          / len(grads))
        theta = theta - coef * acc
        tail.observe(s, 0)
    out.params, out.version = theta, rounds


def _threads(spec: ExperimentSpec, body: Any) -> None:
    workers = [threading.Thread(target=body, args=(tid,)) for tid in range(spec.threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def _lock(spec: ExperimentSpec, prep: Any, tickets: _Tickets, out: ReferenceResult,
          sparsifiers: list[Any] | None) -> None:
    lock = threading.Lock()
    shared = {"theta": out.params, "version": 0}
    tail = TailState(spec.threads)

    def body(tid: int) -> None:
        grad = np.zeros_like(out.params)
        work = prep.bound.new_workspace()
        while (k := tickets.take()) is not None:
            with lock:
                local = shared["theta"].copy()
                t0 = shared["version"]
            prep.bound.loss_grad(local, tickets.rows(k), grad, work)
            sel = _select(sparsifiers, tid, grad)
            with lock:
                t1 = shared["version"]
                shared["theta"] = _updated(shared["theta"], _step(spec, t1 - t0, tail), grad, sel)
                shared["version"] = t1 + 1
                tail.observe(t1, t1 - t0)
                out.computed += 1
                _record(out, tid, t0, t1)

    _threads(spec, body)
    out.params, out.version = shared["theta"], shared["version"]


def _hogwild(spec: ExperimentSpec, prep: Any, tickets: _Tickets, out: ReferenceResult,
             sparsifiers: list[Any] | None) -> None:
    theta = out.params.copy()
    counter = {"version": 0}
    counter_lock = threading.Lock()
    records_lock = threading.Lock()
    tail = TailState(spec.threads)

    def body(tid: int) -> None:
        grad = np.zeros_like(theta)
        work = prep.bound.new_workspace()
        while (k := tickets.take()) is not None:
            t0 = counter["version"]
            local = theta.copy()  # may be torn: other threads write theta meanwhile
            prep.bound.loss_grad(local, tickets.rows(k), grad, work)
            sel = _select(sparsifiers, tid, grad)
            with counter_lock:  # the "ideal" atomic fetch_add
                t1 = counter["version"]
                counter["version"] = t1 + 1
            if sel is None:
                theta[:] = theta - _step(spec, t1 - t0, tail) * grad  # racing element updates
            else:
                theta[sel[0]] = theta[sel[0]] - _step(spec, t1 - t0, tail) * sel[1]
            with records_lock:
                tail.observe(t1, t1 - t0)
                out.computed += 1
                _record(out, tid, t0, t1)

    _threads(spec, body)
    out.params, out.version = theta, counter["version"]


def _seqlock(spec: ExperimentSpec, prep: Any, tickets: _Tickets, out: ReferenceResult,
             sparsifiers: list[Any] | None) -> None:
    """Seqlock AsyncSGD (docs/seqlock.md): lock-free consistent snapshots, in-place applies under the
    writers' lock; t0 = counter / 2 of the snapshot, t1 = counter / 2 when the writer enters."""
    import time

    theta = out.params.copy()
    state = {"seq": 0}
    writers = threading.Lock()  # the spin lock of the runtime
    tail = TailState(spec.threads)

    def snapshot() -> tuple[np.ndarray, int]:
        while True:
            s0 = state["seq"]
            if s0 & 1:  # a writer is applying: wait
                time.sleep(0)
                continue
            local = theta.copy()
            if state["seq"] == s0:
                return local, s0 // 2

    def body(tid: int) -> None:
        grad = np.zeros_like(theta)
        work = prep.bound.new_workspace()
        while (k := tickets.take()) is not None:
            local, t0 = snapshot()
            prep.bound.loss_grad(local, tickets.rows(k), grad, work)
            sel = _select(sparsifiers, tid, grad)
            with writers:
                s = state["seq"]
                state["seq"] = s + 1
                t1 = s // 2
                step = _step(spec, t1 - t0, tail)
                if sel is None:
                    theta[:] = theta - step * grad  # in place: no vector is published
                else:
                    theta[sel[0]] = theta[sel[0]] - step * sel[1]
                tail.observe(t1, t1 - t0)
                out.computed += 1
                _record(out, tid, t0, t1)
                state["seq"] = s + 2

    _threads(spec, body)
    out.params, out.version = theta, state["seq"] // 2


@dataclass(frozen=True)
class _Published:
    theta: np.ndarray
    version: int


def _leashed(spec: ExperimentSpec, prep: Any, tickets: _Tickets, out: ReferenceResult,
             sparsifiers: list[Any] | None) -> None:
    latest = {"vector": _Published(out.params.copy(), 0)}
    cas_lock = threading.Lock()
    records_lock = threading.Lock()
    tail = TailState(spec.threads)
    bound = None if spec.persistence == INF else int(spec.persistence)

    def cas(expected: _Published, new: _Published) -> bool:
        with cas_lock:
            if latest["vector"] is expected:
                latest["vector"] = new
                return True
            return False

    def body(tid: int) -> None:
        grad = np.zeros_like(out.params)
        work = prep.bound.new_workspace()
        while (k := tickets.take()) is not None:
            v = latest["vector"]  # pin: a reference keeps it alive
            prep.bound.loss_grad(v.theta, tickets.rows(k), grad, work)
            sel = _select(sparsifiers, tid, grad)  # once per gradient: every attempt applies the same
            t0 = v.version
            tries = 0
            while True:
                last = latest["vector"]
                t1 = last.version
                new = _Published(_updated(last.theta, _step(spec, t1 - t0, tail), grad, sel), t1 + 1)
                if cas(last, new):
                    with records_lock:
                        tail.observe(t1, t1 - t0)
                        out.computed += 1
                        _record(out, tid, t0, t1)
                    break
                tries += 1
                if bound is not None and tries > bound:
                    with records_lock:
                        out.computed += 1
                        _record(out, tid, t0, -1, dropped=True)
                    break

    _threads(spec, body)
    out.params, out.version = latest["vector"].theta, latest["vector"].version
