# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The worker loops of the runtime: one nogil loop per algorithm (papers.md §2), step policies (§3.1).

Style of scikit-learn's ``_sgd_fast``: every option is mapped to an int before the loops start, the whole
loop runs without the GIL, and faults (divergence, a pool violation) are flagged in C and raised by the
Python side after the threads have joined. Workers are Python threads that call :meth:`Run.work` once; it
releases the GIL, waits at a start barrier that spins on an atomic (so all threads really overlap), runs
the algorithm's loop until the shared ticket counter runs out or the stop flag is set, and returns.

Work distribution (all algorithms): a global atomic ticket counter hands out gradients; ticket ``k`` is
batch ``k % nb`` of epoch ``k // nb`` (``nb`` = batches per epoch) of the schedule shared with the
simulator (``leashed.sim.batches``: one numpy permutation per epoch), precomputed before the threads start
as an int32 table. So every algorithm computes the same ``total`` gradients whatever the thread count,
and a dropped gradient is counted, not replaced. Per-update records go to index ``k`` of shared preallocated arrays (each index written by
exactly one thread); the Python side sorts them into commit order.

Versions: ``version_commit`` of an update is the version of the vector it was applied to (t1 in papers.md
§2.1), so ``staleness = version_commit - version_read`` and the update produces version t1 + 1. For
``sync`` a version is a round (t1 = round, staleness 0).

Sparsification (papers.md §5, docs/sparsification.md): with a sparsifier every thread turns each gradient
into K (index, value) pairs ONCE, right after computing it (``sparse_select`` of leashed.runtime._sparse,
Φ(g) or, with error memory, Φ(e + g) and e ← e + g − Φ(e + g); unscaled, as the simulator), so the time
of the selection counts in the gradient's compute time (t_grad). The update then writes only those K
coordinates: seq and lock ``sparse_apply`` (lock: under the mutex), hogwild ``sparse_apply_relaxed``,
leashed copies the latest vector and applies the same pairs on every CAS attempt (a retry never selects
again, or the memory would absorb the gradient twice), sync scatters them into the thread's dense
gradient and sums the stripes as before. The scratch (``mag``/``perm``, ``idx``, ``val``, ``memory``) is
allocated per thread before the threads start; rand-k draws from the thread's splitmix64 state ``rng``,
seeded as the simulator seeds its workers, so the draws of thread i match the simulator's worker i.
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport exp, isfinite
from libc.stdint cimport INT64_MAX, int32_t, int64_t, intptr_t, uint8_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from leashed.runtime._atomics cimport (lsh_aligned_calloc, lsh_backoff, lsh_barrier_init, lsh_barrier_t,
                                       lsh_barrier_wait, lsh_cas_acq_rel, lsh_fetch_add_acq_rel,
                                       lsh_axpy_f32_racy, lsh_copy_f32_racy, lsh_fetch_add_relaxed,
                                       lsh_load_acquire, lsh_load_relaxed, lsh_min_relaxed, lsh_now_ns,
                                       lsh_padded_i64, lsh_store_relaxed,
                                       lsh_store_release, pthread_mutex_destroy, pthread_mutex_init,
                                       pthread_mutex_lock, pthread_mutex_t, pthread_mutex_unlock)
from leashed.runtime._sparse cimport (SPARSE_NONE, SPARSE_RANDK, SPARSE_TOPK, sparse_apply,
                                      sparse_apply_relaxed, sparse_perm_init, sparse_scatter, sparse_select)
from leashed.models._kernels cimport leashed_model_t
from leashed.runtime._store cimport (lsh_store_t, make_word, store_acquire, store_discard, store_pin,
                                     store_pinned_gen, store_publish_pinned, store_theta, store_unpin,
                                     store_verify, word_slot, word_version)

cnp.import_array()


cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int nanosleep(const timespec *req, timespec *rem)


# Codes: the order of leashed.spec.ALGORITHMS and leashed.spec.STEP_POLICIES (checked by runtime/run.py).
cdef enum:
    ALG_SEQ = 0
    ALG_SYNC = 1
    ALG_LOCK = 2
    ALG_HOGWILD = 3
    ALG_LEASHED = 4
    ALG_SEQLOCK = 5

cdef enum:
    POL_CONSTANT = 0
    POL_INVERSE = 1
    POL_FLEET = 2
    POL_TAIL = 3
    POL_NORMALISED = 4

# Stop reasons (Run.stop_reason)
cdef enum:
    STOP_NONE = 0
    STOP_REQUESTED = 1
    STOP_DIVERGED = 2
    STOP_POOL_EMPTY = 3

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


