# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The worker loops of the runtime: one nogil loop per algorithm (papers.md §2, docs/seqlock.md).

The steps every loop shares (ticket, rows, gradient, sparsification, step, records) are the inline phases
of runtime/_phases.pxd, so each loop below shows only its own read and commit protocol. The Python side
(the Run class, built by leashed.runtime.run) is runtime/_workers.pyx; it calls :func:`worker_main`.

Style of scikit-learn's ``_sgd_fast``: every option is mapped to an int before the loops start, the whole
loop runs without the GIL, and faults (divergence, a pool violation) are flagged in C and raised by the
Python side after the threads have joined. Workers are Python threads that call :meth:`Run.work` once; it
releases the GIL, waits at a start barrier that spins on an atomic (so all threads really overlap), runs
the algorithm's loop until the shared ticket counter runs out or the stop flag is set, and returns.

Work distribution (all algorithms): a global atomic ticket counter hands out gradients; ticket ``k`` is
batch ``k % nb`` of epoch ``k // nb`` (``nb`` = batches per epoch) of the schedule shared with the
simulator (``leashed.sim.batches``: one numpy permutation per epoch), precomputed before the threads start
as an int32 table. So every algorithm computes the same ``total`` gradients whatever the thread count,
and a dropped gradient is counted, not replaced. Per-update records go to index ``k`` of shared
preallocated arrays (each index written by exactly one thread); the Python side sorts them into commit
order (leashed.assembly.commit_order).

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

from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from leashed.runtime._atomics cimport (lsh_backoff, lsh_barrier_wait, lsh_cas_acq_rel, lsh_copy_f32_racy,
                                       lsh_fetch_add_acq_rel, lsh_load_acquire, lsh_load_relaxed, lsh_now_ns,
                                       lsh_store_relaxed, lsh_store_release, pthread_mutex_lock,
                                       pthread_mutex_unlock)
from leashed.runtime._phases cimport (ALG_HOGWILD, ALG_LOCK, ALG_SEQ, ALG_SEQLOCK, ALG_SYNC, STOP_POOL_EMPTY,
                                      after_gradient, apply_in_place, apply_relaxed, axpy_while_latest,
                                      copy_while_latest, count_applied, ctx_t, flush, gradient, hold, now_rel,
                                      pending_t, read_done, record, seqlock_fence_release, seqlock_read,
                                      serve_snapshot, step_factor, step_size, stopped, tail_observe,
                                      take_ticket, thread_t, timespec)
from leashed.runtime._sparse cimport SPARSE_NONE, sparse_apply, sparse_scatter
from leashed.runtime._store cimport (lsh_store_t, make_word, store_acquire, store_discard, store_pin,
                                     store_pinned_gen, store_publish_pinned, store_theta, store_unpin,
                                     store_verify, word_slot, word_version)


