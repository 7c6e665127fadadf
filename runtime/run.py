"""Run an ExperimentSpec for real: worker threads without the GIL, real atomics (papers.md §2, §2.1, §3.1).

:func:`run` builds the model and data, the shared state (:class:`leashed.runtime._workers.Run`), starts
``spec.threads`` Python threads that each enter one nogil worker loop, and coordinates from the calling
thread: it releases the start barrier, samples the live vectors, takes parameter snapshots at about
``spec.evaluations`` evenly spaced moments (evaluated only after the threads have joined, so evaluation
never stalls a worker), drives the progress bar, and turns Ctrl-C into a prompt, clean stop. BLAS runs
single-threaded inside the workers (threadpoolctl). The outcome is a :class:`leashed.results.RunResult`
with ``source="runtime"``.

``spec.sparsifier`` (``topk:K``, ``randk:K``, with ``spec.error_memory``) sparsifies every gradient before
it is published, for every algorithm (papers.md §5, docs/sparsification.md): K is checked against the
model (:func:`sparse_config`) before any thread starts.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from leashed import algorithms, interrupts
from leashed.assembly import commit_order, lost_updates
from leashed.errors import SpecError
from leashed.limits import DEFAULT_DIVERGENCE_FACTOR
from leashed.models.registry import model_descriptor
from leashed.results import RunResult, Samples, UpdateLog, machine_metadata
from leashed.runtime import _workers
from leashed.runtime._sparse import KIND_CODES as SPARSE_CODES
from leashed.runtime._store import MAX_SLOTS, ParameterStore, pool_size
from leashed.spec import INF, STEP_POLICY_CODES, ExperimentSpec, sparsifier_k
from leashed.steprules import fleet_beta
from leashed.workload import EVAL_TRAIN_ROWS, build_spec_model, dataset_name
from leashed.workload import thread_seeds as _thread_seeds

__all__ = ["EVAL_TRAIN_ROWS", "MAX_THREADS", "TAIL_CAVEAT", "Prepared", "fleet_beta", "prepare", "run",
           "sparse_config", "thread_seeds"]

#: the largest m whose leashed pool fits the store: the published word is ``(version << SLOT_BITS) | slot``
#: (runtime/_store.pxd, SLOT_BITS = 16), so a store holds at most MAX_SLOTS = 2^16 - 1 slots, and m
#: threads need pool_size(m) = 2m + 2 of them: m <= 32766. One limit for every algorithm, so that a spec
#: runs under all of them.
MAX_THREADS = (MAX_SLOTS - 2) // 2
assert pool_size(MAX_THREADS) <= MAX_SLOTS < pool_size(MAX_THREADS + 1)
#: largest batch schedule (int32 row indices, one per gradient and row) a run may precompute
MAX_SCHEDULE_BYTES = 1 << 30
TAIL_A = 1.0
TAIL_CAVEAT = ("note: step policy 'tail' is TAIL-tau as in the authors' code (papers.md §3.1): its mean "
               "factor is 1 + A*sum_k p_k^2, not 1 (about 1.96 when almost every staleness is equal), so the "
               "effective step can nearly double once F is sampled (updates at versions (10m, 15m])")

assert _workers.ALGORITHM_CODES == algorithms.codes(), \
    "algorithm codes of _workers.pyx and the registry (leashed/algorithms.py) differ"
assert _workers.POLICY_CODES == STEP_POLICY_CODES, "step policy codes of _workers.pyx and spec.py differ"


@dataclass
class Prepared:
    """What a run needs besides the spec: data, model, bound model, initial parameters, ticket count and
    the batch schedule (int32 ``[epochs * n_rows]``, None for the counter model, which ignores rows)."""

    dataset: Any
    model: Any
    bound: Any
    theta0: np.ndarray
    total: int
    dataset_name: str
    schedule: np.ndarray | None


#: the data set rule, shared with the simulator (leashed.workload.dataset_name); the old name stays
_dataset_name = dataset_name


def prepare(spec: ExperimentSpec, dataset: Any = None) -> Prepared:
    """Load the data set (unless given), build and bind the model, draw the initial parameters
    (``model.init_params(spec.seed)``), count the gradients and precompute the batch schedule shared with
    the simulator (``leashed.batches``); one-line SpecError/DataError on bad input."""
    from leashed.batches import epoch_permutation
    from leashed.models.datasets import load_dataset

    name = dataset_name(spec)
    if dataset is None:
        dataset = load_dataset(name, dim=spec.dim, seed=spec.seed)
    model = build_spec_model(spec, dataset)
    reads_rows = model_descriptor(spec.model).reads_rows
    n_rows = int(dataset.X_train.shape[0])
    if n_rows // spec.batch_size < 1:  # also with --updates, which skips total_gradients' own check
        raise SpecError(f"batch size {spec.batch_size} is larger than the training set "
                        f"({n_rows} rows); choose --batch-size <= {n_rows}")
    total = spec.total_gradients(n_rows)
    if total < spec.threads:
        raise SpecError(f"{total} gradients in total cannot keep {spec.threads} threads busy; use at most "
                        f"{total} threads, more epochs or updates, or a smaller batch size")
    bound = model.bind(dataset.X_train, dataset.y_train if reads_rows else None, spec.batch_size)
    schedule = None
    if reads_rows:
        nb = n_rows // spec.batch_size
        epochs = -(-total // nb)
        if epochs * n_rows * 4 > MAX_SCHEDULE_BYTES:
            raise SpecError(f"{total} gradients need a batch schedule of "
                            f"{epochs * n_rows * 4 / 2**30:.1f} GiB "
                            f"(more than {MAX_SCHEDULE_BYTES // 2**30} GiB); run fewer epochs or updates")
        schedule = np.empty(epochs * n_rows, dtype=np.int32)
        for e in range(epochs):
            schedule[e * n_rows:(e + 1) * n_rows] = epoch_permutation(e, n_rows, spec.seed)
    theta0 = np.ascontiguousarray(model.init_params(spec.seed), dtype=np.float32)
    return Prepared(dataset, model, bound, theta0, int(total), name, schedule)


def thread_seeds(spec: ExperimentSpec) -> np.ndarray:
    """Seeds of the per-thread generators (uint64), from numpy SeedSequence([seed, 2]).spawn(m)
    (:func:`leashed.workload.thread_seeds`)."""
    return _thread_seeds(spec.seed, spec.threads)


def sparse_config(spec: ExperimentSpec, n_params: int) -> tuple[str, int]:
    """(kind, K) of the spec's sparsifier for a model of ``n_params`` parameters (papers.md §5): kind
    ``none``, ``topk`` or ``randk``; one-line SpecError for K > n_params, K <= 0, a malformed sparsifier,
    or error memory without a sparsifier (``leashed.spec.sparsifier_k``, the simulator's rules)."""
    k = sparsifier_k(spec.sparsifier, n_params)
    kind = spec.sparsifier.split(":")[0]
    if kind == "none" and spec.error_memory:
        raise SpecError("error memory needs a sparsifier: pass `sparsifier=topk:K` or `sparsifier=randk:K`")
    return kind, (0 if kind == "none" else k)


def check_runtime_spec(spec: ExperimentSpec) -> None:
    """What the runtime adds to ExperimentSpec's own validation."""
    if spec.threads > MAX_THREADS:
        raise SpecError(f"the runtime runs at most {MAX_THREADS} threads, not {spec.threads} (the leashed "
                        f"store's published word has 16 bits for the slot index, and m threads need 2m + 2 "
                        f"slots)")
    if spec.sparsifier == "none" and spec.error_memory:
        raise SpecError("error memory needs a sparsifier: pass `sparsifier=topk:K` or `sparsifier=randk:K`")
    if spec.backend != "threads":
        raise SpecError(f"the runtime supports only the threads backend, not {spec.backend!r}")


def _new_records(total: int) -> dict[str, np.ndarray]:
    rec = {
        "thread": np.full(total, -1, dtype=np.int32),
        "version_read": np.zeros(total, dtype=np.int64),
        "version_commit": np.zeros(total, dtype=np.int64),
        "staleness": np.zeros(total, dtype=np.int64),
        "attempts": np.zeros(total, dtype=np.int32),
        "dropped": np.zeros(total, dtype=np.uint8),
        "t_start": np.zeros(total, dtype=np.int64),
        "t_grad": np.zeros(total, dtype=np.int64),
        "t_commit": np.zeros(total, dtype=np.int64),
        "t_attempt": np.zeros(total, dtype=np.int64),
    }
    return rec


def _update_log(rec: dict[str, np.ndarray]) -> UpdateLog:
    """The records (indexed by ticket; times in ns) in commit order (leashed.assembly.commit_order)."""
    taken = rec["thread"] >= 0  # tickets handed out (a stopped run leaves the rest unwritten)
    seconds = {name: (values[taken] / 1e9 if name.startswith("t_") else values[taken])
               for name, values in rec.items()}
    return commit_order([seconds])


def _progress_bar(total: int, enabled: bool | None) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc="train", unit="grad", file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=(None if enabled is None else not enabled), mininterval=0.2)


