"""Workers that simulate what the runtime does on a machine (docs/simulator.md, "Attempt models" and
"The machine model"); the paper's idealised workers are in :mod:`leashed.sim.processes`.

* ``leashed`` with the **runtime attempt model** (the default): an attempt copies the latest vector and
  applies the gradient chunk by chunk, and is abandoned as soon as its base vector is replaced, as the
  runtime's ``axpy_while_latest`` does: at the competing commit, it ends at the next of its
  ``copy_chunks`` chunk boundaries (or at once, ``copy_chunks = 0``), and a retry starts then. The
  paper's model (papers.md §2.1: every failed attempt costs its full U) is ``attempt_model="paper"``.
  A sparse attempt can be abandoned during its copy only (the runtime applies the K pairs unchecked).
* every worker here runs its phases on the :class:`~leashed.sim.machine.Scheduler` of the machine when
  threads outnumber cores (a phase of x CPU seconds ends at ``end_of(j, now, x)``), draws a leashed
  attempt's time from the remote law when the latest vector was written by another thread, stretches a
  copy by the machine's bandwidth factor and slows a gradient while other threads copy its vector
  (:class:`~leashed.sim.machine.Machine`).

Rescheduling a sleeping worker (abandonment, a slowed gradient) detaches the worker from the timeout it
waits on and attaches it to a new one (SimPy's own ``Process.interrupt`` does the same, but raises into
the generator); the stale timeout still fires, with nobody waiting.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from heapq import heappop, heappush
from typing import Any

from simpy import Event

from leashed.sim.processes import Gen, Shared, Timeout, _finish_round, _gradient, _round_of, seqlock_worker

__all__ = ["MACHINE_WORKERS", "MachineState", "leashed_abandoning_worker", "leashed_runtime_worker"]


class MachineState:
    """Per-run state of the machine-aware workers, hung on ``Shared.machine_state``."""

    __slots__ = ("sched", "machine", "procs", "remote", "writer", "attempting", "computing", "copies",
                 "chunks", "abandon_whole", "pending", "serials")

    def __init__(self, machine: Any, sched: Any, remote: list[Iterator[float]] | None, chunks: int,
                 abandon_whole: bool) -> None:
        self.machine = machine
        self.sched = sched
        self.procs: list[Any] = []
        self.remote = remote            # per worker: remote-attempt time draws (None: the update law)
        self.writer = -1                # the thread that wrote the latest vector (-1: the initial one)
        #: thread -> [base version, start, cpu at start, abandonable demand, demand, event, abandoned]
        self.attempting: dict[int, list[Any]] = {}
        #: thread -> [base version, planned end, event]
        self.computing: dict[int, list[Any]] = {}
        self.copies: list[float] = []   # end instants of the copies running (bandwidth sharing)
        self.chunks = chunks
        self.abandon_whole = abandon_whole
        #: ideal machine: first attempts not started yet, (start, serial, thread, attempt) in a heap
        self.pending: list[tuple[float, int, int, list[Any]]] = []
        self.serials = itertools.count()  # tie-breaker of equal start instants: registration order


def _wait(sh: Shared, end: float) -> Timeout:
    return Timeout(sh.env, max(end - sh.env.now, 0.0))


def _end(ms: MachineState, i: int, start: float, demand: float) -> float:
    sched = ms.sched
    return start + demand if sched is None else sched.end_of(i, start, demand)


def _retarget(sh: Shared, ms: MachineState, j: int, old: Any, when: float) -> Any:
    """Wake worker j at ``when`` instead of when ``old`` fires; returns the new event."""
    proc = ms.procs[j]
    try:
        old.callbacks.remove(proc._resume)
    except (ValueError, AttributeError):  # already woken in this instant
        return old
    new = Timeout(sh.env, max(when - sh.env.now, 0.0))
    new.callbacks.append(proc._resume)
    proc._target = new
    return new


def _abandon_attempts(sh: Shared, ms: MachineState, committer: int) -> None:
    """A commit replaced the latest vector: every other attempt in flight is doomed and stops at its next
    chunk boundary (module docstring)."""
    now = sh.env.now
    sched = ms.sched
    chunks = ms.chunks
    for j, att in ms.attempting.items():
        if j == committer or att[6]:
            continue
        _, start, cpu0, abandonable, demand, event, _ = att
        done = (now - start) if sched is None else (sched.cpu(j, now) - cpu0)
        if done >= abandonable:
            continue  # past the checked part: it runs to its end and its CAS fails
        if chunks > 0 and abandonable > 0:
            step = demand / chunks
            boundary = min(abandonable, math.ceil(done / step - 1e-12) * step)
            if boundary >= abandonable:
                continue
        else:
            boundary = done
        if sched is None:
            when = start + boundary
        elif boundary <= done:  # it notices when it next runs (now, if it is on a core)
            when = sched.next_run(j, now)
        else:
            when = sched.wall(j, cpu0 + boundary)
        att[5] = _retarget(sh, ms, j, event, max(when, now))
        att[6] = True


def _slow_readers(sh: Shared, ms: MachineState, copier: int, version: int, copy_end: float) -> None:
    """Gradients computing on ``version`` are slowed by read_slowdown × the overlap with this copy: the
    time both threads run (on a time-shared machine, the slots both are on a core), added to the
    reader's CPU demand."""
    rate = ms.machine.read_slowdown
    now = sh.env.now
    sched = ms.sched
    for j, comp in ms.computing.items():
        if j == copier or comp[0] != version:
            continue
        until = min(copy_end, comp[1])
        if until <= now:
            continue
        if sched is None:
            comp[1] += rate * (until - now)
        else:
            overlap = sched.together(copier, j, now, until)
            if overlap <= 0:
                continue
            comp[1] = sched.wall(j, sched.cpu(j, comp[1]) + rate * overlap)
        comp[2] = _retarget(sh, ms, j, comp[2], comp[1])
        if comp[1] > sh.latest_unpin:  # its pin on the latest vector lasts longer
            sh.latest_unpin = comp[1]