cdef struct thread_t:
    # Written only by its own thread while the run is on; 192 bytes (three cache lines), 64-byte aligned.
    float *grad
    float *work
    float *local          # private copy of theta (lock, hogwild, seqlock)
    int64_t *rows         # the current batch's row indices (int64, as model_abi.h wants them)
    # sparsification scratch (papers.md §5), NULL when unused: mag float[d] (top-k), perm int64[d] (rand-k),
    # idx int64[k] and val float[k] (the selected pairs), memory float[d] (error memory e, zeroed)
    float *mag
    int64_t *perm
    int64_t *idx
    float *val
    float *memory
    int64_t t_exit        # when the thread left its loop (ns since the start)
    uint64_t rng          # splitmix64 state (per-thread randomness: rand-k sparsification)
    int64_t computed
    int64_t applied
    int64_t dropped
    int64_t cas_failures
    double applied_sum    # sparse runs: sum over the applied updates of step * sum_j val_j
    # the machine it ran on (issue 13 item 4, docs/machine.md), measured by worker_main around the loop:
    # CLOCK_THREAD_CPUTIME_ID and CLOCK_MONOTONIC spans (ns), getrusage(RUSAGE_THREAD) switch counts
    int64_t cpu_ns
    int64_t loop_wall_ns
    int64_t nivcsw
    int64_t nvcsw
    int64_t pad_machine[4]


cdef struct ctx_t:
    lsh_padded_i64 ticket        # next ticket to hand out (progress of the run)
    lsh_padded_i64 version       # seq, sync, lock, hogwild: version of the shared vector
    lsh_padded_i64 stop          # STOP_* reason; any non-zero value stops every thread
    lsh_padded_i64 diverged_at   # smallest version read by a gradient with a non-finite loss
    lsh_padded_i64 arrived       # threads waiting at the start barrier
    lsh_padded_i64 go            # set once by the coordinator: start
    lsh_padded_i64 opened        # threads whose first read->commit window is open (start gate)
    lsh_padded_i64 finished      # threads that have left their loop
    lsh_padded_i64 tail_count    # tail policy: staleness samples collected
    lsh_padded_i64 tail_ready    # tail policy: samples sorted, F(tau) usable
    lsh_padded_i64 snap_request  # seq, sync: 1 while the coordinator waits for a copy
    lsh_padded_i64 seq           # seqlock: sequence counter, 2 * version, odd while a writer applies
    lsh_padded_i64 seq_writer    # seqlock: the writers' spin lock (0 free, 1 held)
    lsh_barrier_t barrier        # sync rounds
    pthread_mutex_t mutex        # lock
    # sync round decisions, written by thread 0 between two barriers and read by all after the second
    double sync_factor
    int64_t sync_stop
    # configuration, fixed before the threads start
    int algorithm
    int policy
    int check
    int64_t n_threads
    int64_t persistence          # -1: never drop
    int64_t total
    int64_t batch_size
    int64_t n_rows
    int64_t nb
    int64_t n_params
    int sparse_kind              # SPARSE_NONE, SPARSE_TOPK, SPARSE_RANDK (leashed.runtime._sparse)
    int64_t sparse_k             # coordinates kept per gradient (1 <= k <= n_params when sparse)
    double lr
    double fleet_beta
    double tail_a
    double loss_limit            # divergence: a finite loss above it also stops the run (docs/errors.md)
    int64_t tail_lo              # tail: samples from updates producing versions in (tail_lo, tail_lo+tail_n]
    int64_t tail_n
    int64_t *tail_samples
    const double *step_table
    int64_t step_table_len
    const int32_t *schedule      # [epochs, n_rows] row order; NULL: the model ignores rows (counter)
    const leashed_model_t *model
    float *theta                 # the shared vector (seq, sync, lock, hogwild, seqlock)
    lsh_store_t *store           # leashed
    thread_t *threads
    int64_t t0_ns
    # records, indexed by ticket
    int32_t *rec_thread
    int64_t *rec_vread
    int64_t *rec_vcommit
    int64_t *rec_tau
    int32_t *rec_attempts
    uint8_t *rec_dropped
    int64_t *rec_t_start
    int64_t *rec_t_grad
    int64_t *rec_t_commit
    int64_t *rec_t_attempt       # start of the update's last attempt (leashed), else t_grad
    # snapshot hand-over (seq, sync)
    float *snap_dst
    int64_t snap_version
    int64_t snap_time


# ============================================================================== helpers
cdef inline const int64_t *batch_rows(ctx_t *c, thread_t *t, int64_t k) noexcept nogil:
    """Rows of ticket k: batch k % nb of epoch k // nb of the schedule, copied into the thread's int64
    buffer (batch_size values; the schedule is read-only while the threads run)."""
    cdef int64_t epoch = k // c.nb, i
    cdef const int32_t *src
    if c.schedule == NULL:
        return t.rows  # zeros: the model ignores its rows
    src = c.schedule + epoch * c.n_rows + (k - epoch * c.nb) * c.batch_size
    for i in range(c.batch_size):
        t.rows[i] = src[i]
    return t.rows


cdef inline int64_t now_rel(ctx_t *c) noexcept nogil:
    return lsh_now_ns() - c.t0_ns


cdef inline bint stopped(ctx_t *c) noexcept nogil:
    # relaxed: the flag carries no data; a late sighting only delays the stop by one update
    return lsh_load_relaxed(&c.stop.value) != STOP_NONE


