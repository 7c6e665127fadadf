/* Atomics, padding, a spin barrier and a monotonic clock for the leashed runtime (papers.md §2, §2.1).
 *
 * Everything here is `static inline` C on the GCC/Clang `__atomic` builtins (the C11 memory model), so the
 * runtime's lock-free code states its memory orders explicitly instead of relying on x86's strong
 * ordering. Each function names its order in its name; the comment at each call site in _store.pxd /
 * _loops.pyx / _phases.pxd say why that order is enough. The short version of the rules used throughout:
 *
 *   relaxed  - atomicity only: statistics, counters nobody synchronises through, and HOGWILD!'s element
 *              loads/stores (papers.md §2: racing stores are the algorithm; relaxed makes them defined
 *              behaviour in C11 and compiles to plain mov on x86 and plain ldr/str on ARM).
 *   acquire  - a load after which we read data another thread published with a release store/RMW.
 *   release  - a store/RMW that publishes data written before it.
 *   acq_rel  - an RMW that both claims something (acquire) and hands something over (release).
 *   seq_cst  - the store-then-load handshakes of Leashed-SGD (papers.md §2.1 "Memory ordering"): a reader
 *              increments a reader count and then re-reads the published word, a publisher replaces the
 *              published word, marks the old vector stale and then reads its reader count. Each side
 *              stores one variable and then loads another (Dekker's pattern); acquire/release cannot
 *              order a store before a later load, only the single total order of seq_cst operations can.
 *
 * Cache-line padding: LSH_CACHE_LINE bytes; lsh_padded_i64 puts one hot 64-bit word alone on its line so
 * that threads hammering different words (ticket counter, published word, stop flag) do not false-share.
 */
#ifndef LEASHED_RUNTIME_ATOMICS_H
#define LEASHED_RUNTIME_ATOMICS_H

#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LSH_CACHE_LINE 64

typedef struct lsh_padded_i64 {
    int64_t value;
    char _pad[LSH_CACHE_LINE - sizeof(int64_t)];
} __attribute__((aligned(LSH_CACHE_LINE))) lsh_padded_i64;