def leashed_runtime_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """Leashed-SGD as the runtime runs it (module docstring); records and live-vector bookkeeping as
    :func:`leashed.sim.processes.leashed_worker`."""
    env = sh.env
    ms: MachineState = sh.machine_state  # type: ignore[attr-defined]
    rec = sh.rec.extend
    vfree = sh.vfree.append
    frac = sh.copy_fraction
    persistence = sh.persistence
    grad = sh.grad
    machine = ms.machine
    remote = ms.remote[i] if ms.remote is not None else None
    slows = machine.read_slowdown > 0
    shares_bandwidth = bool(machine.copy_concurrency)
    sched = ms.sched
    contended = sh.bus_contention > 0
    g = None
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        t_start = env.now
        t0 = sh.version
        c = next(cs)
        end = _end(ms, i, t_start, c)
        if grad is not None:
            g = _gradient(sh, k, i, t0)
        if end > sh.latest_unpin:  # the pin on t0 ends with the gradient
            sh.latest_unpin = end
        ev = Timeout(env, end - t_start)
        if slows:
            comp = [t0, end, ev]
            ms.computing[i] = comp
            yield ev
            del ms.computing[i]
        else:
            yield ev
        now = t_grad = env.now
        attempts = 0
        while True:
            attempts += 1
            t1 = sh.version
            u = next(remote) if remote is not None and ms.writer not in (-1, i) else next(us)
            if contended:
                u = sh.contention(now, u)
            if shares_bandwidth:
                copies = ms.copies
                copies[:] = [e for e in copies if e > now]
                u *= machine.copy_factor(len(copies) + 1)
            abandonable = u if ms.abandon_whole else u * frac
            cpu0 = now if sched is None else sched.cpu(i, now)
            att_end = _end(ms, i, now, u)
            if shares_bandwidth:
                ms.copies.append(_end(ms, i, now, u * frac))
            if slows:  # a dense attempt reads its source for all of U (dst = L − α·g), a sparse one copies
                _slow_readers(sh, ms, i, t1, _end(ms, i, now, u if ms.abandon_whole else u * frac))
            unpin = _end(ms, i, now, u * frac)
            if unpin > sh.latest_unpin:
                sh.latest_unpin = unpin
            ev = Timeout(env, att_end - now)
            att = [t1, now, cpu0, abandonable, u, ev, False]
            ms.attempting[i] = att
            yield ev
            del ms.attempting[i]
            now = env.now
            if sh.version == t1:  # CAS(P, L, N) succeeds: N is published, L goes stale
                sh.version = t1 + 1
                ms.writer = i
                last = sh.latest_unpin
                vfree(last if last > now else now)
                sh.latest_unpin = now
                if ms.attempting:
                    _abandon_attempts(sh, ms, i)
                if grad is not None:
                    sh.apply_update(g, t1 - t0, t1 + 1, now)
                rec((i, k, t0, t1, attempts, 0, t_start, t_grad, now, att[1], 0.0))
                break
            if attempts > persistence:  # T_p + 1 failed attempts: drop the gradient
                rec((i, k, t0, -1, attempts, 1, t_start, t_grad, now, att[1], 0.0))
                break


