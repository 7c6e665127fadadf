# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The runtime's shared state and its Python interface: the :class:`Run` class (configuration, shared
vector or store, per-thread buffers, records), the algorithm and step-policy codes, and small test hooks.

The nogil worker loops (papers.md §2, §2.1, docs/seqlock.md) are in runtime/_loops.pyx, their shared
phases and the state they work on (ctx_t, thread_t) in runtime/_phases.pxd. Workers are Python threads
that call :meth:`Run.work` once; it releases the GIL and enters ``worker_main`` (start barrier, then the
algorithm's loop). Faults (divergence, a pool violation) are flagged in C and raised by the Python side
after the threads have joined. Unknown algorithm or policy codes are refused in ``Run.__cinit__``, before
any thread runs.
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport INT64_MAX, int32_t, int64_t, intptr_t, uint8_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from leashed.runtime._atomics cimport (lsh_aligned_calloc, lsh_axpy_f32_racy, lsh_barrier_init,
                                       lsh_cas_acq_rel, lsh_copy_f32_racy, lsh_load_acquire,
                                       lsh_load_relaxed, lsh_now_ns, lsh_store_release,
                                       pthread_mutex_destroy, pthread_mutex_init, pthread_mutex_lock,
                                       pthread_mutex_unlock)
from leashed.runtime._loops cimport worker_main
from leashed.runtime._phases cimport (ALG_HOGWILD, ALG_LEASHED, ALG_LOCK, ALG_SEQ, ALG_SEQLOCK, ALG_SYNC,
                                      POL_CONSTANT, POL_FLEET, POL_INVERSE, POL_NORMALISED, POL_TAIL,
                                      STOP_DIVERGED, STOP_NONE, STOP_POOL_EMPTY, STOP_REQUESTED, ctx_t,
                                      nanosleep, now_rel, seqlock_read, step_factor, tail_observe, thread_t,
                                      timespec)
from leashed.runtime._sparse cimport SPARSE_NONE, SPARSE_RANDK, SPARSE_TOPK, sparse_perm_init
from leashed.models._kernels cimport leashed_model_t
from leashed.runtime._store cimport lsh_store_t, store_pin, store_theta, store_unpin, word_slot, word_version

cnp.import_array()


ALGORITHM_CODES = {"seq": ALG_SEQ, "sync": ALG_SYNC, "lock": ALG_LOCK, "hogwild": ALG_HOGWILD,
                   "leashed": ALG_LEASHED, "seqlock": ALG_SEQLOCK}
POLICY_CODES = {"constant": POL_CONSTANT, "inverse": POL_INVERSE, "fleet": POL_FLEET, "tail": POL_TAIL,
                "normalised": POL_NORMALISED}
# The code worker_main dispatches to each loop (named by the algorithm registry, leashed/algorithms.py,
# as ``runtime_loop``; check_registry() holds each against the registry's code).
LOOP_SEQ = ALG_SEQ
LOOP_SYNC = ALG_SYNC
LOOP_LOCK = ALG_LOCK
LOOP_HOGWILD = ALG_HOGWILD
LOOP_LEASHED = ALG_LEASHED
LOOP_SEQLOCK = ALG_SEQLOCK
_KNOWN_ALGORITHMS = frozenset(ALGORITHM_CODES.values())
_KNOWN_POLICIES = frozenset(POLICY_CODES.values())


# ============================================================================== Python interface
cdef class Run:
    """The shared state of one run: configuration, shared vector or store, per-thread buffers, records.

    Built by :func:`leashed.runtime.run.run`; see there for the meaning of the arguments. ``records`` is
    a dict of preallocated numpy arrays of length ``total`` (thread, version_read, version_commit,
    staleness, attempts, dropped, t_start, t_grad, t_commit, t_attempt as int64 nanoseconds since the start).
    ``sparse_kind`` (``leashed.runtime._sparse.KIND_CODES``: 0 none, 1 top-k, 2 rand-k), ``sparse_k`` and
    ``error_memory`` choose the sparsifier of papers.md §5; its per-thread scratch is allocated here.
    """

    cdef ctx_t *c
    cdef object _keep            # numpy arrays and the store whose memory the C side points into
    cdef bint _mutex_ready
    cdef readonly int64_t n_threads
    cdef readonly int64_t n_params

    def __cinit__(self, *, int algorithm, int policy, int64_t threads, int64_t persistence, int64_t total,
                  int64_t batch_size, int64_t n_rows, double lr, double fleet_beta, double tail_a,
                  step_table, schedule, thread_seeds, object bound, theta0, object store,
                  dict records, bint check=False, int sparse_kind=SPARSE_NONE, int64_t sparse_k=0,
                  bint error_memory=False, double loss_limit=1e308):
        cdef int64_t i, wf, d
        cdef thread_t *t
        cdef ctx_t *c
        cdef const double[::1] table
        cdef float[::1] th0 = np.ascontiguousarray(theta0, dtype=np.float32)
        cdef int32_t[::1] r_thread = records["thread"]
        cdef int64_t[::1] r_vread = records["version_read"]
        cdef int64_t[::1] r_vcommit = records["version_commit"]
        cdef int64_t[::1] r_tau = records["staleness"]
        cdef int32_t[::1] r_att = records["attempts"]
        cdef uint8_t[::1] r_drop = records["dropped"]
        cdef int64_t[::1] r_ts = records["t_start"]
        cdef int64_t[::1] r_tg = records["t_grad"]
        cdef int64_t[::1] r_tc = records["t_commit"]
        cdef int64_t[::1] r_ta = records["t_attempt"]
        cdef int64_t[::1] tail = np.zeros(max(5 * threads, 1), dtype=np.int64)
        cdef const uint64_t[::1] seeds = np.ascontiguousarray(thread_seeds, dtype=np.uint64)
        cdef const int32_t[::1] sched
        if sizeof(thread_t) != 192:
            raise AssertionError("thread_t must be three cache lines")
        # Refused here, before any thread runs: an unknown code would fall through worker_main's dispatch
        # (into the leashed loop without a store) and normalised steps would read a NULL table.
        if algorithm not in _KNOWN_ALGORITHMS:
            raise ValueError(f"unknown algorithm code {algorithm}; known: {sorted(_KNOWN_ALGORITHMS)}")
        if policy not in _KNOWN_POLICIES:
            raise ValueError(f"unknown step policy code {policy}; known: {sorted(_KNOWN_POLICIES)}")
        if policy == POL_NORMALISED and (step_table is None or len(step_table) == 0):
            raise ValueError("step policy 'normalised' needs a non-empty step table")
        if algorithm == ALG_LEASHED and store is None:
            raise ValueError("algorithm 'leashed' needs a parameter store")
        if threads < 1 or total < threads or r_thread.shape[0] != total or seeds.shape[0] != threads:
            raise ValueError("inconsistent run configuration")
        if sparse_kind not in (SPARSE_NONE, SPARSE_TOPK, SPARSE_RANDK):
            raise ValueError(f"unknown sparsifier code {sparse_kind}")
        if sparse_kind != SPARSE_NONE and not 1 <= sparse_k <= th0.shape[0]:
            raise ValueError(f"sparsifier K={sparse_k} is outside [1, {th0.shape[0]}]")
        if sparse_kind == SPARSE_NONE and error_memory:
            raise ValueError("error memory needs a sparsifier")
        self.n_threads = threads
        self.n_params = th0.shape[0]
        self._keep = [records, tail, store, bound, step_table, schedule]
        self.c = <ctx_t *>lsh_aligned_calloc(sizeof(ctx_t))
        if self.c == NULL:
            raise MemoryError("cannot allocate the run context")
        c = self.c
        c.algorithm = algorithm
        c.policy = policy
        c.check = 1 if check else 0
        c.n_threads = threads
        c.persistence = persistence
        c.total = total
        c.batch_size = batch_size
        c.n_rows = n_rows
        c.nb = n_rows // batch_size
        c.n_params = th0.shape[0]
        c.sparse_kind = sparse_kind
        c.sparse_k = sparse_k if sparse_kind != SPARSE_NONE else 0
        c.lr = lr
        c.fleet_beta = fleet_beta
        c.tail_a = tail_a
        c.tail_lo = 10 * threads
        c.tail_n = 5 * threads
        c.tail_samples = &tail[0]
        c.diverged_at.value = INT64_MAX
        c.loss_limit = loss_limit
        if step_table is not None:
            table = step_table
            c.step_table = &table[0]
            c.step_table_len = table.shape[0]
        c.model = <const leashed_model_t *><intptr_t>bound.abi_address
        if c.model.n_params != c.n_params or c.model.batch_size < batch_size or c.model.n_rows != n_rows:
            raise ValueError("the bound model does not match the run configuration")
        if c.nb < 1:
            raise ValueError("the batch size is larger than the training set")
        if schedule is not None:
            sched = schedule
            if sched.shape[0] < ((total + c.nb - 1) // c.nb) * n_rows:
                raise ValueError("the batch schedule is shorter than the run")
            c.schedule = &sched[0]
        c.rec_thread = &r_thread[0]
        c.rec_vread = &r_vread[0]
        c.rec_vcommit = &r_vcommit[0]
        c.rec_tau = &r_tau[0]
        c.rec_attempts = &r_att[0]
        c.rec_dropped = &r_drop[0]
        c.rec_t_start = &r_ts[0]
        c.rec_t_grad = &r_tg[0]
        c.rec_t_commit = &r_tc[0]
        c.rec_t_attempt = &r_ta[0]
        lsh_barrier_init(&c.barrier, threads)
        if pthread_mutex_init(&c.mutex, NULL) != 0:
            raise OSError("pthread_mutex_init failed")
        self._mutex_ready = True
        if algorithm == ALG_LEASHED:
            c.store = <lsh_store_t *><intptr_t>store.address
        else:
            c.theta = <float *>lsh_aligned_calloc(c.n_params * sizeof(float))
            if c.theta == NULL:
                raise MemoryError("cannot allocate the parameter vector")
            if c.n_params:
                memcpy(c.theta, &th0[0], c.n_params * sizeof(float))
        c.threads = <thread_t *>lsh_aligned_calloc(threads * sizeof(thread_t))
        if c.threads == NULL:
            raise MemoryError("cannot allocate the thread contexts")
        wf = max(c.model.work_floats, 1)
        for i in range(threads):
            c.threads[i].grad = <float *>lsh_aligned_calloc(max(c.n_params, 1) * sizeof(float))
            c.threads[i].work = <float *>lsh_aligned_calloc(wf * sizeof(float))
            c.threads[i].rows = <int64_t *>lsh_aligned_calloc(batch_size * sizeof(int64_t))
            c.threads[i].rng = seeds[i]
            if algorithm == ALG_LOCK or algorithm == ALG_HOGWILD or algorithm == ALG_SEQLOCK:
                c.threads[i].local = <float *>lsh_aligned_calloc(max(c.n_params, 1) * sizeof(float))
                if c.threads[i].local == NULL:
                    raise MemoryError("cannot allocate the private parameter copies")
            if c.threads[i].grad == NULL or c.threads[i].work == NULL or c.threads[i].rows == NULL:
                raise MemoryError("cannot allocate the per-thread buffers")
        d = c.n_params
        for i in range(threads if sparse_kind != SPARSE_NONE else 0):
            # sparsification scratch (papers.md §5), allocated once: the loops allocate nothing
            t = &c.threads[i]
            t.idx = <int64_t *>lsh_aligned_calloc(sparse_k * sizeof(int64_t))
            t.val = <float *>lsh_aligned_calloc(sparse_k * sizeof(float))
            if t.idx == NULL or t.val == NULL:
                raise MemoryError("cannot allocate the sparsifier buffers")
            if sparse_kind == SPARSE_TOPK:
                t.mag = <float *>lsh_aligned_calloc(d * sizeof(float))
                if t.mag == NULL:
                    raise MemoryError("cannot allocate the sparsifier buffers")
            else:
                t.perm = <int64_t *>lsh_aligned_calloc(d * sizeof(int64_t))
                if t.perm == NULL:
                    raise MemoryError("cannot allocate the sparsifier buffers")
                sparse_perm_init(t.perm, d)
            if error_memory:
                t.memory = <float *>lsh_aligned_calloc(d * sizeof(float))  # zeroed: e = 0
                if t.memory == NULL:
                    raise MemoryError("cannot allocate the error memories")

    def __dealloc__(self):
        cdef int64_t i
        if self.c == NULL:
            return
        if self.c.threads != NULL:
            for i in range(self.n_threads):
                free(self.c.threads[i].grad)
                free(self.c.threads[i].work)
                free(self.c.threads[i].rows)
                free(self.c.threads[i].local)
                free(self.c.threads[i].mag)
                free(self.c.threads[i].perm)
                free(self.c.threads[i].idx)
                free(self.c.threads[i].val)
                free(self.c.threads[i].memory)
            free(self.c.threads)
        free(self.c.theta)
        if self._mutex_ready:
            pthread_mutex_destroy(&self.c.mutex)
        free(self.c)
        self.c = NULL

    # ------------------------------------------------------------------ worker side
    def work(self, int64_t tid):
        """Run worker ``tid`` until the run ends (call from its own Python thread; releases the GIL)."""
        if not 0 <= tid < self.n_threads:
            raise ValueError(f"thread id {tid} out of range")
        with nogil:
            worker_main(self.c, tid)

    # ------------------------------------------------------------------ coordinator side
    def wait_arrived(self, double timeout_s):
        """Wait (without the GIL) until every worker waits at the start barrier; False on timeout."""
        cdef int64_t deadline = lsh_now_ns() + <int64_t>(timeout_s * 1e9)
        cdef timespec pause
        cdef bint ok = False
        pause.tv_sec = 0
        pause.tv_nsec = 100000
        with nogil:
            while True:
                if lsh_load_acquire(&self.c.arrived.value) >= self.c.n_threads:
                    ok = True
                    break
                if lsh_now_ns() > deadline:
                    break
                nanosleep(&pause, NULL)
        return ok

    def start(self):
        """Release the start barrier; returns the start time (CLOCK_MONOTONIC ns, the records' zero)."""
        self.c.t0_ns = lsh_now_ns()
        lsh_store_release(&self.c.go.value, 1)  # release: t0_ns, to the workers' acquire
        return self.c.t0_ns

    def request_stop(self):
        """Ask every worker to stop after its current update (Ctrl-C)."""
        cdef int64_t expected = STOP_NONE
        lsh_cas_acq_rel(&self.c.stop.value, &expected, STOP_REQUESTED)
        lsh_store_release(&self.c.go.value, 1)  # also lets workers still at the start barrier leave

    @property
    def stop_reason(self):
        return {STOP_NONE: "none", STOP_REQUESTED: "requested", STOP_DIVERGED: "diverged",
                STOP_POOL_EMPTY: "pool exhausted"}.get(lsh_load_acquire(&self.c.stop.value), "unknown")

    @property
    def progress(self):
        """Tickets handed out (gradients started), at most ``total``."""
        return int(min(lsh_load_relaxed(&self.c.ticket.value), self.c.total))

    @property
    def finished(self):
        return int(lsh_load_acquire(&self.c.finished.value))

    @property
    def version(self):
        """Version of the latest parameters (updates applied; rounds for sync)."""
        if self.c.algorithm == ALG_LEASHED:
            return int(word_version(lsh_load_acquire(&self.c.store.published.value)))
        if self.c.algorithm == ALG_SEQLOCK:
            return int(lsh_load_relaxed(&self.c.seq.value) >> 1)
        return int(lsh_load_relaxed(&self.c.version.value))

    @property
    def live_vectors(self):
        """Parameter vectors in memory now (leashed: pool slots in use; lock, hogwild: the shared vector
        and one private copy per thread, as seqlock's snapshots; seq, sync: the shared vector)."""
        if self.c.algorithm == ALG_LEASHED:
            return int(lsh_load_relaxed(&self.c.store.live.value))
        if self.c.algorithm == ALG_LOCK or self.c.algorithm == ALG_HOGWILD or self.c.algorithm == ALG_SEQLOCK:
            return int(self.c.n_threads + 1)
        return 1

    @property
    def diverged_at(self):
        cdef int64_t v = lsh_load_relaxed(&self.c.diverged_at.value)
        return -1 if v == INT64_MAX else int(v)

    @property
    def tail_ready(self):
        return bool(lsh_load_acquire(&self.c.tail_ready.value))

    def elapsed_s(self):
        return (lsh_now_ns() - self.c.t0_ns) / 1e9

    def snapshot(self, float[::1] out not None, double timeout_s=5.0):
        """Copy the current parameters into ``out`` without stopping the run for long: pin + copy
        (leashed), copy under the mutex (lock), a relaxed element-wise (racy) copy (hogwild), the
        seqlock reader's consistent copy (seqlock), or a copy
        by the worker at its next update boundary (seq, sync). Returns (version, seconds since the start)
        or None if the workers ended before serving the request."""
        if out.shape[0] != self.n_params:
            raise ValueError("snapshot buffer has the wrong size")
        cdef ctx_t *c = self.c
        cdef int64_t w, i, version = -1, when = 0, expected, tries = 0
        cdef int64_t deadline = lsh_now_ns() + <int64_t>(timeout_s * 1e9)
        cdef bint served = True
        cdef timespec pause
        cdef float *dst = &out[0] if self.n_params else NULL
        pause.tv_sec = 0
        pause.tv_nsec = 50000
        with nogil:
            if c.algorithm == ALG_LEASHED:
                w = store_pin(c.store)
                memcpy(dst, store_theta(c.store, word_slot(w)), c.n_params * sizeof(float))
                store_unpin(c.store, word_slot(w))
                version = word_version(w)
                when = now_rel(c)
            elif c.algorithm == ALG_LOCK:
                pthread_mutex_lock(&c.mutex)
                memcpy(dst, c.theta, c.n_params * sizeof(float))
                version = lsh_load_relaxed(&c.version.value)
                when = now_rel(c)
                pthread_mutex_unlock(&c.mutex)
            elif c.algorithm == ALG_HOGWILD:
                version = lsh_load_acquire(&c.version.value)
                lsh_copy_f32_racy(dst, c.theta, c.n_params)
                when = now_rel(c)
            elif c.algorithm == ALG_SEQLOCK:
                version = seqlock_read(c, dst, &tries) >> 1
                when = now_rel(c)
            else:
                c.snap_dst = dst
                lsh_store_release(&c.snap_request.value, 1)  # release: snap_dst, to the worker's acquire
                while lsh_load_acquire(&c.snap_request.value) != 0:
                    if lsh_load_acquire(&c.finished.value) >= c.n_threads or lsh_now_ns() > deadline:
                        expected = 1  # withdraw the request unless a worker is serving it right now
                        if lsh_cas_acq_rel(&c.snap_request.value, &expected, 0):
                            served = False
                            break
                    nanosleep(&pause, NULL)
                if served:
                    version = c.snap_version
                    when = c.snap_time
        if not served:
            return None
        return int(version), when / 1e9

    def final_params(self):
        """The parameters after the threads have joined (leashed: the latest published vector)."""
        out = np.empty(self.n_params, dtype=np.float32)
        cdef float[::1] view = out
        cdef int64_t w
        if self.n_params == 0:
            return out
        if self.c.algorithm == ALG_LEASHED:
            w = store_pin(self.c.store)
            memcpy(&view[0], store_theta(self.c.store, word_slot(w)), self.n_params * sizeof(float))
            store_unpin(self.c.store, word_slot(w))
        else:
            memcpy(&view[0], self.c.theta, self.n_params * sizeof(float))
        return out

    def wall_time_s(self):
        """Seconds from the start to the last worker leaving its loop (after the threads have joined)."""
        cdef int64_t i, last = 0
        for i in range(self.n_threads):
            last = max(last, self.c.threads[i].t_exit)
        return last / 1e9

    def thread_totals(self):
        """Per-thread counters: dict of int64 arrays computed, applied, dropped, cas_failures, and the
        machine's (over each worker's loop): cpu_ns (CLOCK_THREAD_CPUTIME_ID), loop_wall_ns,
        involuntary_switches and voluntary_switches (getrusage RUSAGE_THREAD)."""
        out = {name: np.zeros(self.n_threads, dtype=np.int64)
               for name in ("computed", "applied", "dropped", "cas_failures", "cpu_ns", "loop_wall_ns",
                            "involuntary_switches", "voluntary_switches")}
        cdef int64_t i
        for i in range(self.n_threads):
            out["computed"][i] = self.c.threads[i].computed
            out["applied"][i] = self.c.threads[i].applied
            out["dropped"][i] = self.c.threads[i].dropped
            out["cas_failures"][i] = self.c.threads[i].cas_failures
            out["cpu_ns"][i] = self.c.threads[i].cpu_ns
            out["loop_wall_ns"][i] = self.c.threads[i].loop_wall_ns
            out["involuntary_switches"][i] = self.c.threads[i].nivcsw
            out["voluntary_switches"][i] = self.c.threads[i].nvcsw
        return out

    def sparse_totals(self):
        """Sparse runs (papers.md §5), after the threads have joined: dict of float64 arrays per thread,
        ``applied_sum`` (sum over the thread's applied updates of step * sum_j val_j; the counter model
        at lr 1 gains exactly minus this mass) and ``memory_sum`` (sum of the final error memory e, zeros
        without memory); None for dense runs."""
        cdef int64_t i, j
        cdef double acc
        if self.c.sparse_kind == SPARSE_NONE:
            return None
        out = {"applied_sum": np.zeros(self.n_threads, dtype=np.float64),
               "memory_sum": np.zeros(self.n_threads, dtype=np.float64)}
        for i in range(self.n_threads):
            out["applied_sum"][i] = self.c.threads[i].applied_sum
            acc = 0.0
            if self.c.threads[i].memory != NULL:
                for j in range(self.n_params):
                    acc += self.c.threads[i].memory[j]
            out["memory_sum"][i] = acc
        return out

    def thread_memory(self, int64_t tid):
        """A copy of thread ``tid``'s error memory e (float32[d]; after the join), or None without memory."""
        if not 0 <= tid < self.n_threads:
            raise ValueError(f"thread id {tid} out of range")
        if self.c.threads[tid].memory == NULL:
            return None
        out = np.empty(self.n_params, dtype=np.float32)
        cdef float[::1] view = out
        if self.n_params:
            memcpy(&view[0], self.c.threads[tid].memory, self.n_params * sizeof(float))
        return out


def step_factors(int policy, taus, int64_t threads, double fleet_beta, double tail_a=1.0, tail_samples=None,
                 step_table=None):
    """s(tau) for each tau in ``taus`` as the worker loops compute it (for tests against the Python
    mirror in reference.py). ``tail_samples``: the 5m sampled staleness values (None: not yet sampled)."""
    cdef ctx_t c
    cdef int64_t[::1] samples
    cdef const double[::1] table
    cdef const int64_t[::1] tv = np.ascontiguousarray(taus, dtype=np.int64)
    out = np.empty(tv.shape[0], dtype=np.float64)
    cdef double[::1] ov = out
    cdef int64_t i
    memset(&c, 0, sizeof(ctx_t))
    c.policy = policy
    c.n_threads = threads
    c.fleet_beta = fleet_beta
    c.tail_a = tail_a
    c.tail_lo = 10 * threads
    c.tail_n = 5 * threads
    if policy == POL_TAIL and tail_samples is not None:
        samples = np.array(tail_samples, dtype=np.int64)
        if samples.shape[0] != c.tail_n:
            raise ValueError(f"tail needs {c.tail_n} samples")
        c.tail_samples = &samples[0]
        for i in range(c.tail_n):  # feed them through the same path the workers use
            tail_observe(&c, c.tail_lo + i, samples[i])
    if policy == POL_NORMALISED:
        table = np.ascontiguousarray(step_table, dtype=np.float64)
        c.step_table = &table[0]
        c.step_table_len = table.shape[0]
    for i in range(tv.shape[0]):
        ov[i] = step_factor(&c, tv[i])
    return out


def racy_copy(float[::1] dst, const float[::1] src):
    """dst[:] = src through HOGWILD!'s whole-vector racy copy (lsh_copy_f32_racy; for tests of its
    unaligned head, vector body and tail against numpy)."""
    if dst.shape[0] != src.shape[0]:
        raise ValueError("dst and src differ in length")
    if dst.shape[0]:
        lsh_copy_f32_racy(&dst[0], &src[0], dst.shape[0])


def racy_axpy(float[::1] theta, float a, const float[::1] g):
    """theta -= a * g through HOGWILD!'s whole-vector racy update (lsh_axpy_f32_racy), in place."""
    if theta.shape[0] != g.shape[0]:
        raise ValueError("theta and g differ in length")
    if theta.shape[0]:
        lsh_axpy_f32_racy(&theta[0], a, &g[0], theta.shape[0])