cdef inline void note_loss(ctx_t *c, double loss, int64_t version_read) noexcept nogil:
    """Divergence: a non-finite loss, or one above loss_limit (the divergence factor times the initial
    loss, docs/errors.md), sets the stop flag; diverged_at keeps the smallest version read."""
    if not isfinite(loss) or loss > c.loss_limit:
        lsh_min_relaxed(&c.diverged_at.value, version_read)
        lsh_store_relaxed(&c.stop.value, STOP_DIVERGED)


cdef inline int64_t lower_bound(const int64_t *sorted_values, int64_t n, int64_t x) noexcept nogil:
    """Number of values < x in a sorted array."""
    cdef int64_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline double step_factor(ctx_t *c, int64_t tau) noexcept nogil:
    """s(tau) of the step policy (papers.md §3.1; ``normalised``: a table from leashed.analysis, §3.2)."""
    cdef int64_t idx
    if c.policy == POL_CONSTANT:
        return 1.0
    if c.policy == POL_INVERSE:
        return 1.0 / (<double>tau + 1.0)
    if c.policy == POL_FLEET:
        return exp(-c.fleet_beta * <double>tau)
    if c.policy == POL_TAIL:
        # acquire: pairs with the release in tail_observe, so the sorted samples are visible
        if lsh_load_acquire(&c.tail_ready.value) == 0:
            return 1.0
        return 1.0 + c.tail_a * (1.0 - 2.0 * <double>lower_bound(c.tail_samples, c.tail_n, tau)
                                 / <double>c.tail_n)
    idx = tau if tau < c.step_table_len else c.step_table_len - 1
    return c.step_table[idx]


cdef inline void tail_observe(ctx_t *c, int64_t t1, int64_t tau) noexcept nogil:
    """TAIL-tau sampling (papers.md §3.1): keep the staleness of the committed updates that produce the
    global versions (10m, 15m], i.e. t1 in [10m, 15m); when the last one arrives, sort them and switch the
    policy on. Versions are unique per committed update, so each sample index is written exactly once."""
    cdef int64_t i = t1 - c.tail_lo, n, a, b, v
    if c.policy != POL_TAIL or i < 0 or i >= c.tail_n:
        return
    c.tail_samples[i] = tau
    # acq_rel: a release for our sample; the thread that brings the count to tail_n acquires all samples
    # (the increments form a release sequence)
    if lsh_fetch_add_acq_rel(&c.tail_count.value, 1) + 1 != c.tail_n:
        return
    n = c.tail_n
    for a in range(1, n):  # insertion sort: 5m values, once per run
        v = c.tail_samples[a]
        b = a - 1
        while b >= 0 and c.tail_samples[b] > v:
            c.tail_samples[b + 1] = c.tail_samples[b]
            b -= 1
        c.tail_samples[b + 1] = v
    lsh_store_release(&c.tail_ready.value, 1)  # release: the sorted samples, to step_factor's acquire


cdef inline void record(ctx_t *c, int64_t k, int64_t tid, int64_t vread, int64_t vcommit, int64_t tau,
                        int64_t attempts, bint dropped, int64_t ts, int64_t tg, int64_t tc,
                        int64_t ta) noexcept nogil:
    c.rec_thread[k] = <int32_t>tid
    c.rec_vread[k] = vread
    c.rec_vcommit[k] = vcommit
    c.rec_tau[k] = tau
    c.rec_attempts[k] = <int32_t>attempts
    c.rec_dropped[k] = 1 if dropped else 0
    c.rec_t_start[k] = ts
    c.rec_t_grad[k] = tg
    c.rec_t_commit[k] = tc
    c.rec_t_attempt[k] = ta


cdef inline void start_gate(ctx_t *c) noexcept nogil:
    """Second half of the start barrier, passed once per thread right after its first read (pin, copy or
    version read): wait until every thread has its first read->commit window open. Without it, under
    oversubscription a thread may start milliseconds after the others have committed dozens of updates,
    and those commits fall in fewer than m - 1 windows (the staleness transient of papers.md §6.1 claim 3).
    acq_rel/acquire: a plain rendezvous; leaves early if the run is stopped (some thread may never come)."""
    cdef int64_t spins = 0
    lsh_fetch_add_acq_rel(&c.opened.value, 1)
    while lsh_load_acquire(&c.opened.value) < c.n_threads and not stopped(c):
        lsh_backoff(&spins)


cdef struct pending_t:
    # The previous update's record, written out only after the next read->commit window has opened: the
    # bookkeeping between a commit and the next read is time in which a thread's window is closed, which
    # lowers the staleness below m - 1 (papers.md §6.1 claim 3 assumes no such gap).
    int64_t k, vread, vcommit, tau, attempts, ts, tg, tc, ta
    bint dropped
    bint valid


cdef inline void hold(pending_t *p, int64_t k, int64_t vread, int64_t vcommit, int64_t tau, int64_t attempts,
                      bint dropped, int64_t ts, int64_t tg, int64_t tc, int64_t ta) noexcept nogil:
    p.k = k
    p.vread = vread
    p.vcommit = vcommit
    p.tau = tau
    p.attempts = attempts
    p.dropped = dropped
    p.ts = ts
    p.tg = tg
    p.tc = tc
    p.ta = ta
    p.valid = True