# ============================================================================== the algorithms
cdef void loop_seq(ctx_t *c, int64_t tid) noexcept nogil:
    """SEQ (papers.md §2): one thread, gradients on the shared vector, updated in place; tau = 0. Sparse
    (papers.md §5): only the K selected coordinates are written (sparse_apply)."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t k, ts, tg, tc, nsel
    cdef float a
    while not stopped(c):
        k = take_ticket(c)
        if k >= c.total:
            break
        ts = now_rel(c)
        nsel = after_gradient(c, t, gradient(c, t, c.theta, k), k)
        tg = now_rel(c)
        a = step_size(c, 0)
        apply_in_place(c, t, c.theta, a, nsel)
        count_applied(c, t, a, nsel)
        tail_observe(c, k, 0)
        lsh_store_relaxed(&c.version.value, k + 1)  # relaxed: read only as a progress statistic
        tc = now_rel(c)
        record(c, k, tid, k, k, 0, 1, False, ts, tg, tc, tg)
        serve_snapshot(c, c.theta, k + 1)


cdef void loop_lock(ctx_t *c, int64_t tid) noexcept nogil:
    """LOCK (papers.md §2): copy theta and read the version under one mutex, compute on the copy, apply
    under the mutex; tau = version at apply - version copied. The mutex orders all accesses to theta.
    Sparse (papers.md §5): the selection runs outside the mutex, the apply (sparse_apply) inside it."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t k, ts, tg, tc, t0, t1, nsel
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
        read_done(c, tid, &first, &prev)
        k = take_ticket(c)
        if k >= c.total:
            break
        nsel = after_gradient(c, t, gradient(c, t, t.local, k), t0)
        tg = now_rel(c)
        pthread_mutex_lock(&c.mutex)
        t1 = lsh_load_relaxed(&c.version.value)
        a = step_size(c, t1 - t0)
        apply_in_place(c, t, c.theta, a, nsel)
        tail_observe(c, t1, t1 - t0)
        lsh_store_relaxed(&c.version.value, t1 + 1)
        tc = now_rel(c)
        pthread_mutex_unlock(&c.mutex)
        count_applied(c, t, a, nsel)
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
    cdef int64_t k, ts, tg, tc, t0, t1, nsel
    cdef float a
    cdef pending_t prev
    cdef bint first = True
    prev.valid = False
    while not stopped(c):
        ts = now_rel(c)
        # acquire: keeps the element loads below from moving above the version read, so the copy is at
        # least as new as t0 (the value of tau itself is exact with any order, by coherence of the counter)
        t0 = lsh_load_acquire(&c.version.value)
        lsh_copy_f32_racy(t.local, c.theta, c.n_params)
        read_done(c, tid, &first, &prev)
        k = take_ticket(c)
        if k >= c.total:
            break
        nsel = after_gradient(c, t, gradient(c, t, t.local, k), t0)
        tg = now_rel(c)
        # acq_rel: the counter hands out unique commit versions; acquire/release keep our element stores
        # after it and our gradient reads before it
        t1 = lsh_fetch_add_acq_rel(&c.version.value, 1)
        a = step_size(c, t1 - t0)
        apply_relaxed(c, t, c.theta, a, nsel)
        count_applied(c, t, a, nsel)
        tail_observe(c, t1, t1 - t0)
        tc = now_rel(c)
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
    cdef float coef, acc
    lo = n * tid // m
    hi = n * (tid + 1) // m
    while True:
        base = s * m
        cnt = min(m, c.total - base)
        k = base + tid
        if tid < cnt:
            ts = now_rel(c)
            nsel = after_gradient(c, t, gradient(c, t, c.theta, k), s)
            if c.sparse_kind != SPARSE_NONE:
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
            count_applied(c, t, coef, nsel)
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
        read_done(c, tid, &first, &prev)
        k = take_ticket(c)
        if k >= c.total:
            store_unpin(st, s0)
            break
        loss = gradient(c, t, store_theta(st, s0), k)
        if c.check:
            store_verify(st, s0, gen0, store_theta(st, s0), c.n_params)
        store_unpin(st, s0)
        nsel = after_gradient(c, t, loss, t0)  # sparsified once per gradient, never per attempt
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
            a = step_size(c, t1 - t0)
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
                count_applied(c, t, a, nsel)
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


# ============================================================================== seqlock writer
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
    (seqlock_read in _phases.pxd: retried while a writer overlaps the copy), compute on it, then apply in
    place under the writers' spin lock with the counter odd (no vector is copied on commit). t0 = counter /
    2 at the snapshot, t1 = counter / 2 when the writer enters; tau = t1 - t0. ``attempts`` records the
    snapshot copies of the update (1 = no retry), ``t_attempt`` the end of the successful one. Writers
    store with relaxed atomics (apply_relaxed) because readers copy at the same time; their copies are
    discarded if so."""
    cdef thread_t *t = &c.threads[tid]
    cdef int64_t k, ts, tr, tg, tc, t0, t1, s, tries, nsel
    cdef float a
    cdef pending_t prev
    cdef bint first = True
    prev.valid = False
    while not stopped(c):
        ts = now_rel(c)
        tries = 0
        t0 = seqlock_read(c, t.local, &tries) >> 1
        tr = now_rel(c)  # the end of the successful snapshot: recorded as t_attempt
        read_done(c, tid, &first, &prev)
        k = take_ticket(c)
        if k >= c.total:
            break
        nsel = after_gradient(c, t, gradient(c, t, t.local, k), t0)
        tg = now_rel(c)
        s = seqlock_write_begin(c)
        t1 = s >> 1
        a = step_size(c, t1 - t0)
        apply_relaxed(c, t, c.theta, a, nsel)
        tail_observe(c, t1, t1 - t0)
        seqlock_write_end(c, s)
        tc = now_rel(c)
        count_applied(c, t, a, nsel)
        hold(&prev, k, t0, t1, t1 - t0, tries, False, ts, tg, tc, tr)
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