class _Worker(threading.Thread):
    def __init__(self, run_state: Any, tid: int) -> None:
        super().__init__(name=f"leashed-worker-{tid}", daemon=True)
        self.run_state = run_state
        self.tid = tid
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.run_state.work(self.tid)
        except BaseException as exc:  # noqa: BLE001 - reported by the coordinator
            self.error = exc


#: the coordinator's longest sleep between looks at the workers (interrupts, progress, live vectors)
POLL_INTERVAL_S = 0.05
#: its shortest: how soon after an evaluation point (or the end) its snapshot is taken
POLL_MIN_S = 0.005


def _next_poll(done: int, elapsed: float, targets: list[int], longest: float) -> float:
    """How long the coordinator sleeps: ``longest``, or, at the current rate, until the nearest of
    ``targets`` (the next evaluation point, the last update), never below :data:`POLL_MIN_S`.

    Each wake-up takes a core from a worker for a moment; on a machine with fewer cores than threads that
    reshuffles the scheduler's rotation (measured on the 2-core VM at m = 4: off-core gaps of 2.5 / 4.1 /
    8.1 ms at the 10th / 50th / 90th percentile with a 5 ms poll, 4.0 / 4.1 / 4.3 ms with 50 ms; two runs
    each), so the coordinator wakes rarely and only as often as the snapshots need."""
    ahead = [t - done for t in targets if t > done]
    if not ahead or done <= 0 or elapsed <= 0:
        return min(longest, POLL_MIN_S)
    eta = min(ahead) * elapsed / done
    return min(longest, max(POLL_MIN_S, eta))


