"""The simulator's driver: build the SimPy run of an :class:`ExperimentSpec`, run it, assemble a RunResult.

``simulate(spec)`` returns a :class:`~leashed.results.RunResult` with ``source == "sim"`` in the
runtime's format (architecture.md: one type, one file format), so every analysis reads both. All times
are simulated seconds. ``run_simulation`` also returns the internal trace (tickets, lock instants, the
live-vector intervals) that the tests and the claims of papers.md §6 need.

Timing-only mode (the default) is fast: no arithmetic, only who commits when. With-gradients mode
(``gradients=True``) applies real model gradients in simulated order (:mod:`leashed.sim.gradients`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from simpy.core import EmptySchedule

from leashed import algorithms, interrupts
from leashed.errors import SpecError
from leashed.results import RunResult, Samples, UpdateLog, machine_metadata
from leashed.sim.machine import Machine
from leashed.sim.machine_workers import (
    MACHINE_WORKERS,
    MachineState,
    leashed_abandoning_worker,
    leashed_runtime_worker,
)
from leashed.sim.processes import LOCK_MODELS, RECORD_FIELDS, RECORD_WIDTH, Halt, Shared
from leashed.sim.timing import TimingModel, remote_streams, worker_streams
from leashed.spec import ExperimentSpec, sparsifier_k

__all__ = ["DEFAULT_SAMPLES", "Simulation", "live_vector_stats", "live_vectors_at", "lock_read_waiters",
           "model_size", "run_simulation", "simulate", "sparse_timing", "timing_of"]

DEFAULT_SAMPLES = 500
#: how a leashed attempt that another commit overtakes ends: ``runtime`` (abandoned at the competing
#: commit, as the runtime's axpy_while_latest does; the default) or ``paper`` (papers.md §2.1: every
#: attempt runs its full U; the model of the closed-form claims T5–T7)
ATTEMPT_MODELS = ("runtime", "paper")
_CHUNK = 1 << 15  # SimPy steps between progress updates


@dataclass
class Simulation:
    """A finished simulation: the result plus the simulator's own trace (not stored in the file)."""

    result: RunResult
    #: per record (commit order), the fields of ``processes.RECORD_FIELDS`` as float64 columns
    records: dict[str, np.ndarray]
    #: leashed: the instants vectors were allocated / recycled (sorted); others: empty
    live_alloc: np.ndarray
    live_free: np.ndarray
    events: int
    elapsed_s: float
    #: with gradients: the :class:`~leashed.sim.gradients.GradientEngine` (final θ, sparsifier memories)
    engine: Any = None

    @property
    def wall_time(self) -> float:
        return float(self.result.totals["wall_time_s"])


def timing_of(spec: ExperimentSpec) -> TimingModel:
    """The timing model a spec names (``compute_time``, ``update_time``; copy fraction and bus
    contention in ``spec.extra``). :func:`run_simulation` then applies the sparsifier's update-time
    factor (:func:`sparse_timing`)."""
    if not spec.compute_time or not spec.update_time:
        raise SpecError("the simulator needs --compute-time and --update-time (e.g. gamma:mean=2ms,cv=0.2 "
                        "and const:20us), or --calibrate-from a runtime results file")
    return TimingModel.parse(spec.compute_time, spec.update_time,
                             float(spec.extra.get("copy_fraction", 0.5)),
                             float(spec.extra.get("bus_contention", 0.0)))


#: (features, classes, input shape) of the file-based data sets, so that timing-only runs know d unloaded
_DATA_SHAPES = {"mnist": (784, 10, (1, 28, 28)), "fashion-mnist": (784, 10, (1, 28, 28)),
                "cifar10": (3072, 10, (3, 32, 32))}


def model_size(spec: ExperimentSpec) -> int:
    """d, the parameters of the spec's model (a model whose size is its ``dim`` needs no data; MNIST,
    Fashion-MNIST and CIFAR-10 shapes are known; other data sets are loaded to read their shape)."""
    from types import SimpleNamespace

    from leashed.models.registry import model_descriptor
    from leashed.workload import build_spec_model, dataset_name

    if model_descriptor(spec.model).params_from_dim:
        return int(spec.dim)
    name = dataset_name(spec)
    if name == "synthetic":
        return int(spec.dim)
    shape = _DATA_SHAPES.get(name.split(":")[0])
    if shape is None:
        from leashed.models.datasets import load_dataset

        data = load_dataset(name, dim=spec.dim, seed=spec.seed)
        shape = (data.n_features, data.n_classes, data.input_shape)
    features, classes, input_shape = shape
    data = SimpleNamespace(n_features=features, n_classes=classes, input_shape=input_shape)
    return int(build_spec_model(spec, data).n_params)