def _abandon_ideal(sh: Shared, ms: MachineState, committer: int) -> None:
    """:func:`_abandon_attempts` on the ideal machine (every thread on its own core)."""
    now = sh.env.now
    chunks = ms.chunks
    procs = ms.procs
    together = None  # continuous checking: every doomed attempt ends now, on one shared event
    for j, att in ms.attempting.items():
        if j == committer or att[3]:
            continue
        start, abandonable, event = att[0], att[1], att[2]
        done = now - start
        if done >= abandonable:
            continue
        if chunks > 0:
            step = att[4] / chunks
            boundary = math.ceil(done / step - 1e-12) * step
            if boundary >= abandonable:
                continue
            att[2] = _retarget(sh, ms, j, event, start + boundary if start + boundary > now else now)
        else:
            proc = procs[j]
            try:
                event.callbacks.remove(proc._resume)
            except (ValueError, AttributeError):
                continue
            if together is None:
                together = Timeout(sh.env, 0.0)
            together.callbacks.append(proc._resume)
            proc._target = together
            att[2] = together
        att[3] = True


def leashed_abandoning_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """:func:`leashed_runtime_worker` on the ideal machine, lean: one SimPy timeout covers a gradient and
    its first attempt. The first attempt is registered when the gradient starts (``MachineState.pending``)
    and becomes an attempt in flight at the first commit after its start (its pin then counts), which
    may abandon it; if no commit comes before it ends, it succeeds on the version it pinned, the latest.
    Retries are one timeout each. Same results as the two-timeout form at a third less cost."""
    env = sh.env
    ms: MachineState = sh.machine_state  # type: ignore[attr-defined]
    attempting = ms.attempting
    pending = ms.pending
    rec = sh.rec.extend
    vfree = sh.vfree.append
    frac = sh.copy_fraction
    persistence = sh.persistence
    contended = sh.bus_contention > 0
    whole = ms.abandon_whole
    grad = sh.grad
    serials = ms.serials
    g = None
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        t_start = env._now  # Environment.now without the property (sim.processes._Wake uses it too)
        t0 = sh.version
        c = next(cs)
        unpin = t_start + c
        if unpin > sh.latest_unpin:
            sh.latest_unpin = unpin
        if grad is not None:
            g = _gradient(sh, k, i, t0)
        t_grad = t_start + c
        u = next(us)
        if contended:  # the factor needs the copies running when the attempt starts: two timeouts
            yield Timeout(env, c)
            u = sh.contention(env.now, u)
            ev = Timeout(env, u)
            att = [env.now, u if whole else u * frac, ev, False, u, False, sh.version, u * frac]
            attempting[i] = att
            unpin = env.now + u * frac
            if unpin > sh.latest_unpin:
                sh.latest_unpin = unpin
        else:
            ev = Timeout(env, c + u)
            # [start, abandonable, event, doomed, demand, woken, base version, pinned for]
            att = [t_grad, u if whole else u * frac, ev, False, u, False, -1, u * frac]
            heappush(pending, (t_grad, next(serials), i, att))
        yield ev
        att[5] = True
        attempts = 1
        while True:
            now = env._now
            started = att[0]
            if attempting.get(i) is att:
                del attempting[i]
                t1 = att[6]
                won = not att[3] and sh.version == t1
            else:  # never overtaken nor seen by a commit: it pinned the latest, which still is
                t1 = sh.version
                won = True
                unpin = started + att[7]
                if unpin > sh.latest_unpin:
                    sh.latest_unpin = unpin
            if won:  # CAS(P, L, N) succeeds: N is published, L goes stale
                if pending and pending[0][0] <= now:  # first attempts that started before this commit
                    version = sh.version
                    while pending and pending[0][0] <= now:
                        _, _, j, other = heappop(pending)
                        if not other[5]:
                            other[6] = version
                            attempting[j] = other
                            unpin = other[0] + other[7]
                            if unpin > sh.latest_unpin:
                                sh.latest_unpin = unpin
                sh.version = t1 + 1
                last = sh.latest_unpin
                vfree(last if last > now else now)
                sh.latest_unpin = now
                if attempting:
                    _abandon_ideal(sh, ms, i)
                if grad is not None:
                    sh.apply_update(g, t1 - t0, t1 + 1, now)
                rec((i, k, t0, t1, attempts, 0, t_start, t_grad, now, started, 0.0))
                break
            if attempts > persistence:  # T_p + 1 failed attempts: drop the gradient
                rec((i, k, t0, -1, attempts, 1, t_start, t_grad, now, started, 0.0))
                break
            attempts += 1  # retry: pin the latest now, one timeout
            u = next(us)
            if contended:
                u = sh.contention(now, u)
            unpin = now + u * frac
            if unpin > sh.latest_unpin:
                sh.latest_unpin = unpin
            ev = Timeout(env, u)
            att = [now, u if whole else u * frac, ev, False, u, False, sh.version, u * frac]
            attempting[i] = att
            yield ev
            att[5] = True


