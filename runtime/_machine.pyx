# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Micro-benchmarks of the machine for ``leashed calibrate`` (issue 13 item 3; docs/machine.md).

Every benchmark runs in C threads started here with ``pthread_create`` (no Python object, no GIL, no
allocation inside the timed loops), each pinned to one core with ``sched_setaffinity(0, ...)`` (Linux: the
calling thread only; a pin that the kernel refuses is reported, not fatal). The Python side
(:mod:`leashed.machine`) chooses the cores and the repetitions and takes medians of the raw nanosecond
timings returned here. The memory operations are the runtime's own (runtime/_phases.pxd): a copy is
``memcpy`` of ``n`` float32, an axpy is ``dst[i] = src[i] - a * g[i]`` (``axpy_into``, the dense leashed
attempt, papers.md §2.1), a read pass is a dot product over the vector (the stand-in for a gradient
reading its weights).

Kinds (what one call measures):

* ``local``: one thread rewrites its source, then times one copy/axpy of it (the source is in its cache);
* ``remote``: two threads on two cores alternate roles each round: one writes the shared source, the
  other times one copy/axpy of it (every line comes from the other core's cache);
* ``concurrent``: ``k`` threads on ``k`` cores each rewrite their own source, meet at a barrier and time
  one copy at once (bandwidth shared by ``k`` copies);
* ``read``: one thread times dot-product passes over a vector it wrote, in alternating blocks while the
  other thread spins on a flag (quiet) or copies that same vector again and again (busy);
* ``slice``: two threads pinned to ONE core, each reading CLOCK_MONOTONIC in a tight loop; a gap longer
  than ``gap_ns`` between two consecutive reads means the thread was descheduled, and the runs between
  gaps (start, end) are recorded.
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free
from libc.string cimport memcpy

from leashed.runtime._atomics cimport (lsh_aligned_calloc, lsh_backoff, lsh_barrier_init, lsh_barrier_t,
                                       lsh_barrier_wait, lsh_cpu_relax, lsh_load_acquire, lsh_now_ns,
                                       lsh_padded_i64, lsh_store_release)

cnp.import_array()


cdef extern from *:
    """
    #include <pthread.h>
    #include <sched.h>
    /* Pin the calling thread to `cpu` (Linux: pid 0 = this thread); 0 on success. */
    static int lshm_pin(int cpu) {
        cpu_set_t set;
        if (cpu < 0 || cpu >= CPU_SETSIZE) return -1;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        return sched_setaffinity(0, sizeof(set), &set);
    }
    typedef void *(*lshm_entry_t)(void *);
    static int lshm_spawn(pthread_t *t, lshm_entry_t entry, void *arg) {
        return pthread_create(t, NULL, entry, arg);
    }
    static int lshm_join(pthread_t t) { return pthread_join(t, NULL); }
    """
    ctypedef struct pthread_t:
        pass
    ctypedef void *(*lshm_entry_t)(void *) noexcept nogil
    int lshm_pin(int cpu) nogil
    int lshm_spawn(pthread_t *t, lshm_entry_t entry, void *arg) nogil
    int lshm_join(pthread_t t) nogil


cdef enum:
    KIND_LOCAL = 0
    KIND_REMOTE = 1
    KIND_CONCURRENT = 2
    KIND_READ = 3
    KIND_SLICE = 4

cdef enum:
    OP_COPY = 0
    OP_AXPY = 1

OPS = {"copy": OP_COPY, "axpy": OP_AXPY}
#: most workers one call may start
MAX_WORKERS = 1024


cdef struct shared_t:
    lsh_barrier_t barrier
    lsh_padded_i64 go           # start gate: 0 wait, 1 run, -1 abort (a thread could not be started)
    lsh_padded_i64 flag         # read: the block token the copier follows (-1 between blocks)
    lsh_padded_i64 stop         # set by worker 0 before a barrier once past the deadline: all stop there
    int64_t deadline_ns         # CLOCK_MONOTONIC: no new repetition after this (a loaded machine)
    float *vec                  # the shared vector (remote, read)
    int64_t n
    int64_t reps                # local/remote/concurrent: timed repetitions; read: blocks (quiet + busy)
    int64_t passes              # read: timed passes per block
    int64_t duration_ns         # slice
    int64_t gap_ns              # slice
    int kind
    int op


cdef struct worker_t:
    shared_t *sh
    int index
    int cpu
    int pinned                  # out: 1 if the pin to `cpu` succeeded
    float *src                  # own source (local, concurrent)
    float *dst                  # own destination
    float *g                    # own "gradient" (axpy, read)
    int64_t *out                # out: timings (ns) or run starts (slice)
    int64_t *out2               # out: run ends (slice)
    int64_t cap                 # capacity of out / out2
    int64_t count               # out: entries written
    double sink                 # keeps the read passes' results alive


cdef inline void fill(float *v, int64_t n, int64_t r) noexcept nogil:
    """Write every element (so that every cache line of ``v`` was last written by this thread)."""
    cdef float x = <float>(r % 13) * 0.25 + 1.0
    cdef int64_t i
    for i in range(n):
        v[i] = x


cdef inline void axpy_into(float *dst, const float *src, float a, const float *g, int64_t n) noexcept nogil:
    """dst = src - a * g: the runtime's dense attempt (runtime/_phases.pxd axpy_into)."""
    cdef int64_t i
    for i in range(n):
        dst[i] = src[i] - a * g[i]


cdef inline void apply_op(int op, float *dst, const float *src, const float *g, int64_t n) noexcept nogil:
    if op == OP_AXPY:
        axpy_into(dst, src, 0.01, g, n)
    else:
        memcpy(dst, src, n * sizeof(float))


cdef inline double dot(const float *v, const float *g, int64_t n) noexcept nogil:
    """A read-only pass: dot product with eight independent accumulators (so it runs at load speed)."""
    cdef float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef int64_t i = 0
    while i + 8 <= n:
        a0 += v[i] * g[i]
        a1 += v[i + 1] * g[i + 1]
        a2 += v[i + 2] * g[i + 2]
        a3 += v[i + 3] * g[i + 3]
        a4 += v[i + 4] * g[i + 4]
        a5 += v[i + 5] * g[i + 5]
        a6 += v[i + 6] * g[i + 6]
        a7 += v[i + 7] * g[i + 7]
        i += 8
    while i < n:
        a0 += v[i] * g[i]
        i += 1
    return <double>(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)


cdef inline void put(worker_t *w, int64_t value) noexcept nogil:
    if w.count < w.cap:
        w.out[w.count] = value
        w.count += 1


cdef inline bint past_deadline(worker_t *w) noexcept nogil:
    """Called by every worker right after the same barrier: worker 0 raised ``stop`` before that barrier
    once the deadline had passed, so all workers agree on the last repetition (no one waits alone)."""
    if w.index == 0 and lsh_now_ns() > w.sh.deadline_ns:
        lsh_store_release(&w.sh.stop.value, 1)
    lsh_barrier_wait(&w.sh.barrier)
    return lsh_load_acquire(&w.sh.stop.value) != 0


cdef void bench_local(worker_t *w) noexcept nogil:
    cdef shared_t *sh = w.sh
    cdef int64_t r, t0
    for r in range(sh.reps):
        if r > 1 and lsh_now_ns() > sh.deadline_ns:
            break
        fill(w.src, sh.n, r)
        t0 = lsh_now_ns()
        apply_op(sh.op, w.dst, w.src, w.g, sh.n)
        put(w, lsh_now_ns() - t0)


cdef void bench_remote(worker_t *w) noexcept nogil:
    cdef shared_t *sh = w.sh
    cdef int64_t r, t0
    for r in range(2 * sh.reps):
        if past_deadline(w) and r > 1:
            break
        if r % 2 == w.index:
            fill(sh.vec, sh.n, r)
        lsh_barrier_wait(&sh.barrier)  # acq/rel: the other core's writes are complete and visible
        if r % 2 != w.index:
            t0 = lsh_now_ns()
            apply_op(sh.op, w.dst, sh.vec, w.g, sh.n)
            put(w, lsh_now_ns() - t0)


cdef void bench_concurrent(worker_t *w) noexcept nogil:
    cdef shared_t *sh = w.sh
    cdef int64_t r, t0
    for r in range(sh.reps):
        fill(w.src, sh.n, r)
        if past_deadline(w) and r > 0:
            break
        t0 = lsh_now_ns()
        memcpy(w.dst, w.src, sh.n * sizeof(float))
        put(w, lsh_now_ns() - t0)
        lsh_barrier_wait(&sh.barrier)


cdef void bench_read(worker_t *w) noexcept nogil:
    """Worker 0 reads (timed), worker 1 copies in the odd (busy) blocks and spins in the even ones."""
    cdef shared_t *sh = w.sh
    cdef int64_t b, p, t0, token
    cdef double acc = 0
    if w.index == 0:
        fill(sh.vec, sh.n, 1)
        fill(w.g, sh.n, 2)
    for b in range(sh.reps):
        if w.index == 0:
            lsh_store_release(&sh.flag.value, b)
        lsh_barrier_wait(&sh.barrier)
        if w.index == 0:
            for p in range(sh.passes):
                if p > 0 and lsh_now_ns() > sh.deadline_ns:
                    break
                t0 = lsh_now_ns()
                acc += dot(sh.vec, w.g, sh.n)
                put(w, lsh_now_ns() - t0)
                w.out2[w.count - 1] = b
            lsh_store_release(&sh.flag.value, -1)
        else:
            token = b
            while lsh_load_acquire(&sh.flag.value) == token:
                if b % 2 == 1:
                    memcpy(w.dst, sh.vec, sh.n * sizeof(float))
                else:
                    lsh_cpu_relax()
        lsh_barrier_wait(&sh.barrier)
    w.sink = acc


cdef void bench_slice(worker_t *w) noexcept nogil:
    cdef shared_t *sh = w.sh
    cdef int64_t begin, prev, now, run_start
    lsh_barrier_wait(&sh.barrier)
    begin = lsh_now_ns()
    prev = begin
    run_start = begin
    while True:
        now = lsh_now_ns()
        if now - prev > sh.gap_ns:
            if w.count < w.cap:
                w.out[w.count] = run_start
                w.out2[w.count] = prev
                w.count += 1
            run_start = now
        prev = now
        if now - begin > sh.duration_ns:
            break


cdef void *worker_entry(void *arg) noexcept nogil:
    cdef worker_t *w = <worker_t *>arg
    cdef shared_t *sh = w.sh
    cdef int64_t spins = 0
    w.pinned = 1 if lshm_pin(w.cpu) == 0 else 0
    while lsh_load_acquire(&sh.go.value) == 0:
        lsh_backoff(&spins)
    if lsh_load_acquire(&sh.go.value) < 0:
        return NULL
    if sh.kind == KIND_LOCAL:
        bench_local(w)
    elif sh.kind == KIND_REMOTE:
        bench_remote(w)
    elif sh.kind == KIND_CONCURRENT:
        bench_concurrent(w)
    elif sh.kind == KIND_READ:
        bench_read(w)
    else:
        bench_slice(w)
    return NULL


cdef int run_workers(shared_t *sh, worker_t *w, int64_t k) noexcept nogil:
    """Start ``k`` pinned threads on ``w``, open the gate, join them; -1 if a thread could not start."""
    cdef pthread_t *tids = <pthread_t *>lsh_aligned_calloc(k * sizeof(pthread_t))
    cdef int64_t i, started = 0
    if tids == NULL:
        return -1
    for i in range(k):
        if lshm_spawn(&tids[i], worker_entry, &w[i]) != 0:
            break
        started += 1
    lsh_store_release(&sh.go.value, 1 if started == k else -1)
    for i in range(started):
        lshm_join(tids[i])
    free(tids)
    return 0 if started == k else -1


cdef class _Bench:
    """Owns the C state of one benchmark call: the shared block, the workers and their buffers."""

    cdef shared_t *sh
    cdef worker_t *w
    cdef int64_t k

    def __cinit__(self, int kind, int op, int64_t n, cpus, int64_t reps, int64_t cap, bint own_src,
                  bint own_g, bint shared_vec):
        cdef int64_t i
        self.k = len(cpus)
        if not 1 <= self.k <= MAX_WORKERS or n < 1 or reps < 0 or cap < 0:
            raise ValueError("inconsistent benchmark configuration")
        self.sh = <shared_t *>lsh_aligned_calloc(sizeof(shared_t))
        self.w = <worker_t *>lsh_aligned_calloc(self.k * sizeof(worker_t))
        if self.sh == NULL or self.w == NULL:
            raise MemoryError("cannot allocate the benchmark state")
        self.sh.kind = kind
        self.sh.op = op
        self.sh.n = n
        self.sh.reps = reps
        lsh_barrier_init(&self.sh.barrier, self.k)
        if shared_vec:
            self.sh.vec = <float *>lsh_aligned_calloc(n * sizeof(float))
            if self.sh.vec == NULL:
                raise MemoryError(f"cannot allocate a vector of {n} float32")
        for i in range(self.k):
            self.w[i].sh = self.sh
            self.w[i].index = <int>i
            self.w[i].cpu = <int>cpus[i]
            self.w[i].cap = cap
            self.w[i].dst = <float *>lsh_aligned_calloc(n * sizeof(float))
            if own_src:
                self.w[i].src = <float *>lsh_aligned_calloc(n * sizeof(float))
            if own_g:
                self.w[i].g = <float *>lsh_aligned_calloc(n * sizeof(float))
            if cap:
                self.w[i].out = <int64_t *>lsh_aligned_calloc(cap * sizeof(int64_t))
                self.w[i].out2 = <int64_t *>lsh_aligned_calloc(cap * sizeof(int64_t))
            if (self.w[i].dst == NULL or (own_src and self.w[i].src == NULL) or (own_g and self.w[i].g == NULL)
                    or (cap and (self.w[i].out == NULL or self.w[i].out2 == NULL))):
                raise MemoryError(f"cannot allocate the buffers of {self.k} benchmark threads ({n} float32)")
            if own_g:
                fill(self.w[i].g, n, 3)

    def __dealloc__(self):
        cdef int64_t i
        if self.w != NULL:
            for i in range(self.k):
                free(self.w[i].src)
                free(self.w[i].dst)
                free(self.w[i].g)
                free(self.w[i].out)
                free(self.w[i].out2)
            free(self.w)
        if self.sh != NULL:
            free(self.sh.vec)
            free(self.sh)

    def set_read(self, int64_t passes):
        self.sh.passes = passes

    def set_slice(self, int64_t duration_ns, int64_t gap_ns):
        self.sh.duration_ns = duration_ns
        self.sh.gap_ns = gap_ns

    def run(self, double max_s):
        """Run the threads (without the GIL); no new repetition starts after ``max_s`` seconds. Returns
        (outs, outs2, pinned): per worker, int64 arrays."""
        cdef int rc
        self.sh.deadline_ns = lsh_now_ns() + <int64_t>(max_s * 1e9)
        with nogil:
            rc = run_workers(self.sh, self.w, self.k)
        if rc != 0:
            raise OSError("cannot start the benchmark threads (pthread_create failed)")
        cdef int64_t i, j
        outs, outs2, pinned = [], [], []
        for i in range(self.k):
            a = np.empty(self.w[i].count, dtype=np.int64)
            b = np.empty(self.w[i].count, dtype=np.int64)
            for j in range(self.w[i].count):
                a[j] = self.w[i].out[j]
                b[j] = self.w[i].out2[j]
            outs.append(a)
            outs2.append(b)
            pinned.append(bool(self.w[i].pinned))
        return outs, outs2, pinned


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"vector length must be positive, got {n}")