def sparse_timing(spec: ExperimentSpec, timing: TimingModel, n_params: int | None = None) -> TimingModel:
    """``timing`` with the update time of the spec's sparsifier (papers.md §5): U scales by
    f + (1 − f)·K/d (:func:`leashed.sim.timing.sparse_update_scaling`), f from
    ``spec.extra["sparse_update_factor"]`` (``--sparse-update-factor``) or the algorithm's default.
    A timing calibrated from a sparsified run has that run's factor divided out first. Unchanged for a
    dense spec and a dense (or uncalibrated) timing."""
    calibrated = float(timing.notes.get("calibration_sparse_scale", 1.0))  # type: ignore[arg-type]
    if spec.sparsifier == "none" and calibrated == 1.0:
        return timing
    share = spec.extra.get("sparse_update_factor")
    if spec.sparsifier == "none":
        rho = 1.0
    else:
        d = n_params if n_params is not None else model_size(spec)
        rho = sparsifier_k(spec.sparsifier, d) / d
    return timing.sparsified(spec.algorithm, rho, None if share is None else float(share), spec.threads,
                             calibrated)


def simulate(spec: ExperimentSpec, timing: TimingModel | None = None, *, gradients: bool = False,
             samples: int = DEFAULT_SAMPLES, progress: bool = False,
             machine: Machine | None = None) -> RunResult:
    """Simulate ``spec`` and return its RunResult (``source == "sim"``). See :func:`run_simulation`."""
    return run_simulation(spec, timing, gradients=gradients, samples=samples, progress=progress,
                          machine=machine).result


def machine_of(spec: ExperimentSpec) -> Machine:
    """The machine model a spec names (``spec.extra["machine"]``, as :meth:`Machine.describe` writes it);
    the ideal machine when it names none."""
    data = spec.extra.get("machine")
    if not data:
        return Machine()
    if not isinstance(data, dict):
        raise SpecError("the spec's machine must be a mapping (Machine.describe())")
    return Machine.from_description(data)


def attempt_model_of(spec: ExperimentSpec) -> str:
    model = spec.extra.get("attempt_model", "runtime")
    if model not in ATTEMPT_MODELS:
        raise SpecError(f"attempt model must be one of {', '.join(ATTEMPT_MODELS)}, not {model!r}")
    return str(model)


def run_simulation(spec: ExperimentSpec, timing: TimingModel | None = None, *, gradients: bool = False,
                   samples: int = DEFAULT_SAMPLES, progress: bool = False,
                   metadata: bool = True, lock_model: str = "fifo",
                   machine: Machine | None = None) -> Simulation:
    """Simulate ``spec.threads`` workers of ``spec.algorithm`` for ``spec.updates`` gradients.

    ``timing`` defaults to :func:`timing_of(spec) <timing_of>`; a sparsified spec scales its update
    time (:func:`sparse_timing`, in both modes). ``gradients`` turns on the
    with-gradients mode (model, data set, lr, batch size, step policy of the spec; the gradient count
    then defaults to ``spec.total_gradients``). ``samples`` is the number of periodic samples of live
    vectors and version over the simulated run. ``metadata=False`` skips the machine description
    (git, BLAS; for tests and benchmarks) and records only the seed. ``lock_model="resource"`` runs
    ``lock`` with a ``simpy.Resource`` mutex (the slower reference of the default FIFO-server model).
    ``machine`` (default: :func:`machine_of(spec) <machine_of>`, the ideal machine) is the machine model
    (:mod:`leashed.sim.machine`); ``spec.extra["attempt_model"]`` chooses leashed's attempt model
    (:data:`ATTEMPT_MODELS`).
    """
    timing = timing or timing_of(spec)
    if samples < 1:
        raise SpecError(f"samples must be a positive integer, not {samples}")
    engine = None
    if gradients:
        from leashed.sim.gradients import GradientEngine

        engine = GradientEngine(spec)
        n_total = spec.total_gradients(engine.data.n_train)
    elif spec.updates is None:
        raise SpecError("a timing-only simulation needs the number of gradients: pass `updates=N`")
    else:
        n_total = spec.updates
    timing = sparse_timing(spec, timing, engine.n_params if engine is not None else None)
    # with gradients: one BLAS thread, as the runtime's workers (architecture.md); the small per-batch
    # products gain nothing from more and a loaded machine loses much (20x measured on 2 busy cores).
    # Applied after the engine has loaded the model's BLAS, so that threadpoolctl sees the library.
    limiter = _one_blas_thread() if engine is not None else None
    try:
        return _run(spec, timing, engine, n_total, samples, progress, metadata, lock_model,
                    machine if machine is not None else machine_of(spec))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def _one_blas_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return None
    return threadpool_limits(limits=1, user_api="blas")