cdef inline void flush(ctx_t *c, int64_t tid, pending_t *p) noexcept nogil:
    if p.valid:
        record(c, p.k, tid, p.vread, p.vcommit, p.tau, p.attempts, p.dropped, p.ts, p.tg, p.tc, p.ta)
        p.valid = False


cdef inline void serve_snapshot(ctx_t *c, const float *theta, int64_t version) noexcept nogil:
    """seq, sync: copy theta for the coordinator at an update boundary, if it asked for one."""
    # acquire: see the destination pointer the coordinator wrote before raising the request
    if lsh_load_acquire(&c.snap_request.value) != 1:
        return
    memcpy(c.snap_dst, theta, c.n_params * sizeof(float))
    c.snap_version = version
    c.snap_time = now_rel(c)
    lsh_store_release(&c.snap_request.value, 0)  # release: the copy, to the coordinator's acquire


cdef inline void axpy_into(float *dst, const float *src, float a, const float *g, int64_t n) noexcept nogil:
    """dst = src - a * g (dst may equal src). Plain float32 arithmetic, the same as the reference."""
    cdef int64_t i
    for i in range(n):
        dst[i] = src[i] - a * g[i]


cdef enum:
    COPY_CHUNK = 4096  # floats (16 KB) between two looks at the published word during a leashed copy


cdef inline bint axpy_while_latest(float *dst, const float *src, float a, const float *g, int64_t n,
                                   const int64_t *published, int64_t word) noexcept nogil:
    """Leashed copy: dst = src - a * g, chunk by chunk, giving up as soon as the published word is no longer
    ``word`` (the vector the copy is built on has been replaced, so the attempt's CAS could only fail:
    versions are unique). Returns whether the copy is complete. Relaxed loads: only a hint, the CAS decides.
    """
    cdef int64_t start = 0, stop
    while start < n:
        stop = min(n, start + COPY_CHUNK)
        axpy_into(dst + start, src + start, a, g + start, stop - start)
        start = stop
        if start < n and lsh_load_relaxed(published) != word:
            return False
    return True


cdef inline bint copy_while_latest(float *dst, const float *src, int64_t n, const int64_t *published,
                                   int64_t word) noexcept nogil:
    """Leashed copy of a sparse attempt: dst = src chunk by chunk, giving up (False) as soon as the
    published word is no longer ``word``, as axpy_while_latest does for a dense one."""
    cdef int64_t start = 0, stop
    while start < n:
        stop = min(n, start + COPY_CHUNK)
        memcpy(dst + start, src + start, (stop - start) * sizeof(float))
        start = stop
        if start < n and lsh_load_relaxed(published) != word:
            return False
    return True


cdef inline int64_t sparsify(ctx_t *c, thread_t *t) noexcept nogil:
    """Φ(g) of papers.md §5 (Φ(e + g) with error memory, updating e) on the thread's gradient t.grad, into
    t.idx / t.val; returns K. Called exactly once per computed gradient, before any update attempt. Scale
    1 (unscaled rand-k), as the simulator. The arguments were validated when the run was built."""
    return sparse_select(c.sparse_kind, t.grad, c.n_params, c.sparse_k, t.memory, 1.0, &t.rng, t.mag,
                         t.perm, t.idx, t.val)


cdef inline double value_sum(const float *val, int64_t n) noexcept nogil:
    """Sum of the selected values (double), for the applied-mass statistic of sparse runs."""
    cdef double acc = 0.0
    cdef int64_t i
    for i in range(n):
        acc += val[i]
    return acc