def time_local(int64_t n, str op, int cpu, int64_t reps, double max_s=1.0):
    """One thread on ``cpu``: ``reps`` timings (ns) of a copy/axpy of ``n`` float32 it has just written
    (fewer, at least 2, if ``max_s`` seconds pass first, as in every function here). Returns (times_ns,
    pinned)."""
    _check_n(n)
    bench = _Bench(KIND_LOCAL, OPS[op], n, [cpu], reps, reps, True, op == "axpy", False)
    outs, _, pinned = bench.run(max_s)
    return outs[0], pinned[0]


def time_remote(int64_t n, str op, int cpu_a, int cpu_b, int64_t reps, double max_s=1.0):
    """Two threads on ``cpu_a`` and ``cpu_b`` taking turns: ``2 * reps`` timings (ns) of a copy/axpy of a
    vector the other core has just written (``reps`` each way). Returns (times_ns, pinned)."""
    _check_n(n)
    bench = _Bench(KIND_REMOTE, OPS[op], n, [cpu_a, cpu_b], reps, reps, False, op == "axpy", True)
    outs, _, pinned = bench.run(max_s)
    return np.concatenate(outs), all(pinned)


def time_concurrent(int64_t n, cpus, int64_t reps, double max_s=1.0):
    """``len(cpus)`` threads, one per cpu, copying their own ``n`` float32 at the same moment: all
    ``len(cpus) * reps`` timings (ns). Returns (times_ns, pinned)."""
    _check_n(n)
    bench = _Bench(KIND_CONCURRENT, OP_COPY, n, list(cpus), reps, reps, True, False, False)
    outs, _, pinned = bench.run(max_s)
    return np.concatenate(outs), all(pinned)