def run(spec: ExperimentSpec, *, dataset: Any = None, progress: bool | None = None, check: bool = False,
        poll_interval_s: float = POLL_INTERVAL_S, prepared: Prepared | None = None,
        _unsafe_skip_reader_counts: bool = False,
        divergence_factor: float = DEFAULT_DIVERGENCE_FACTOR) -> RunResult:
    """Train ``spec`` on ``spec.threads`` worker threads and return the RunResult (papers.md §2).

    ``dataset`` overrides loading ``spec.dataset``; ``progress`` shows a tqdm bar on stderr (None: only
    on a terminal); ``check`` is the store's checking mode (leashed: poison recycled vectors, verify
    pins; slower). A divergence (non-finite loss) stops all threads promptly and is reported in
    ``totals["diverged_at"]``; Ctrl-C stops them and returns the partial result with
    ``totals["interrupted"] = True``. Neither raises: callers decide (``leashed train`` exits 2 on
    divergence, after saving). ``prepared`` reuses :func:`prepare`'s output (data, model, schedule);
    ``_unsafe_skip_reader_counts`` breaks the store's pin protocol on purpose (tests of checking mode).
    """
    from threadpoolctl import threadpool_limits

    check_runtime_spec(spec)
    if prepared is not None:
        prep = prepared
    else:
        from leashed.runtime.evaluation import loading

        with loading(dataset_name(spec), progress, "loading" if dataset is None else "preparing"):
            prep = prepare(spec, dataset)
    if interrupts.requested():  # a signal while loading (leashed/interrupts.py): nothing measured yet
        raise KeyboardInterrupt
    sparse_kind, sparse_k = sparse_config(spec, int(prep.theta0.shape[0]))  # before any thread starts
    m = spec.threads
    total = prep.total
    records = _new_records(total)
    entry = algorithms.algorithm(spec.algorithm)
    store = ParameterStore(prep.theta0, pool_size(m), check=check, _sabotage=_unsafe_skip_reader_counts) \
        if entry.uses_pool else None
    table = None if spec.step_table is None else np.ascontiguousarray(spec.step_table, dtype=np.float64)
    state = _workers.Run(
        algorithm=entry.code, policy=STEP_POLICY_CODES[spec.step_policy], threads=m,
        persistence=-1 if spec.persistence == INF else int(spec.persistence), total=total,
        batch_size=spec.batch_size, n_rows=int(prep.bound.n_rows), lr=float(spec.lr),
        fleet_beta=fleet_beta(m), tail_a=TAIL_A, step_table=table, schedule=prep.schedule,
        thread_seeds=thread_seeds(spec), bound=prep.bound, theta0=prep.theta0, store=store, records=records,
        check=check, sparse_kind=SPARSE_CODES[sparse_kind], sparse_k=sparse_k, error_memory=spec.error_memory,
        loss_limit=_loss_limit(spec, prep, divergence_factor),
    )
    n_eval = max(int(spec.evaluations), 0)
    thresholds = [math.ceil(i * total / n_eval) for i in range(1, n_eval)] if n_eval else []
    snapshots: list[tuple[float, int, int, np.ndarray]] = []  # (time, version, live, params)
    if n_eval:
        snapshots.append((0.0, 0, 1, prep.theta0.copy()))
    live_t: list[float] = []
    live_v: list[int] = []
    live_n: list[int] = []
    interrupted = False
    workers = [_Worker(state, tid) for tid in range(m)]
    bar = _progress_bar(total, progress)
    with threadpool_limits(limits=1, user_api="blas"):
        metadata = machine_metadata(spec.seed, blas_threads=1)
        from leashed.machine import RunProbe
        probe = RunProbe()  # the machine around the run (docs/machine.md): cores, load, /proc/stat
        try:
            for w in workers:
                w.start()
            if not state.wait_arrived(60.0):
                state.request_stop()
                raise RuntimeError("worker threads did not reach the start barrier within 60 s")
            state.start()
            next_live = 0.0
            sample_every = min(poll_interval_s, POLL_MIN_S * 4)
            wait = min(poll_interval_s, POLL_MIN_S)
            while state.finished < m and any(w.is_alive() for w in workers):
                time.sleep(wait)
                if interrupts.requested():  # SIGINT/SIGTERM noted by leashed/interrupts.py: stop, keep
                    state.request_stop()
                now = state.elapsed_s()
                if now >= next_live:
                    live_t.append(now)
                    live_v.append(state.version)
                    live_n.append(state.live_vectors)
                    next_live = now + sample_every
                    if len(live_t) >= 8192:  # keep long runs' files small: halve the density
                        live_t, live_v, live_n = live_t[::2], live_v[::2], live_n[::2]
                        sample_every *= 2
                done = state.progress
                if thresholds and done >= thresholds[0]:
                    while thresholds and done >= thresholds[0]:
                        thresholds.pop(0)
                    buf = np.empty(state.n_params, dtype=np.float32)
                    got = state.snapshot(buf)
                    if got is not None:
                        snapshots.append((got[1], got[0], state.live_vectors, buf))
                if bar is not None:
                    bar.update(done - bar.n)
                wait = _next_poll(done, now, [*thresholds[:1], total], poll_interval_s)
        except KeyboardInterrupt:
            interrupted = True
            state.request_stop()
        except BaseException:
            state.request_stop()  # releases threads still waiting at the start barrier, then re-raise
            raise
        finally:
            for w in workers:
                while w.is_alive():
                    try:
                        w.join(timeout=0.1)
                    except KeyboardInterrupt:
                        interrupted = True
                        state.request_stop()
            if bar is not None:
                bar.update(state.progress - bar.n)
                bar.close()
    metadata["machine"] = probe.finish()
    wall = state.wall_time_s() if state.finished >= m else state.elapsed_s()
    errors = [w.error for w in workers if w.error is not None]
    if errors:
        raise errors[0]
    if hasattr(prep.bound, "check_failure"):  # a user model's failure, noted in the loop: one ModelError
        prep.bound.check_failure(prep.theta0, state.diverged_at >= 0)
    if state.stop_reason == "pool exhausted":
        raise RuntimeError("internal error: the leashed parameter pool had no free slot for 10 s "
                           "(the 2m+2 bound was violated); please report this")
    if state.stop_reason == "requested":
        interrupted = True
    params = state.final_params()
    result = _assemble(spec, prep, state, store, records, params, snapshots, (live_t, live_v, live_n),
                       wall, interrupted, metadata, check, progress=progress)
    result.extra["divergence"] = {"factor": divergence_factor,
                                  "loss_limit": _loss_limit(spec, prep, divergence_factor)}
    return result


