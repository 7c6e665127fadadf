# cython: language_level=3
# The phases every worker loop shares (runtime/_loops.pyx) and the state they work on: the run context
# ctx_t, the per-thread thread_t, the held record pending_t, the codes, and cdef inline helpers for the
# common steps -- take a ticket, the batch rows, compute the gradient, sparsify it once, the step, the
# applied counts, record / hold / flush, the start gate -- so that each loop shows only its own read and
# commit protocol (papers.md §2, §2.1; docs/seqlock.md). runtime/_workers.pyx (the Python Run class)
# cimports the same declarations. Declarations and inline C only: no module of its own.

from libc.math cimport exp, isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from leashed.runtime._atomics cimport (lsh_axpy_f32_racy, lsh_backoff, lsh_barrier_t, lsh_copy_f32_racy,
                                       lsh_fetch_add_acq_rel, lsh_fetch_add_relaxed, lsh_load_acquire,
                                       lsh_load_relaxed,
                                       lsh_min_relaxed, lsh_now_ns, lsh_padded_i64, lsh_store_relaxed,
                                       lsh_store_release, pthread_mutex_t)
from leashed.runtime._sparse cimport SPARSE_NONE, sparse_apply, sparse_apply_relaxed, sparse_select
from leashed.models._kernels cimport leashed_model_t
from leashed.runtime._store cimport lsh_store_t


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


# ============================================================================== common phases
cdef inline int64_t take_ticket(ctx_t *c) noexcept nogil:
    """The next ticket (gradient k of the run; k >= total: the run is done)."""
    return lsh_fetch_add_relaxed(&c.ticket.value, 1)  # relaxed: a unique number, no data hand-over


cdef inline double gradient(ctx_t *c, thread_t *t, const float *theta, int64_t k) noexcept nogil:
    """Loss and gradient (into t.grad) of ticket k's batch at theta."""
    return c.model.loss_grad(c.model, theta, batch_rows(c, t, k), c.batch_size, t.grad, t.work)


cdef inline int64_t after_gradient(ctx_t *c, thread_t *t, double loss, int64_t version_read) noexcept nogil:
    """After a gradient: count it, check the loss for divergence, sparsify it once (papers.md §5); returns
    the number of selected pairs K (0 for dense runs)."""
    t.computed += 1
    note_loss(c, loss, version_read)
    if c.sparse_kind != SPARSE_NONE:
        return sparsify(c, t)
    return 0


cdef inline float step_size(ctx_t *c, int64_t tau) noexcept nogil:
    """The applied step lr * s(tau), rounded to float32 as the reference does."""
    return <float>(c.lr * step_factor(c, tau))


cdef inline void apply_in_place(ctx_t *c, thread_t *t, float *theta, float a, int64_t nsel) noexcept nogil:
    """theta -= a * g with plain stores (seq; lock under its mutex): the K selected pairs when sparse."""
    if c.sparse_kind != SPARSE_NONE:
        sparse_apply(theta, t.idx, t.val, nsel, a)
    else:
        axpy_into(theta, theta, a, t.grad, c.n_params)


cdef inline void apply_relaxed(ctx_t *c, thread_t *t, float *theta, float a, int64_t nsel) noexcept nogil:
    """theta -= a * g with relaxed element stores (hogwild, seqlock: others read theta meanwhile)."""
    if c.sparse_kind != SPARSE_NONE:
        sparse_apply_relaxed(theta, t.idx, t.val, nsel, a)
    else:
        lsh_axpy_f32_racy(theta, a, t.grad, c.n_params)


cdef inline void count_applied(ctx_t *c, thread_t *t, float a, int64_t nsel) noexcept nogil:
    """An applied update: the thread's count and, sparse, its applied mass (sum of step * values)."""
    t.applied += 1
    if c.sparse_kind != SPARSE_NONE:
        t.applied_sum += a * value_sum(t.val, nsel)


cdef inline void read_done(ctx_t *c, int64_t tid, bint *first, pending_t *prev) noexcept nogil:
    """Right after a read: the start gate on the first one, then write out the previous update's record
    (held until this read->commit window was open, see pending_t)."""
    if first[0]:
        start_gate(c)
        first[0] = False
    flush(c, tid, prev)


# ============================================================================== seqlock reader
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