# ============================================================================== the algorithms
cdef void loop_seq(ctx_t *c, int64_t tid) noexcept nogil:
    """SEQ (papers.md §2): one thread, gradients on the shared vector, updated in place; tau = 0. Sparse
    (papers.md §5): only the K selected coordinates are written (sparse_apply)."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t k, ts, tg, tc, nsel = 0
    cdef const int64_t *rows
    cdef double loss
    cdef float a
    while not stopped(c):
        k = lsh_fetch_add_relaxed(&c.ticket.value, 1)  # relaxed: a unique number, no data hand-over
        if k >= c.total:
            break
        rows = batch_rows(c, t, k)
        ts = now_rel(c)
        loss = c.model.loss_grad(c.model, c.theta, rows, c.batch_size, t.grad, t.work)
        t.computed += 1
        note_loss(c, loss, k)
        if c.sparse_kind != SPARSE_NONE:
            nsel = sparsify(c, t)
        tg = now_rel(c)
        a = <float>(c.lr * step_factor(c, 0))
        if c.sparse_kind != SPARSE_NONE:
            sparse_apply(c.theta, t.idx, t.val, nsel, a)
            t.applied_sum += a * value_sum(t.val, nsel)
        else:
            axpy_into(c.theta, c.theta, a, t.grad, c.n_params)
        tail_observe(c, k, 0)
        lsh_store_relaxed(&c.version.value, k + 1)  # relaxed: read only as a progress statistic
        tc = now_rel(c)
        t.applied += 1
        record(c, k, tid, k, k, 0, 1, False, ts, tg, tc, tg)
        serve_snapshot(c, c.theta, k + 1)


cdef void loop_lock(ctx_t *c, int64_t tid) noexcept nogil:
    """LOCK (papers.md §2): copy theta and read the version under one mutex, compute on the copy, apply
    under the mutex; tau = version at apply - version copied. The mutex orders all accesses to theta.
    Sparse (papers.md §5): the selection runs outside the mutex, the apply (sparse_apply) inside it."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t k, ts, tg, tc, t0, t1, nsel = 0
    cdef const int64_t *rows
    cdef double loss
    cdef float a
    cdef pending_t prev
    cdef bint first = True
    prev.valid = False
    while not stopped(c):
        ts = now_rel(c)
        pthread_mutex_lock(&c.mutex)
        memcpy(t.local, c.theta, c.n_params * sizeof(float))
        t0 = lsh_load_relaxed(&c.version.value)  # under the mutex; atomic only for the coordinator's reads
        pthread_mutex_unlock(&c.mutex)
        if first:
            start_gate(c)
            first = False
        flush(c, tid, &prev)
        k = lsh_fetch_add_relaxed(&c.ticket.value, 1)
        if k >= c.total:
            break
        rows = batch_rows(c, t, k)
        loss = c.model.loss_grad(c.model, t.local, rows, c.batch_size, t.grad, t.work)
        t.computed += 1
        note_loss(c, loss, t0)
        if c.sparse_kind != SPARSE_NONE:
            nsel = sparsify(c, t)
        tg = now_rel(c)
        pthread_mutex_lock(&c.mutex)
        t1 = lsh_load_relaxed(&c.version.value)
        a = <float>(c.lr * step_factor(c, t1 - t0))
        if c.sparse_kind != SPARSE_NONE:
            sparse_apply(c.theta, t.idx, t.val, nsel, a)
        else:
            axpy_into(c.theta, c.theta, a, t.grad, c.n_params)
        tail_observe(c, t1, t1 - t0)
        lsh_store_relaxed(&c.version.value, t1 + 1)
        tc = now_rel(c)
        pthread_mutex_unlock(&c.mutex)
        if c.sparse_kind != SPARSE_NONE:
            t.applied_sum += a * value_sum(t.val, nsel)
        t.applied += 1
        hold(&prev, k, t0, t1, t1 - t0, 1, False, ts, tg, tc, tg)
    flush(c, tid, &prev)


cdef void loop_hogwild(ctx_t *c, int64_t tid) noexcept nogil:
    """HOGWILD! (papers.md §2) with an exact ("ideal") version counter: racy element-wise copy of theta,
    gradient on the copy, tau from an atomic fetch_add, then racing element-wise updates. Every element is
    read and written whole (lsh_copy_f32_racy / lsh_axpy_f32_racy in _atomics.h: aligned SSE2 accesses on
    x86-64, relaxed atomics elsewhere): updates can be lost (two threads read the same old value), which
    is the algorithm, but no value is ever torn. Sparse (papers.md
    §5): only the K selected coordinates race (sparse_apply_relaxed), so fewer updates collide."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t k, ts, tg, tc, t0, t1, i, n = c.n_params, nsel = 0
    cdef const int64_t *rows
    cdef double loss
    cdef float a
    cdef float *theta = c.theta
    cdef float *local = t.local
    cdef float *g = t.grad
    cdef pending_t prev
    cdef bint first = True
    prev.valid = False
    while not stopped(c):
        ts = now_rel(c)
        # acquire: keeps the element loads below from moving above the version read, so the copy is at
        # least as new as t0 (the value of tau itself is exact with any order, by coherence of the counter)
        t0 = lsh_load_acquire(&c.version.value)
        lsh_copy_f32_racy(local, theta, n)
        if first:
            start_gate(c)
            first = False
        flush(c, tid, &prev)
        k = lsh_fetch_add_relaxed(&c.ticket.value, 1)
        if k >= c.total:
            break
        rows = batch_rows(c, t, k)
        loss = c.model.loss_grad(c.model, local, rows, c.batch_size, g, t.work)
        t.computed += 1
        note_loss(c, loss, t0)
        if c.sparse_kind != SPARSE_NONE:
            nsel = sparsify(c, t)
        tg = now_rel(c)
        # acq_rel: the counter hands out unique commit versions; acquire/release keep our element stores
        # after it and our gradient reads before it
        t1 = lsh_fetch_add_acq_rel(&c.version.value, 1)
        a = <float>(c.lr * step_factor(c, t1 - t0))
        if c.sparse_kind != SPARSE_NONE:
            sparse_apply_relaxed(theta, t.idx, t.val, nsel, a)
            t.applied_sum += a * value_sum(t.val, nsel)
        else:
            lsh_axpy_f32_racy(theta, a, g, n)
        tail_observe(c, t1, t1 - t0)
        tc = now_rel(c)
        t.applied += 1
        hold(&prev, k, t0, t1, t1 - t0, 1, False, ts, tg, tc, tg)
    flush(c, tid, &prev)


cdef void loop_sync(ctx_t *c, int64_t tid) noexcept nogil:
    """SYNC (papers.md §2): in round s thread i computes ticket s*m+i on the same theta; barrier; theta -=
    lr*s(0) * mean of the round's gradients, each thread applying its own stripe of coordinates; barrier.
    tau = 0; a version is a round. Thread 0 takes the round's shared decisions (step factor, stop) before
    a barrier and everyone reads them after it, so all threads leave on the same round. Sparse (papers.md
    §5): each thread scatters its K selected pairs into its (zeroed) dense gradient before the first
    barrier (sparse_scatter), so the stripes sum the sparsified gradients, as the simulator's mean does."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t m = c.n_threads, n = c.n_params, s = 0, base, cnt, k, i, j, lo, hi, nsel = 0
    cdef int64_t ts = 0, tg = 0, tc
    cdef const int64_t *rows
    cdef double loss
    cdef float coef, acc
    lo = n * tid // m
    hi = n * (tid + 1) // m
    while True:
        base = s * m
        cnt = min(m, c.total - base)
        k = base + tid
        if tid < cnt:
            rows = batch_rows(c, t, k)
            ts = now_rel(c)
            loss = c.model.loss_grad(c.model, c.theta, rows, c.batch_size, t.grad, t.work)
            t.computed += 1
            note_loss(c, loss, s)
            if c.sparse_kind != SPARSE_NONE:
                nsel = sparsify(c, t)
                sparse_scatter(t.grad, n, t.idx, t.val, nsel)
            tg = now_rel(c)
        if tid == 0:
            c.sync_factor = step_factor(c, 0)
        lsh_barrier_wait(&c.barrier)
        coef = <float>(c.lr * c.sync_factor / <double>cnt)
        for j in range(lo, hi):
            acc = c.threads[0].grad[j]
            for i in range(1, cnt):
                acc = acc + c.threads[i].grad[j]
            c.theta[j] = c.theta[j] - coef * acc
        if tid == 0:
            tail_observe(c, s, 0)
            c.sync_stop = 1 if (stopped(c) or base + cnt >= c.total) else 0
        lsh_barrier_wait(&c.barrier)
        if tid < cnt:
            tc = now_rel(c)
            t.applied += 1
            if c.sparse_kind != SPARSE_NONE:
                t.applied_sum += coef * value_sum(t.val, nsel)
            record(c, k, tid, s, s, 0, 1, False, ts, tg, tc, tg)
        if tid == 0:
            lsh_store_relaxed(&c.version.value, s + 1)
            lsh_store_relaxed(&c.ticket.value, base + cnt)
        if c.sync_stop:
            break
        if tid == 0:
            serve_snapshot(c, c.theta, s + 1)  # theta is only read until the next barrier
        s += 1