def hogwild_machine_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """HOGWILD! (as :func:`leashed.sim.processes.hogwild_worker`) with its phases on the machine."""
    env = sh.env
    ms: MachineState = sh.machine_state  # type: ignore[attr-defined]
    rec = sh.rec.extend
    frac = sh.copy_fraction
    grad = sh.grad
    while True:
        k = sh.next_ticket
        if k >= sh.n_total:
            return
        sh.next_ticket = k + 1
        t_start = env.now
        t0 = sh.version
        u = next(us)
        uc = u * frac
        g = _gradient(sh, k, i, t0) if grad is not None else None
        yield _wait(sh, _end(ms, i, t_start, uc + next(cs)))
        now = env.now
        t1 = sh.version
        sh.version = t1 + 1
        if grad is not None:
            sh.apply_update(g, t1 - t0, t1 + 1, now)
        end = _end(ms, i, now, u - uc)
        rec((i, k, t0, t1, 1, 0, t_start, now, end, now, 0.0))
        if end > now:
            yield _wait(sh, end)


def seq_machine_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """SEQ with its update on the machine (background load stretches it)."""
    env = sh.env
    ms: MachineState = sh.machine_state  # type: ignore[attr-defined]
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
        t_grad = _end(ms, i, t_start, c)
        yield _wait(sh, _end(ms, i, t_grad, u))
        v = sh.version
        sh.version = v + 1
        if grad is not None:
            sh.apply_update(g, 0, v + 1, env.now)
        rec((i, k, v, v, 1, 0, t_start, t_grad, env.now, t_grad, 0.0))


def _critical_end(ms: MachineState, i: int, start: float, demand: float, waited: bool) -> float:
    """End of a critical section of ``demand`` CPU seconds that thread i enters at ``start``.

    On a time-shared machine the runtime's waiter sleeps in the mutex (``pthread_mutex_lock``) and the
    kernel wakes it onto a core at once, so the section does not wait for the thread's next slot of the
    rotation: it runs on a full core (at the switch efficiency), after the switch cost when the thread
    slept (``waited``). Otherwise (every thread on its own core) as any phase (:func:`_end`)."""
    sched = ms.sched
    if sched is None:
        return _end(ms, i, start, demand)
    return start + (sched.switch_cost if waited else 0.0) + demand / sched.efficiency