def _loss_limit(spec: ExperimentSpec, prep: Prepared, factor: float) -> float:
    """The divergence threshold of note_loss (leashed/limits.py loss_limit, docs/errors.md)."""
    from leashed.limits import loss_limit

    classes = 0 if spec.model in ("counter", "quadratic") else int(getattr(prep.dataset, "n_classes", 0) or 0)
    initial = None
    if spec.model == "quadratic":
        X, y = prep.dataset.X_train[:1000], prep.dataset.y_train[:1000]
        initial = float(prep.model.evaluate(prep.theta0, X, y)[0])
    return loss_limit(spec.model, classes, initial, float(factor))


def _assemble(spec: ExperimentSpec, prep: Prepared, state: Any, store: Any, records: dict, params: np.ndarray,
              snapshots: list, live: tuple, wall: float, interrupted: bool, metadata: dict,
              check: bool, progress: bool | None = None) -> RunResult:
    updates = _update_log(records)
    per_thread = state.thread_totals()
    from leashed.machine import thread_machine  # per-thread CPU/wall/switches: metadata, not per_thread
    metadata.setdefault("machine", {}).update(thread_machine(per_thread))
    version = state.version
    diverged_at = state.diverged_at
    if diverged_at < 0 and len(params) and not np.all(np.isfinite(params)):
        diverged_at = version
    if spec.evaluations:
        if snapshots and snapshots[-1][1] == version:
            snapshots.pop()  # taken at the very end: evaluate the final parameters at the final time
        snapshots.append((wall, version, state.live_vectors, params.copy()))
    # Evaluate the snapshots now that no worker runs: in parallel on every core (runtime/evaluation.py).
    from leashed.runtime.evaluation import evaluate_snapshots

    evaluated = evaluate_snapshots(prep.model, [snap[3] for snap in snapshots], prep.dataset, spec.seed,
                                   progress=progress, stop=interrupts.requested)
    # live-vector samples end with the run, so the final evaluation is the last sample
    keep = [i for i, t in enumerate(live[0]) if t <= wall]
    s_time = [live[0][i] for i in keep]
    s_version = [live[1][i] for i in keep]
    s_live = [live[2][i] for i in keep]
    s_loss = [math.nan] * len(s_time)
    s_acc = [math.nan] * len(s_time)
    skipped = evaluated.skipped  # stop asked for after training: kept, unevaluated snapshots are NaN
    for (when, ver, nlive, _), loss, acc in zip(snapshots, evaluated.loss, evaluated.accuracy, strict=True):
        s_time.append(when)
        s_version.append(ver)
        s_live.append(nlive)
        s_loss.append(float(loss))
        s_acc.append(float(acc))
    order = np.argsort(np.asarray(s_time, dtype=np.float64), kind="stable")
    samples = Samples(
        time=np.asarray(s_time, dtype=np.float64)[order],
        version=np.asarray(s_version, dtype=np.int64)[order],
        live_vectors=np.asarray(s_live, dtype=np.int32)[order],
        loss=np.asarray(s_loss, dtype=np.float64)[order],
        accuracy=np.asarray(s_acc, dtype=np.float64)[order],
    )
    sparse = state.sparse_totals()
    lost, lost_extra = lost_updates(spec, params, version, prep.theta0, sparse)
    totals = {
        "updates_applied": int(per_thread["applied"].sum()),
        "updates_dropped": int(per_thread["dropped"].sum()),
        "cas_failures": int(per_thread["cas_failures"].sum()),
        "wall_time_s": float(wall),
        "diverged_at": int(diverged_at),
        "interrupted": bool(interrupted or interrupts.requested()),
        "lost_updates": lost,
    }
    extra: dict[str, Any] = {
        "engine": "leashed.runtime",
        "evaluations_skipped": skipped,  # snapshots left unevaluated (NaN samples) after a stop request
        "dataset_used": prep.dataset_name,
        "n_params": int(len(params)),
        "total_gradients": int(prep.total),
        "gradients_computed": int(per_thread["computed"].sum()),
        "batches_per_epoch": int(prep.bound.n_rows) // spec.batch_size,
        "final_version": int(version),
        "per_thread": {k: v.tolist() for k, v in per_thread.items()},
        **evaluated.rows,  # eval_train_rows, eval_test_rows, eval_curve_*_rows (runtime/evaluation.py)
        "check_mode": bool(check),
        **lost_extra,
    }
    if sparse is not None:  # papers.md §5
        kind, k = sparse_config(spec, int(len(params)))
        extra["sparse"] = {"kind": kind, "k": k, "error_memory": bool(spec.error_memory),
                           "applied_sum": sparse["applied_sum"].tolist(),
                           "memory_sum": sparse["memory_sum"].tolist()}
    if algorithms.algorithm(spec.algorithm).versions_are_rounds:
        extra["rounds"] = int(version)
    if spec.step_policy == "fleet":
        extra["fleet_beta"] = fleet_beta(spec.threads)
    if spec.step_policy == "tail":
        extra["tail"] = {"A": TAIL_A, "window": [10 * spec.threads, 15 * spec.threads],
                         "ready": bool(state.tail_ready)}
    if store is not None:
        extra["pool_slots"] = int(store.n_slots)
        extra["live_vectors_max"] = int(store.live_max)
        extra["pool_violations"] = int(store.violations)
        extra["pool_exhausted"] = int(store.exhausted)
        extra["pool_problems"] = store.check_quiescent()
    return RunResult(spec=spec, source="runtime", updates=updates, samples=samples, params=params,
                     totals=totals, metadata=metadata, extra=extra)