def time_read(int64_t n, int cpu_reader, int cpu_copier, int64_t blocks, int64_t passes, double max_s=1.0):
    """Dot-product passes over ``n`` float32 on ``cpu_reader``, in ``blocks`` alternating blocks of
    ``passes`` passes: quiet (even blocks: the thread on ``cpu_copier`` spins on a flag) and busy (odd
    blocks: it copies the same vector meanwhile). Returns (times_ns, block_of_each_time, pinned)."""
    _check_n(n)
    blocks = max(2, blocks + blocks % 2)
    bench = _Bench(KIND_READ, OP_COPY, n, [cpu_reader, cpu_copier], blocks, blocks * passes, False, True,
                   True)
    bench.set_read(passes)
    outs, blocks_of, pinned = bench.run(max_s)
    return outs[0], blocks_of[0], all(pinned)


def time_slices(int cpu, double duration_s, double gap_s, int64_t cap=100_000):
    """Two threads pinned to ``cpu``, each reading the clock for ``duration_s``; per thread the runs
    between descheduling gaps longer than ``gap_s``: ([starts_ns, ...], [ends_ns, ...], pinned), times on
    CLOCK_MONOTONIC. The first recorded run of each thread began before the other was running."""
    bench = _Bench(KIND_SLICE, OP_COPY, 1, [cpu, cpu], 0, cap, False, False, False)
    bench.set_slice(<int64_t>(duration_s * 1e9), <int64_t>(gap_s * 1e9))
    starts, ends, pinned = bench.run(duration_s + 1.0)
    return starts, ends, all(pinned)
