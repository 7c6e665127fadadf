"""SimPy worker processes: one generator per simulated thread, one per algorithm (papers.md §2).

All workers of a run share one :class:`Shared` (plain attributes, architecture.md "simulator rules").
A worker takes *tickets* from the shared counter (gradient k of the run; none are issued past
``n_total``), draws its compute time C and update time U from its own batched streams, and yields one
SimPy timeout per phase pair. U is one update's copy + apply; the copy is ``copy_fraction``·U
(papers.md Table 2: ½ + ½).

Every gradient appends one record of ``RECORD_WIDTH`` floats to ``Shared.rec`` (a flat ``array('d')``
whose storage grows by amortised doubling; :mod:`leashed.sim.simulate` views it as numpy), in commit
order, with the fields of ``RECORD_FIELDS``. ``aux1``/``aux2`` are algorithm-specific instants (lock:
end of the read under the lock, start of the commit under the lock; seqlock: end of the successful
snapshot copy, start of the apply under the writers' lock; hogwild: 0, 0; leashed, seq, sync: 0, 0).

Phases per algorithm (papers.md §2 and §2.1):

* ``seq``: compute C, apply U; one timeout per update.
* ``sync``: round s (version s, as in the runtime: a version is a round): every worker computes on the
  round's vector, meets the barrier, then all apply their stripes of the mean gradient in parallel (as
  the runtime does; each takes its own U) and meet again; every update of the round commits when the
  slowest stripe is done, and the next round starts then. τ ≡ 0 (papers.md T12). (The authors' code
  applies the m gradients one after another instead.)
* ``lock``: [lock; copy (read t0); unlock] compute [lock; apply (t1 = t); unlock]. The mutex is a FIFO
  single server whose hold times are known when a request is made, so it is modelled exactly by its
  ``free_at`` instant: a request at time a is granted at max(a, free_at) and the versions are handed out
  in grant order (``vserial``). This is what a FIFO ``simpy.Resource`` would do, without its events.
* ``hogwild``: t0 ← t; copy; compute; fetch-and-add t (commit instant); apply (racing, not modelled).
* ``leashed``: PIN the latest vector (version t0) and compute on it; then attempts: PIN latest (t1),
  copy it into a private vector, UNPIN, apply, CAS at the end of the attempt, which succeeds iff the
  latest version is still t1; a failed attempt retries the same gradient; after T_p + 1 failed attempts
  the gradient is dropped. One timeout for the compute, one per attempt.
* ``seqlock`` (docs/seqlock.md): snapshot copy (U·copy_fraction, no lock), retried while an apply
  overlaps it; compute; apply in place (U·(1 − copy_fraction)) under a FIFO writers' lock, modelled by
  ``free_at`` as lock's mutex. The applies' [start, end) intervals are known when they are granted
  (``seq_starts``/``seq_ends``, index = version): a copy over [a, b] succeeds iff no apply that began by
  b ends after a; it is then version (applies begun by b); a retry (and a first try) starts when no apply
  is in progress (the counter is even). ``attempts`` = snapshot copies.

Live vectors (leashed, papers.md §2.1): a published vector is recycled when it is stale and unpinned.
Pins are taken only on the latest vector and their end times are known when taken, so each stale
vector's recycle instant max(stale instant, last unpin) is known when it goes stale: it is appended to
``Shared.vfree`` (index = its version). A private copy lives from the attempt that allocates it (the
first attempt of a gradient; a failed attempt frees it and the retry allocates a new one at the same
instant, which nets out) until it becomes the latest (then as a published vector) or is dropped.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Generator, Iterator
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

import simpy
from simpy.events import NORMAL, Event, Timeout

if TYPE_CHECKING:
    from leashed.sim.gradients import GradientEngine

__all__ = ["LOCK_MODELS", "RECORD_FIELDS", "RECORD_WIDTH", "WORKERS", "Halt", "Shared"]

RECORD_FIELDS = ("thread", "ticket", "version_read", "version_commit", "attempts", "dropped", "t_start",
                 "t_grad", "t_commit", "aux1", "aux2")
RECORD_WIDTH = len(RECORD_FIELDS)

Gen = Generator[Event, Any, None]


class _Wake(Timeout):
    """A :class:`simpy.events.Timeout` without the argument check and the ``schedule`` call: the workers'
    delays are never negative, and this is the one event every phase creates (about 10 % faster)."""

    __slots__ = ()

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        self.env = env
        self.callbacks = []
        self._value = None
        self._ok = True
        self._delay = delay
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), self))


def _lean_timeouts_work() -> bool:
    """``_Wake`` relies on SimPy 4's Environment internals (_queue, _eid, _now); check them once."""
    try:
        env = simpy.Environment()
        event = _Wake(env, 1.5)
        env.step()
        return env.now == 1.5 and event.processed
    except Exception:  # noqa: BLE001 - any mismatch: use SimPy's own Timeout
        return False