cdef void loop_leashed(ctx_t *c, int64_t tid) noexcept nogil:
    """Leashed-SGD (papers.md §2.1): gradient on the pinned latest vector without copying; then pin the
    latest, build latest - step * g in a free slot, CAS the published word; on failure return the slot and
    retry the same gradient, dropping it after `persistence` + 1 failed attempts (never if -1). An attempt
    whose base vector is replaced while it is being copied is abandoned at once (axpy_while_latest) and
    counts as a failed attempt: its CAS could only have failed.

    A committed thread keeps the vector it just published pinned (store_publish_pinned) and computes its
    next gradient on it: that PIN happens at the commit instant, so no commit of another thread falls
    between this thread's commit and its next read (see store_publish_pinned).

    Sparse (papers.md §5): the gradient is sparsified once, after it is computed; every attempt copies the
    latest vector in full (copy_while_latest, abandoned like a dense one) and applies the same K pairs
    (sparse_apply: together the effect of sparse_copy_apply). A dropped gradient takes its sparse part
    with it; what the error memory kept of it stays there."""
    cdef thread_t *t = &c.threads[tid]
    cdef lsh_store_t *st = c.store
    cdef int64_t k, ts, tg, tc, w0, wl, s0, sl, t0, t1, tries, nslot, gen0 = 0, genl = 0, next_word = 0
    cdef int64_t nsel = 0, tatt = 0
    cdef bint sparse = c.sparse_kind != SPARSE_NONE
    cdef int64_t hint = (2 * tid) % st.n_slots  # where the free-slot scan starts; then the last slot let go
    cdef const int64_t *rows
    cdef double loss
    cdef float a
    cdef float *dst
    cdef pending_t prev
    cdef bint first = True, have_next = False, complete
    prev.valid = False
    while not stopped(c):
        ts = now_rel(c)
        if have_next:
            w0 = next_word  # pinned when we published it
            have_next = False
        else:
            w0 = store_pin(st)
        s0 = word_slot(w0)
        t0 = word_version(w0)
        if c.check:
            gen0 = store_pinned_gen(st, s0)
        if first:
            start_gate(c)
            first = False
        flush(c, tid, &prev)
        k = lsh_fetch_add_relaxed(&c.ticket.value, 1)
        if k >= c.total:
            store_unpin(st, s0)
            break
        rows = batch_rows(c, t, k)
        loss = c.model.loss_grad(c.model, store_theta(st, s0), rows, c.batch_size, t.grad, t.work)
        if c.check:
            store_verify(st, s0, gen0, store_theta(st, s0), c.n_params)
        store_unpin(st, s0)
        t.computed += 1
        note_loss(c, loss, t0)
        if sparse:
            nsel = sparsify(c, t)  # once per gradient, never per attempt
        tg = now_rel(c)
        tatt = tg
        tries = 0
        while True:
            if tries > 0:
                tatt = now_rel(c)  # a retry starts: the last attempt's start is recorded (docs/simulator.md)
            wl = store_pin(st)
            sl = word_slot(wl)
            t1 = word_version(wl)
            if c.check:
                genl = store_pinned_gen(st, sl)
            nslot = store_acquire(st, hint)
            if nslot < 0:  # no free slot for 10 s: a bug; stop everyone, Python raises after the join
                lsh_store_relaxed(&c.stop.value, STOP_POOL_EMPTY)
                store_unpin(st, sl)
                break
            dst = store_theta(st, nslot)
            a = <float>(c.lr * step_factor(c, t1 - t0))
            if sparse:
                complete = copy_while_latest(dst, store_theta(st, sl), c.n_params, &st.published.value, wl)
                if complete:
                    sparse_apply(dst, t.idx, t.val, nsel, a)
            else:
                complete = axpy_while_latest(dst, store_theta(st, sl), a, t.grad, c.n_params,
                                             &st.published.value, wl)
            if c.check:
                store_verify(st, sl, genl, dst, c.n_params if complete else 0)
            store_unpin(st, sl)
            if complete and store_publish_pinned(st, wl, nslot, t1 + 1):
                next_word = make_word(nslot, t1 + 1)
                have_next = True
                hint = sl  # the vector we just replaced (and read): reclaimed by now unless pinned
                tail_observe(c, t1, t1 - t0)
                tc = now_rel(c)
                t.applied += 1
                if sparse:
                    t.applied_sum += a * value_sum(t.val, nsel)
                hold(&prev, k, t0, t1, t1 - t0, tries + 1, False, ts, tg, tc, tatt)
                break
            store_discard(st, nslot)
            hint = nslot  # cache-warm: take it again for the retry
            tries += 1
            t.cas_failures += 1
            if c.persistence >= 0 and tries > c.persistence:
                tc = now_rel(c)
                t.dropped += 1
                hold(&prev, k, t0, -1, -1, tries, True, ts, tg, tc, tatt)
                break
    if have_next:  # stopped right after a commit
        store_unpin(st, word_slot(next_word))
    flush(c, tid, &prev)