def lock_machine_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """LOCK (as :func:`leashed.sim.processes.lock_worker`, FIFO mutex) on the machine: the gradient in the
    thread's slots of the rotation, the two critical sections (copy, apply) on a full core as soon as
    the mutex is granted (:func:`_critical_end`). Keeping a waiter's and the holder's places in the
    rotation predicted 0.02–0.09x the measured throughput at m = 3, 4, 8 on 2 cores (a holder waited a
    slice for its slot while every other thread queued behind it)."""
    env = sh.env
    ms: MachineState = sh.machine_state  # type: ignore[attr-defined]
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
        s = max(sh.free_at, now)
        read_end = _critical_end(ms, i, s, uc, s > now)
        sh.free_at = read_end
        t0 = sh.vserial
        g = _gradient(sh, k, i, t0) if grad is not None else None
        yield _wait(sh, _end(ms, i, read_end, next(cs)))
        t_grad = env.now
        s = max(sh.free_at, t_grad)
        t1 = sh.vserial
        sh.vserial = t1 + 1
        end = _critical_end(ms, i, s, u - uc, s > t_grad)
        sh.free_at = end
        if grad is not None:
            sh.apply_update(g, t1 - t0, t1 + 1, end)
        rec((i, k, t0, t1, 1, 0, now, t_grad, end, read_end, s))
        yield _wait(sh, end)


def list_schedule(demands: list[float], cores: float, start: float) -> list[float]:
    """End instants of ``demands`` (CPU seconds, in thread order) run from ``start`` on ``cores`` cores
    (a fraction: ⌈cores⌉ cores at cores/⌈cores⌉ of their speed), each job on the first core to come
    free: the greedy list schedule, as a work-conserving kernel runs threads that give their core away
    when they wait (4 jobs of 1 s on 2 cores end at 1, 1, 2, 2; 3 at 1, 1, 2)."""
    k = max(1, math.ceil(cores - 1e-9))
    speed = min(1.0, cores / k)
    free = [start] * k
    ends = []
    for demand in demands:
        j = min(range(k), key=free.__getitem__)
        free[j] += demand / speed
        ends.append(free[j])
    return ends


def sync_machine_worker(sh: Shared, i: int, cs: Iterator[float], us: Iterator[float]) -> Gen:
    """SYNC (as :func:`leashed.sim.processes.sync_worker`) on a machine whose threads share the cores:
    a round's gradients, then its stripes, run as a greedy list schedule on the cores the threads have
    (ρ·m of them, ρ the share of each and e the switch efficiency: :func:`list_schedule`). The
    runtime's barrier spins 64 times and then ``sched_yield()``s, so a thread that waits gives its core
    to one that has not arrived: on 2 cores 3 threads take two gradients' time, not 1.5 (processor
    sharing read 1.19x the measured throughput at m = 3), and a waiter that kept its slots in the
    rotation of time slices made 4 quiet MLP threads 10x slower than measured. A time-sliced phase
    longer than the slice is not modelled (the MLP's gradient is a tenth of it)."""
    env = sh.env
    ms: MachineState = sh.machine_state  # type: ignore[attr-defined]
    sched = ms.sched
    m = sh.m
    cores = float(m) if sched is None else sched.share * sched.efficiency * m
    grad = sh.grad
    s = 0
    while True:
        k = s * m + i
        if k >= sh.n_total:
            return
        rnd = _round_of(sh, s)
        if rnd.ready is None:
            rnd.ready = Event(env)
        t_start = env.now
        c = next(cs)
        u = next(us)
        g = _gradient(sh, k, i, s) if grad is not None else None
        starting = rnd.starting
        starting.append((i, c))
        if len(starting) == rnd.expected:  # every thread has started the round: schedule its gradients
            order = sorted(starting)
            ends = list_schedule([d for _, d in order], cores, env.now)
            rnd.ready.succeed({j: e for (j, _), e in zip(order, ends, strict=True)})
        ends_of = yield rnd.ready
        yield _wait(sh, ends_of[i])
        rnd.arrived.append((i, k, t_start, env.now, u, g))
        if len(rnd.arrived) == rnd.expected:
            now = env.now
            stripes = list_schedule([a[4] for a in sorted(rnd.arrived)], cores, now)
            _finish_round(sh, rnd, end=max(stripes))
        end = yield rnd.event
        yield Timeout(env, end - env.now)
        s += 1


#: algorithm -> worker that runs on a machine model; an algorithm without one refuses a machine model
MACHINE_WORKERS = {"seq": seq_machine_worker, "lock": lock_machine_worker, "hogwild": hogwild_machine_worker,
                   "leashed": leashed_runtime_worker, "sync": sync_machine_worker,
                   "seqlock": seqlock_worker}  # one worker, ideal or not (it reads the scheduler)