if _lean_timeouts_work():
    Timeout = _Wake  # type: ignore[misc]  # noqa: F811


class Halt(Exception):
    """Raised inside a worker to stop the whole simulation (divergence in with-gradients mode)."""


class Shared:
    """State shared by the workers of one run (plain attributes; slots for speed)."""

    __slots__ = ("env", "m", "n_total", "next_ticket", "version", "persistence", "copy_fraction",
                 "bus_contention", "latest_unpin", "free_at", "vserial", "rec", "vfree", "copies",
                 "grad", "evals", "eval_points", "next_eval", "diverged_at", "round", "mutex",
                 "machine_state", "seq_starts", "seq_ends")

    def __init__(self, env: simpy.Environment, m: int, n_total: int, persistence: float,
                 copy_fraction: float, bus_contention: float, grad: GradientEngine | None = None,
                 eval_points: list[int] | None = None) -> None:
        self.env = env
        self.m = m
        self.n_total = n_total
        self.next_ticket = 0
        self.version = 0           # latest published version (leashed, hogwild counter, seq, sync)
        self.persistence = persistence
        self.copy_fraction = copy_fraction
        self.bus_contention = bus_contention
        self.latest_unpin = 0.0    # leashed: last unpin instant of the pins taken on the latest vector
        self.free_at = 0.0         # lock: the instant the FIFO mutex is next free
        self.vserial = 0           # lock: version in lock-grant order
        self.rec = array("d")      # RECORD_WIDTH floats per gradient, commit order
        self.vfree = array("d")    # leashed: recycle instant of version v at index v
        self.copies: list[float] = []  # bus contention: end instants of the copies in progress
        self.grad = grad
        self.evals: list[tuple[float, int, float, float]] = []  # (time, version, loss, accuracy)
        self.eval_points = sorted(set(eval_points or []))
        self.next_eval = self.eval_points.pop(0) if self.eval_points else math.inf
        self.diverged_at: int | None = None
        self.round: _Round | None = None
        self.mutex = simpy.Resource(env, capacity=1)  # lock_resource_worker only
        self.machine_state: Any = None  # leashed.sim.machine_workers.MachineState, with a machine model
        self.seq_starts = array("d")  # seqlock: start of the apply of version v at index v (FIFO: sorted)
        self.seq_ends = array("d")    # seqlock: its end

    # ------------------------------------------------------------------ helpers off the hot path
    def contention(self, now: float, u: float) -> float:
        """Scale an update time by 1 + F·(copies running − 1), its own copy included; registers the copy."""
        copies = self.copies
        while copies and copies[0] <= now:
            heappop(copies)
        u *= 1.0 + self.bus_contention * len(copies)
        heappush(copies, now + u * self.copy_fraction)
        return u

    def apply_update(self, g: Any, tau: int, version: int, when: float) -> None:
        """With gradients: apply ``g`` with staleness ``tau``, producing ``version``, and evaluate θ at
        ``when`` if ``version`` reached the next evaluation point."""
        self.grad.apply(g, tau, version)  # type: ignore[union-attr]
        if version >= self.next_eval:
            self.evaluate(version, when)

    def evaluate(self, version: int, when: float) -> None:
        """With gradients: record (loss, accuracy) of the current θ as version ``version`` at ``when``."""
        loss, acc = self.grad.evaluate()  # type: ignore[union-attr]
        self.evals.append((when, version, loss, acc))
        while self.next_eval <= version:
            self.next_eval = self.eval_points.pop(0) if self.eval_points else math.inf

    def diverge(self, version: int) -> None:
        self.diverged_at = version
        raise Halt