cdef extern from *:
    """
    static inline void seqlock_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void seqlock_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    """
    void seqlock_fence_acquire() nogil
    void seqlock_fence_release() nogil


cdef inline int64_t seqlock_read(ctx_t *c, float *dst, int64_t *tries) noexcept nogil:
    """Seqlock reader (docs/seqlock.md): copy theta into dst without a lock and return the even counter
    value s of a consistent copy (the copy is version s / 2); ``tries`` counts the copies made.

    Memory orders: (1) the acquire load of an even s synchronizes with the release store of s by the writer
    that produced version s / 2 (and, through the writers' spin lock, with every earlier writer), so the
    copy sees at least that version. (2) The copy's loads are relaxed atomics (lsh_copy_f32_racy: no torn
    float, no data race) and may read stores of a later writer W. W stored s + 1 and then ran a release
    fence before its first data store, so if any of our loads read one of W's data stores, W's fence
    synchronizes with our acquire fence below, W's odd store happens before our reload, and the reload
    returns at least s + 1: the copy is retried. So a reload equal to s means no load saw a later writer:
    the copy is exactly version s / 2. While the counter is odd a writer is inside: wait, do not copy."""
    cdef int64_t s0, spins = 0
    while True:
        s0 = lsh_load_acquire(&c.seq.value)
        if s0 & 1:
            lsh_backoff(&spins)
            continue
        tries[0] += 1
        lsh_copy_f32_racy(dst, c.theta, c.n_params)
        seqlock_fence_acquire()  # keeps the reload below from moving above the copy's loads
        if lsh_load_relaxed(&c.seq.value) == s0:
            return s0


cdef inline int64_t seqlock_write_begin(ctx_t *c) noexcept nogil:
    """Take the writers' spin lock and make the counter odd; returns the even value before (2 * t1).
    acq_rel CAS: acquire orders the previous writer's stores to theta and the counter before ours. The odd
    store can be relaxed (only the lock holder writes the counter), but the release fence after it orders
    it before our data stores, for the readers' acquire fence (seqlock_read)."""
    cdef int64_t expected, s, spins = 0
    while True:
        if lsh_load_relaxed(&c.seq_writer.value) == 0:
            expected = 0
            if lsh_cas_acq_rel(&c.seq_writer.value, &expected, 1):
                break
        lsh_backoff(&spins)
    s = lsh_load_relaxed(&c.seq.value)
    lsh_store_relaxed(&c.seq.value, s + 1)
    seqlock_fence_release()
    return s


cdef inline void seqlock_write_end(ctx_t *c, int64_t s) noexcept nogil:
    """Make the counter even again (s + 2) and release the spin lock. Release stores: a reader that
    acquires s + 2 sees every data store of the apply; the next writer acquires the lock after them."""
    lsh_store_release(&c.seq.value, s + 2)
    lsh_store_release(&c.seq_writer.value, 0)