/* ------------------------------------------------------------------ 64-bit integer atomics */
static inline int64_t lsh_load_relaxed(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline int64_t lsh_load_acquire(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline int64_t lsh_load_seq_cst(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

static inline void lsh_store_relaxed(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void lsh_store_release(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void lsh_store_seq_cst(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

/* fetch_add returns the value before the addition. */
static inline int64_t lsh_fetch_add_relaxed(int64_t *p, int64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline int64_t lsh_fetch_add_acq_rel(int64_t *p, int64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
}
static inline int64_t lsh_fetch_add_seq_cst(int64_t *p, int64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

/* Strong compare-and-swap: if *p == *expected, write desired and return 1; else copy *p into *expected and
 * return 0. The failure order is the strongest load order allowed by the success order. */
static inline int lsh_cas_seq_cst(int64_t *p, int64_t *expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline int lsh_cas_acq_rel(int64_t *p, int64_t *expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline int lsh_cas_relaxed(int64_t *p, int64_t *expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/* Atomic maximum and minimum (statistics and the divergence marker): relaxed CAS loops. Relaxed is enough
 * because nobody reads data through them; the final values are read after the threads have joined
 * (thread join is a full synchronisation). */
static inline void lsh_max_relaxed(int64_t *p, int64_t v) {
    int64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > cur && !lsh_cas_relaxed(p, &cur, v)) {
    }
}
static inline void lsh_min_relaxed(int64_t *p, int64_t v) {
    int64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v < cur && !lsh_cas_relaxed(p, &cur, v)) {
    }
}

/* ------------------------------------------------------------------ float element atomics (HOGWILD!) */
/* Relaxed loads and stores of one float: no ordering, only freedom from torn 32-bit values and from the
 * undefined behaviour of a plain data race. The generic __atomic_load/__atomic_store work on any 4-byte
 * type; they compile to ordinary movss on x86-64. */
static inline float lsh_load_f32_relaxed(const float *p) {
    float v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}
static inline void lsh_store_f32_relaxed(float *p, float v) { __atomic_store(p, &v, __ATOMIC_RELAXED); }

/* Whole-vector racy copy and update for HOGWILD! (papers.md §2): dst[i] = src[i], and theta[i] -= a * g[i],
 * while other threads do the same to `src` / `theta`. What we need is the guarantee of the element atomics
 * above: every float is read and written whole (never torn), in any interleaving with the other threads.
 * The scalar relaxed atomics give it but stop the compiler from vectorising (a 100k-parameter update
 * costs 4x a plain loop, papers.md §2's HOGWILD! would lose to the lock). On x86-64 the loops below use
 * aligned 16-byte SSE2 loads and stores on the shared vector instead: an aligned 16-byte access never
 * splits a 4-byte element (Intel SDM vol. 3A §9.1.1: naturally aligned accesses are atomic, and on CPUs
 * with AVX aligned 16-byte MOVAPS accesses are atomic as a whole), which is the element-wise guarantee the
 * relaxed atomics give, at the cost of leaving C11's model for the ISA's. The unaligned head and the tail
 * use the scalar relaxed atomics; elsewhere the whole loop does. The arithmetic is float32 mul then sub,
 * element by element, the same rounding as the scalar loop and runtime/reference.py. */
#if defined(__x86_64__)
#include <emmintrin.h>
static inline void lsh_copy_f32_racy(float *dst, const float *src, int64_t n) {
    int64_t i = 0;
    while (i < n && ((uintptr_t)(src + i) & 15u) != 0) {
        dst[i] = lsh_load_f32_relaxed(src + i);
        i++;
    }
    for (; i + 8 <= n; i += 8) {
        __m128 x0 = _mm_load_ps(src + i), x1 = _mm_load_ps(src + i + 4);
        _mm_storeu_ps(dst + i, x0);
        _mm_storeu_ps(dst + i + 4, x1);
    }
    for (; i < n; i++) dst[i] = lsh_load_f32_relaxed(src + i);
}
static inline void lsh_axpy_f32_racy(float *theta, float a, const float *g, int64_t n) {
    int64_t i = 0;
    const __m128 va = _mm_set1_ps(a);
    while (i < n && ((uintptr_t)(theta + i) & 15u) != 0) {
        lsh_store_f32_relaxed(theta + i, lsh_load_f32_relaxed(theta + i) - a * g[i]);
        i++;
    }
    for (; i + 8 <= n; i += 8) {
        __m128 t0 = _mm_load_ps(theta + i), t1 = _mm_load_ps(theta + i + 4);
        t0 = _mm_sub_ps(t0, _mm_mul_ps(va, _mm_loadu_ps(g + i)));
        t1 = _mm_sub_ps(t1, _mm_mul_ps(va, _mm_loadu_ps(g + i + 4)));
        _mm_store_ps(theta + i, t0);
        _mm_store_ps(theta + i + 4, t1);
    }
    for (; i < n; i++) lsh_store_f32_relaxed(theta + i, lsh_load_f32_relaxed(theta + i) - a * g[i]);
}
#else
static inline void lsh_copy_f32_racy(float *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = lsh_load_f32_relaxed(src + i);
}
static inline void lsh_axpy_f32_racy(float *theta, float a, const float *g, int64_t n) {
    for (int64_t i = 0; i < n; i++) lsh_store_f32_relaxed(theta + i, lsh_load_f32_relaxed(theta + i) - a * g[i]);
}
#endif

/* ------------------------------------------------------------------ fences, spinning, clock */
static inline void lsh_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static inline void lsh_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Back off in a spin-wait: pause for the first spins, then give the core away. Oversubscribed runs
 * (8 threads on 2 cores) would otherwise burn the time slices the thread being waited for needs. */
static inline void lsh_backoff(int64_t *spins) {
    if (++*spins < 64) {
        lsh_cpu_relax();
    } else {
        sched_yield();
    }
}

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC: unaffected by wall-clock changes). */
static inline int64_t lsh_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ spin barrier */
/* A reusable centralised barrier for `n` threads: arrive = acq_rel increment of `count`; the last arrival
 * resets the count and bumps `generation` with release; the others spin (with back-off) until they see a
 * new generation with acquire. Release/acquire through `generation` (and the acq_rel RMW chain on `count`,
 * a release sequence) makes everything any thread wrote before arriving visible to every thread after
 * leaving. The generation is read before arriving, so a fast thread that leaves and arrives at the next
 * use of the barrier cannot be confused with the previous one; the count reset is ordered before the
 * generation bump by the release store, so that fast thread sees the count already reset. */
typedef struct lsh_barrier_t {
    lsh_padded_i64 count;
    lsh_padded_i64 generation;
    int64_t n;
} lsh_barrier_t;

static inline void lsh_barrier_init(lsh_barrier_t *b, int64_t n) {
    b->count.value = 0;
    b->generation.value = 0;
    b->n = n;
}

static inline void lsh_barrier_wait(lsh_barrier_t *b) {
    int64_t gen = __atomic_load_n(&b->generation.value, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count.value, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count.value, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation.value, gen + 1, __ATOMIC_RELEASE);
    } else {
        int64_t spins = 0;
        while (__atomic_load_n(&b->generation.value, __ATOMIC_ACQUIRE) == gen) {
            lsh_backoff(&spins);
        }
    }
}

/* ------------------------------------------------------------------ aligned allocation */
/* Allocation happens only while a run is set up, never in the worker loops. */
static inline void *lsh_aligned_calloc(size_t bytes) {
    size_t rounded = (bytes + LSH_CACHE_LINE - 1) / LSH_CACHE_LINE * LSH_CACHE_LINE;
    void *p = NULL;
    if (rounded == 0) rounded = LSH_CACHE_LINE;
    if (posix_memalign(&p, LSH_CACHE_LINE, rounded) != 0) return NULL;
    memset(p, 0, rounded);
    return p;
}

/* ------------------------------------------------------------------ random numbers */
/* splitmix64 (Steele, Lea, Flood 2014): the per-thread generator and the epoch-permutation stream.
 * Small, fast, and simple enough to mirror bit for bit in Python (runtime/reference.py). */
static inline uint64_t lsh_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* floor(x * range / 2^64): a number in [0, range) (Lemire's multiply-shift, without the rejection step:
 * the bias is below range / 2^64, invisible for permutations of data sets). */
static inline uint64_t lsh_bounded(uint64_t x, uint64_t range) {
    return (uint64_t)(((unsigned __int128)x * (unsigned __int128)range) >> 64);
}

#endif /* LEASHED_RUNTIME_ATOMICS_H */