def _gradient(sh: Shared, ticket: int, worker: int, version: int) -> Any:
    """With gradients: the gradient of ``ticket`` at the current θ (version ``version``)."""
    g, _ = sh.grad.gradient(ticket, worker)  # type: ignore[union-attr]
    if g is None:
        sh.diverge(version)
    return g


# ---------------------------------------------------------------------------------------------- seq
def seq_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """SEQ (papers.md §2): g ← ∇f_{B_t}(θ); θ ← θ − α_c·g. One timeout per update."""
    env = sh.env
    rec = sh.rec.extend
    grad = sh.grad
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        t_start = env.now
        c = next(cs)
        u = next(us)
        g = _gradient(sh, k, i, sh.version) if grad is not None else None
        yield Timeout(env, c + u)
        v = sh.version
        sh.version = v + 1
        if grad is not None:
            sh.apply_update(g, 0, v + 1, env.now)
        rec((i, k, v, v, 1, 0, t_start, t_start + c, env.now, 0.0, 0.0))


# ---------------------------------------------------------------------------------------------- sync
class _Round:
    """One SYNC round: the barrier and what the arriving workers bring to it."""

    __slots__ = ("version", "expected", "arrived", "event", "starting", "ready")

    def __init__(self, env: simpy.Environment, version: int, expected: int) -> None:
        self.version = version
        self.expected = expected
        self.arrived: list[tuple[int, int, float, float, float, Any]] = []
        self.event = Event(env)
        #: the machine model's sync worker: (thread, gradient demand) of the threads that started the
        #: round, and the event that hands them their gradients' end instants
        self.starting: list[tuple[int, float]] = []
        self.ready: Event | None = None


def _round_of(sh: Shared, s: int) -> _Round:
    """Round s: the one in progress, or a new one for the first worker to reach it."""
    rnd = sh.round
    if rnd is None or rnd.version != s:
        rnd = sh.round = _Round(sh.env, s, min(sh.m, sh.n_total - s * sh.m))
    return rnd


def sync_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """SYNC (papers.md §2): compute on the round's θ, barrier, parallel stripe updates, barrier."""
    env = sh.env
    m = sh.m
    grad = sh.grad
    s = 0
    while True:
        k = s * m + i
        if k >= sh.n_total:
            return
        rnd = _round_of(sh, s)
        t_start = env.now
        c = next(cs)
        u = next(us)
        g = _gradient(sh, k, i, s) if grad is not None else None
        yield Timeout(env, c)
        rnd.arrived.append((i, k, t_start, env.now, u, g))
        if len(rnd.arrived) == rnd.expected:
            _finish_round(sh, rnd)
        end = yield rnd.event
        yield Timeout(env, end - env.now)
        s += 1


def _finish_round(sh: Shared, rnd: _Round, end: float | None = None) -> None:
    """The last arrival at the barrier: the round's update (stripes in parallel: the slowest U, or the
    instant ``end`` the machine model gives) and its records, in thread order; then release everybody."""
    env = sh.env
    s = rnd.version
    arrived = sorted(rnd.arrived)
    if end is None:
        end = env.now + max(a[4] for a in arrived)
    for i, k, t_start, t_grad, _, _ in arrived:
        sh.rec.extend((i, k, s, s, 1, 0, t_start, t_grad, end, 0.0, 0.0))
    sh.version = s + 1
    sh.next_ticket = min(sh.n_total, (s + 1) * sh.m)  # progress: the tickets of the rounds done
    if sh.grad is not None:
        sh.grad.apply_mean([a[5] for a in arrived], s + 1)
        if not sh.grad.finite():
            sh.diverge(s + 1)
        if s + 1 >= sh.next_eval:
            sh.evaluate(s + 1, end)
    rnd.event.succeed(end)