cdef void loop_seqlock(ctx_t *c, int64_t tid) noexcept nogil:
    """Seqlock AsyncSGD (docs/seqlock.md): read a consistent private snapshot without a lock
    (seqlock_read: retried while a writer overlaps the copy), compute on it, then apply in place under the
    writers' spin lock with the counter odd (no vector is copied on commit). t0 = counter / 2 at the
    snapshot, t1 = counter / 2 when the writer enters; tau = t1 - t0. ``attempts`` records the snapshot
    copies of the update (1 = no retry). Writers store with relaxed atomics (lsh_axpy_f32_racy; sparse:
    sparse_apply_relaxed) because readers copy at the same time; their copies are discarded if so."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t k, ts, tg, tc, t0, t1, s, tries, nsel = 0
    cdef const int64_t *rows
    cdef double loss
    cdef float a
    cdef pending_t prev
    cdef bint first = True
    prev.valid = False
    while not stopped(c):
        ts = now_rel(c)
        tries = 0
        t0 = seqlock_read(c, t.local, &tries) >> 1
        if first:
            start_gate(c)
            first = False
        flush(c, tid, &prev)
        k = lsh_fetch_add_relaxed(&c.ticket.value, 1)
        if k >= c.total:
            break
        rows = batch_rows(c, t, k)
        loss = c.model.loss_grad(c.model, t.local, rows, c.batch_size, t.grad, t.work)
        t.computed += 1
        note_loss(c, loss, t0)
        if c.sparse_kind != SPARSE_NONE:
            nsel = sparsify(c, t)
        tg = now_rel(c)
        s = seqlock_write_begin(c)
        t1 = s >> 1
        a = <float>(c.lr * step_factor(c, t1 - t0))
        if c.sparse_kind != SPARSE_NONE:
            sparse_apply_relaxed(c.theta, t.idx, t.val, nsel, a)
        else:
            lsh_axpy_f32_racy(c.theta, a, t.grad, c.n_params)
        tail_observe(c, t1, t1 - t0)
        seqlock_write_end(c, s)
        tc = now_rel(c)
        if c.sparse_kind != SPARSE_NONE:
            t.applied_sum += a * value_sum(t.val, nsel)
        t.applied += 1
        hold(&prev, k, t0, t1, t1 - t0, tries, False, ts, tg, tc, tg)
    flush(c, tid, &prev)


cdef extern from "<sys/resource.h>" nogil:
    cdef struct rusage:
        long ru_nvcsw
        long ru_nivcsw
    enum: RUSAGE_THREAD
    int getrusage(int who, rusage *usage)


cdef extern from "<time.h>" nogil:
    enum: CLOCK_THREAD_CPUTIME_ID
    int clock_gettime(int clock, timespec *ts)


cdef inline int64_t thread_cpu_ns() noexcept nogil:
    cdef timespec ts
    if clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0:
        return 0
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int worker_main(ctx_t *c, int64_t tid) noexcept nogil:
    """Start barrier, then the algorithm's loop; around the loop, the thread's CPU time, wall time and
    context switches (the machine it ran on, docs/machine.md; plain syscalls, no allocation)."""
    cdef int64_t spins = 0
    cdef int64_t cpu0, wall0
    cdef rusage ru0, ru1
    cdef thread_t *me = &c.threads[tid]
    # acq_rel / acquire: the coordinator acquires `arrived` before it raises `go` with release, and every
    # worker acquires `go`, so t0_ns (written before the release) is visible to all workers
    lsh_fetch_add_acq_rel(&c.arrived.value, 1)
    while lsh_load_acquire(&c.go.value) == 0:
        lsh_backoff(&spins)
    memset(&ru0, 0, sizeof(rusage))
    memset(&ru1, 0, sizeof(rusage))
    getrusage(RUSAGE_THREAD, &ru0)
    cpu0 = thread_cpu_ns()
    wall0 = lsh_now_ns()
    if c.algorithm == ALG_SEQ:
        loop_seq(c, tid)
    elif c.algorithm == ALG_SYNC:
        loop_sync(c, tid)
    elif c.algorithm == ALG_LOCK:
        loop_lock(c, tid)
    elif c.algorithm == ALG_HOGWILD:
        loop_hogwild(c, tid)
    elif c.algorithm == ALG_SEQLOCK:
        loop_seqlock(c, tid)
    else:
        loop_leashed(c, tid)
    me.loop_wall_ns = lsh_now_ns() - wall0
    me.cpu_ns = thread_cpu_ns() - cpu0
    getrusage(RUSAGE_THREAD, &ru1)
    me.nivcsw = ru1.ru_nivcsw - ru0.ru_nivcsw
    me.nvcsw = ru1.ru_nvcsw - ru0.ru_nvcsw
    c.threads[tid].t_exit = now_rel(c)
    # release: our records and counters, to the coordinator (which also joins the thread)
    lsh_fetch_add_acq_rel(&c.finished.value, 1)
    return 0


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