def _placement(scheduler: Any, clock: Any) -> Any:
    """Thread j -> (its core, the instant its next phase starts on it): the first instant from now at
    which it is on a core, and its :meth:`~leashed.sim.machine.Scheduler.core_of` then."""
    def place(j: int) -> tuple[int, float]:
        t = scheduler.next_run(j, clock())
        return scheduler.core_of(j, t), t
    return place


def _run(spec: ExperimentSpec, timing: TimingModel, engine: Any, n_total: int, samples: int, progress: bool,
         metadata: bool, lock_model: str, machine: Machine) -> Simulation:
    m = spec.threads
    info = algorithms.algorithm(spec.algorithm)
    persistence = spec.persistence if info.has_persistence else math.inf
    attempt_model = attempt_model_of(spec)
    eval_points: list[int] = []
    if engine is not None and spec.evaluations > 0:
        n_versions = -(-n_total // m) if info.versions_are_rounds else n_total  # sync: a version is a round
        eval_points = sorted({max(1, round(j * n_versions / spec.evaluations))
                              for j in range(1, spec.evaluations + 1)})

    env = simpy.Environment()

    def clock() -> float:  # the simulated time, for laws that replay measured time
        return env.now

    shared = Shared(env, m, n_total, persistence, timing.copy_fraction, timing.bus_contention, engine,
                    eval_points)
    if engine is not None and spec.evaluations > 0:
        shared.evaluate(0, 0.0)
    worker = info.resolve("sim_worker")  # the idealised worker (leashed: the paper's attempt model)
    if spec.algorithm == "lock":
        if lock_model not in LOCK_MODELS or (lock_model != "fifo" and engine is not None):
            raise SpecError(f"lock model must be one of {', '.join(LOCK_MODELS)} (resource: timing only)")
        worker = LOCK_MODELS[lock_model]
    machine_notes: dict[str, Any] = {"applied": False}
    place = None  # threads that share cores: which core a replayed draw reads (sim.timeline)
    runtime_attempts = info.has_cas and attempt_model == "runtime"
    if not machine.ideal and spec.algorithm not in MACHINE_WORKERS:
        machine_notes["not_applied"] = (f"no machine model for {spec.algorithm}: "
                                        "simulated on the ideal machine")
        machine = Machine()
    if runtime_attempts or not machine.ideal:
        if spec.algorithm == "lock" and lock_model != "fifo":
            raise SpecError("the machine model runs lock with the FIFO mutex model only")
        if info.has_cas:
            worker = leashed_abandoning_worker if machine.ideal and timing.update_remote is None \
                else leashed_runtime_worker
        else:
            worker = MACHINE_WORKERS[spec.algorithm]
        chunks = spec.extra.get("copy_chunks", timing.notes.get("copy_chunks", 0))
        scheduler = machine.scheduler(m, seed=spec.seed)
        if scheduler is not None:
            place = _placement(scheduler, clock)
        shared.machine_state = MachineState(machine, scheduler,
                                            remote_streams(timing, spec.seed, m, clock, place)
                                            if not machine.ideal or timing.update_remote is not None
                                            else None,
                                            int(chunks or 0), spec.sparsifier == "none")
        machine_notes["applied"] = not machine.ideal
    procs = []
    for i, (cs, us) in enumerate(worker_streams(timing, spec.seed, m, clock, place)):
        procs.append(env.process(worker(shared, i, cs, us)))
    if shared.machine_state is not None:
        shared.machine_state.procs = procs

    bar = _progress_bar(n_total, progress)
    started = time.perf_counter()
    events = n = 0
    step = env.step
    stopped = False  # SIGINT/SIGTERM (leashed/interrupts.py) or Ctrl-C: keep the partial result
    try:
        while True:
            for n in range(_CHUNK):  # noqa: B007 - n counts the steps of an unfinished chunk
                step()
                if not n & 1023 and interrupts.requested():
                    raise KeyboardInterrupt
            events += _CHUNK
            n = 0
            if bar is not None:
                bar.update(shared.next_ticket - bar.n)
    except EmptySchedule:
        events += n
    except Halt:
        events += n + 1
    except KeyboardInterrupt:
        events += n
        stopped = True
    elapsed = time.perf_counter() - started
    if bar is not None:
        bar.update(shared.next_ticket - bar.n)
        bar.close()
    sim = _assemble(spec, timing, shared, engine, samples, elapsed, events, metadata)
    sim.result.totals["interrupted"] = stopped
    sim.result.extra["attempt_model"] = attempt_model if info.has_cas else None
    sim.result.extra["machine"] = {**machine.describe(), **machine_notes}
    return sim


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="grad", desc="simulate", leave=False, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------- assembly
def _assemble(spec: ExperimentSpec, timing: TimingModel, sh: Shared, engine: Any, n_samples: int,
              elapsed: float, events: int, with_metadata: bool) -> Simulation:
    # a view of the records buffer (no copy: the buffer is never extended again)
    rows = np.frombuffer(sh.rec, dtype=np.float64).reshape(-1, RECORD_WIDTH) \
        if len(sh.rec) else np.zeros((0, RECORD_WIDTH))
    rec = {name: rows[:, j] for j, name in enumerate(RECORD_FIELDS)}
    info = algorithms.algorithm(spec.algorithm)
    dropped = rec["dropped"] > 0
    version_read = rec["version_read"].astype(np.int64)
    version_commit = rec["version_commit"].astype(np.int64)
    staleness = np.where(dropped, -1, version_commit - version_read)
    attempts = rec["attempts"].astype(np.int32)
    updates = UpdateLog(thread=rec["thread"].astype(np.int32), version_read=version_read,
                        version_commit=version_commit, staleness=staleness, attempts=attempts,
                        dropped=dropped, t_start=rec["t_start"], t_grad=rec["t_grad"],
                        t_commit=rec["t_commit"],
                        t_attempt=rec["aux1"] if (sh.machine_state is not None and info.has_cas)
                        or info.snapshot_reads else None)  # seqlock: the end of the snapshot, as the runtime
    end = float(sh.env.now)
    m = spec.threads
    final = int(sh.vserial if spec.algorithm == "lock" else sh.version)

    # live vectors: leashed from the allocation / recycle instants, constant for the baselines
    if info.uses_pool:
        alloc = np.sort(np.concatenate(([0.0], rec["t_grad"])))
        free = np.sort(np.concatenate((np.frombuffer(sh.vfree, dtype=np.float64), rec["t_commit"][dropped])))
    else:
        alloc = free = np.zeros(0)
    constant_live = None if info.uses_pool else info.live_vectors(m)

    # the version published at each instant: the committed updates' instants (hogwild: the fetch-and-add)
    # are in version order, each producing version_commit + 1 (sync: all of a round produce one version)
    commit_instant = (rec["t_grad"] if info.commits_at_gradient_end else rec["t_commit"])[~dropped]
    produced = version_commit[~dropped] + 1
    order_c = np.lexsort((produced, commit_instant))
    commit_times, produced = commit_instant[order_c], np.concatenate(([0], produced[order_c]))
    grid = end * np.arange(n_samples + 1) / n_samples
    times = [grid]
    losses = [np.full(len(grid), np.nan)]
    accs = [np.full(len(grid), np.nan)]
    evals = sh.evals
    if engine is not None:
        final_version = final
        if sh.diverged_at is None and not engine.finite():
            sh.diverged_at = final_version
        if sh.diverged_at is None and (not evals or evals[-1][1] != final_version):
            loss, acc = engine.evaluate()
            evals.append((end, final_version, loss, acc))
    if evals:
        ev = np.array(evals, dtype=np.float64).reshape(-1, 4)
        times.append(ev[:, 0])
        losses.append(ev[:, 2])
        accs.append(ev[:, 3])
    sample_time = np.concatenate(times)
    order = np.argsort(sample_time, kind="stable")
    sample_time = sample_time[order]
    live = (live_vectors_at(alloc, free, sample_time) if constant_live is None
            else np.full(len(sample_time), constant_live))
    samples = Samples(time=sample_time,
                      version=produced[np.searchsorted(commit_times, sample_time, side="right")],
                      live_vectors=live, loss=np.concatenate(losses)[order],
                      accuracy=np.concatenate(accs)[order])

    applied = int((~dropped).sum())
    failures = int(attempts.sum() - applied) if info.has_cas else 0
    totals = {"updates_applied": applied, "updates_dropped": int(dropped.sum()), "cas_failures": failures,
              "wall_time_s": end, "diverged_at": -1 if sh.diverged_at is None else sh.diverged_at,
              "interrupted": False, "lost_updates": None}
    if constant_live is None:
        live_mean, live_max = live_vector_stats(alloc, free, end)
    else:
        live_mean, live_max = float(constant_live), constant_live
    extra = {
        "engine": "simpy",
        "mode": "gradients" if engine is not None else "timing",
        "timing": timing.describe(),
        "total_gradients": int(sh.n_total),
        "gradients_computed": int(len(rows)),
        "final_version": final,
        "cas_attempts": int(attempts.sum()),
        "throughput": applied / end if end > 0 else None,
        "live_vectors_mean": live_mean,
        "live_vectors_max": live_max,
        "sim_events": events,
    }
    if info.versions_are_rounds:
        extra["rounds"] = final
    metadata = machine_metadata(seed=spec.seed) if with_metadata else {"seed": spec.seed}
    metadata["sim_elapsed_s"] = elapsed
    params = engine.theta.copy() if engine is not None else np.zeros(0, np.float32)
    result = RunResult(spec=spec, source="sim", updates=updates, samples=samples, params=params,
                       totals=totals, metadata=metadata, extra=extra)
    return Simulation(result=result, records=rec, live_alloc=alloc, live_free=free, events=events,
                      elapsed_s=elapsed, engine=engine)


# ------------------------------------------------------------------------------------------- trace tools
def live_vectors_at(alloc: np.ndarray, free: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Live vectors at each instant: allocated at or before it and not recycled at or before it."""
    times = np.asarray(times, dtype=np.float64)
    return (np.searchsorted(alloc, times, side="right") - np.searchsorted(free, times, side="right")) \
        .astype(np.int32)


def live_vector_stats(alloc: np.ndarray, free: np.ndarray, end: float) -> tuple[float, int]:
    """(time average over [0, end], maximum) of the live-vector count; at equal instants recycling
    happens before allocation."""
    if len(alloc) == 0:
        return 0.0, 0
    peak = int(live_vectors_at(alloc, free, alloc).max())
    freed = free[free <= end]
    area = float(freed.sum() + (len(alloc) - len(freed)) * end - alloc.sum())
    return (area / end if end > 0 else float(peak)), peak


def lock_read_waiters(sim: Simulation) -> np.ndarray:
    """``lock`` only: at each commit (the instant the commit acquires the lock), how many other threads
    are waiting for the lock to read, or reading under it (papers.md §6.1: E[τ] = m − 1 − E[this]).

    A thread waits to read from its read request (``t_start``) to the end of its read (``aux1``); the
    committing thread's own read is over, so counting every read interval that contains the instant
    counts exactly the others."""
    if sim.result.spec.algorithm != "lock":
        raise ValueError("lock_read_waiters needs a lock simulation")
    rec = sim.records
    requests = np.sort(rec["t_start"])
    read_end = np.sort(rec["aux1"])
    commit = rec["aux2"]
    return np.searchsorted(requests, commit, side="right") - np.searchsorted(read_end, commit, side="right")