# ---------------------------------------------------------------------------------------------- lock
def lock_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """LOCK (papers.md §2) with the mutex as a FIFO server (module docstring). Two timeouts per update:
    until the gradient is done, and until the commit under the lock ends."""
    env = sh.env
    rec = sh.rec.extend
    frac = sh.copy_fraction
    grad = sh.grad
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        now = env.now
        u = next(us)
        uc = u * frac
        # lock; copy θ and read t0; unlock
        s = sh.free_at
        if s < now:
            s = now
        read_end = s + uc
        sh.free_at = read_end
        t0 = sh.vserial
        g = _gradient(sh, k, i, t0) if grad is not None else None
        yield Timeout(env, read_end + next(cs) - now)
        t_grad = env.now
        # lock; t1 <- t; apply; t <- t + 1; unlock
        s = sh.free_at
        if s < t_grad:
            s = t_grad
        t1 = sh.vserial
        sh.vserial = t1 + 1
        end = s + (u - uc)
        sh.free_at = end
        if grad is not None:
            sh.apply_update(g, t1 - t0, t1 + 1, end)
        rec((i, k, t0, t1, 1, 0, now, t_grad, end, read_end, s))
        yield Timeout(env, end - t_grad)


def lock_resource_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """LOCK with the mutex as a ``simpy.Resource`` (FIFO): the slow reference model that
    :func:`lock_worker` reproduces exactly (the tests compare their traces). Timing-only."""
    env = sh.env
    rec = sh.rec.extend
    frac = sh.copy_fraction
    mutex = sh.mutex
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        t_start = env.now
        u = next(us)
        uc = u * frac
        with mutex.request() as req:  # lock; copy θ and read t0; unlock
            yield req
            t0 = sh.vserial
            yield Timeout(env, uc)
            read_end = env.now
        yield Timeout(env, next(cs))
        t_grad = env.now
        with mutex.request() as req:  # lock; t1 <- t; apply; t <- t + 1; unlock
            yield req
            start = env.now
            t1 = sh.vserial
            yield Timeout(env, u - uc)
            sh.vserial = t1 + 1
            rec((i, k, t0, t1, 1, 0, t_start, t_grad, env.now, read_end, start))


# ---------------------------------------------------------------------------------------------- hogwild
def hogwild_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """HOGWILD! (papers.md §2) with the ideal atomic counter: the commit instant is the fetch-and-add
    after copy + compute; the apply then runs for the rest of U. Two timeouts per update (one when the
    apply takes no time)."""
    env = sh.env
    rec = sh.rec.extend
    frac = sh.copy_fraction
    contended = sh.bus_contention > 0
    grad = sh.grad
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        t_start = env.now
        t0 = sh.version
        u = next(us)
        if contended:
            u = sh.contention(t_start, u)
        uc = u * frac
        g = _gradient(sh, k, i, t0) if grad is not None else None
        yield Timeout(env, uc + next(cs))
        now = env.now
        t1 = sh.version
        sh.version = t1 + 1
        if grad is not None:
            sh.apply_update(g, t1 - t0, t1 + 1, now)
        ua = u - uc
        rec((i, k, t0, t1, 1, 0, t_start, now, now + ua, 0.0, 0.0))
        if ua > 0:
            yield Timeout(env, ua)


# ---------------------------------------------------------------------------------------------- leashed
def leashed_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """Leashed-SGD (papers.md §2.1): one timeout for the compute, one per CAS attempt."""
    env = sh.env
    rec = sh.rec.extend
    vfree = sh.vfree.append
    frac = sh.copy_fraction
    persistence = sh.persistence
    contended = sh.bus_contention > 0
    grad = sh.grad
    g = None
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        # PIN the latest vector V (version t0) and compute on it; UNPIN at the end of the compute
        t_start = env.now
        t0 = sh.version
        c = next(cs)
        unpin = t_start + c
        if unpin > sh.latest_unpin:
            sh.latest_unpin = unpin
        if grad is not None:
            g = _gradient(sh, k, i, t0)
        yield Timeout(env, c)
        now = t_grad = env.now
        attempts = 0
        while True:
            # PIN the latest L (version t1); copy it into a new private vector; UNPIN; apply; CAS
            attempts += 1
            t1 = sh.version
            u = next(us)
            if contended:
                u = sh.contention(now, u)
            unpin = now + u * frac
            if unpin > sh.latest_unpin:
                sh.latest_unpin = unpin
            if u > 0:
                yield Timeout(env, u)
                now = env.now
            if sh.version == t1:  # CAS(P, L, N) succeeds: N is published, L goes stale
                sh.version = t1 + 1
                last = sh.latest_unpin
                vfree(last if last > now else now)
                sh.latest_unpin = now
                if grad is not None:
                    sh.apply_update(g, t1 - t0, t1 + 1, now)
                rec((i, k, t0, t1, attempts, 0, t_start, t_grad, now, 0.0, 0.0))
                break
            if attempts > persistence:  # T_p + 1 failed attempts: drop the gradient
                rec((i, k, t0, -1, attempts, 1, t_start, t_grad, now, 0.0, 0.0))
                break


# ---------------------------------------------------------------------------------------------- seqlock
def _counter_even_at(starts: array, ends: array, t: float) -> float:
    """seqlock: the first instant >= t at which no granted apply is in progress (the counter is even)."""
    j = bisect_right(starts, t) - 1
    while j >= 0 and ends[j] > t:
        t = ends[j]
        j = bisect_right(starts, t) - 1
    return t


def seqlock_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """Seqlock AsyncSGD (docs/seqlock.md; module docstring): one timeout per snapshot try, one for the
    compute, one for the apply (two when a with-gradients apply waits for the writers' lock: the engine
    applies it when it begins, so that a snapshot's θ is the engine's θ when the snapshot succeeds).

    On a machine whose threads share the cores (``sh.machine_state.sched``, :mod:`leashed.sim.machine`)
    the same worker runs each snapshot try and gradient in the thread's slots of the rotation
    (``Scheduler.end_of``): its threads never sleep (a waiting reader or writer spins, ``lsh_backoff``),
    so, as for hogwild and leashed, which slots a thread gets does not depend on what it does. The apply
    runs on a full core (at the switch efficiency) once the writer has the lock: after 64 spins the
    waiters ``sched_yield()`` their cores to it. Kept in the rotation, a descheduled writer held the lock
    and the odd counter through the slots it missed, and 8 MLP threads on 2 cores were predicted at 0.785x
    the measured throughput (docs/seqlock.md)."""
    env = sh.env
    rec = sh.rec.extend
    frac = sh.copy_fraction
    grad = sh.grad
    starts, ends = sh.seq_starts, sh.seq_ends
    sched = getattr(sh.machine_state, "sched", None)
    if sched is None:
        def end_of(start: float, demand: float) -> float:
            return start + demand
        apply_end_of = end_of
    else:
        def end_of(start: float, demand: float) -> float:
            return sched.end_of(i, start, demand)

        def apply_end_of(start: float, demand: float) -> float:
            return start + demand / sched.efficiency
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        t_start = env.now
        u = next(us)
        uc = u * frac
        tries = 0
        a = _counter_even_at(starts, ends, t_start)
        while True:  # snapshot copies over [a, b]
            tries += 1
            b = end_of(a, uc)
            yield Timeout(env, b - env.now)
            j = bisect_right(starts, b) - 1  # the last apply begun by b (inclusive: a tie retries)
            if j < 0 or ends[j] <= a:  # no apply overlapped the copy: it is version j + 1
                break
            a = _counter_even_at(starts, ends, b)
        t0 = j + 1
        g = _gradient(sh, k, i, t0) if grad is not None else None
        yield Timeout(env, end_of(b, next(cs)) - b)
        t_grad = env.now
        # writers' lock (FIFO); counter odd; apply in place; counter even; unlock
        s = sh.free_at
        if s < t_grad:
            s = t_grad
        t1 = sh.version
        sh.version = t1 + 1
        end = apply_end_of(s, u - uc)
        sh.free_at = end
        starts.append(s)
        ends.append(end)
        rec((i, k, t0, t1, tries, 0, t_start, t_grad, end, b, s))
        if grad is not None:
            if s > t_grad:
                yield Timeout(env, s - t_grad)
            sh.apply_update(g, t1 - t0, t1 + 1, end)
        yield Timeout(env, end - env.now)


WORKERS = {"seq": seq_worker, "sync": sync_worker, "lock": lock_worker, "hogwild": hogwild_worker,
           "leashed": leashed_worker, "seqlock": seqlock_worker}
#: the two models of the mutex: the exact FIFO-server shortcut (default) and the simpy.Resource reference
LOCK_MODELS = {"fifo": lock_worker, "resource": lock_resource_worker}
