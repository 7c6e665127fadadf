# Declarations of runtime/_atomics.h (C11/GCC atomics, padding, spin barrier, clock, splitmix64) and of the
# few pthread calls the lock-based algorithm needs. See _atomics.h for the memory-order rules.
#
# Sibling modules cimport this file as ``runtime._atomics`` (cythonize resolves pxd files from the
# repository root); it declares only C, so the cimport creates no import at run time.

from libc.stdint cimport int64_t, uint64_t


cdef extern from "_atomics.h" nogil:
    enum: LSH_CACHE_LINE

    ctypedef struct lsh_padded_i64:
        int64_t value

    ctypedef struct lsh_barrier_t:
        lsh_padded_i64 count
        lsh_padded_i64 generation
        int64_t n

    int64_t lsh_load_relaxed(const int64_t *p)
    int64_t lsh_load_acquire(const int64_t *p)
    int64_t lsh_load_seq_cst(const int64_t *p)
    void lsh_store_relaxed(int64_t *p, int64_t v)
    void lsh_store_release(int64_t *p, int64_t v)
    void lsh_store_seq_cst(int64_t *p, int64_t v)
    int64_t lsh_fetch_add_relaxed(int64_t *p, int64_t v)
    int64_t lsh_fetch_add_acq_rel(int64_t *p, int64_t v)
    int64_t lsh_fetch_add_seq_cst(int64_t *p, int64_t v)
    bint lsh_cas_seq_cst(int64_t *p, int64_t *expected, int64_t desired)
    bint lsh_cas_acq_rel(int64_t *p, int64_t *expected, int64_t desired)
    bint lsh_cas_relaxed(int64_t *p, int64_t *expected, int64_t desired)
    void lsh_max_relaxed(int64_t *p, int64_t v)
    void lsh_min_relaxed(int64_t *p, int64_t v)

    float lsh_load_f32_relaxed(const float *p)
    void lsh_store_f32_relaxed(float *p, float v)
    void lsh_copy_f32_racy(float *dst, const float *src, int64_t n)
    void lsh_axpy_f32_racy(float *theta, float a, const float *g, int64_t n)

    void lsh_fence_seq_cst()
    void lsh_cpu_relax()
    void lsh_backoff(int64_t *spins)
    int64_t lsh_now_ns()

    void lsh_barrier_init(lsh_barrier_t *b, int64_t n)
    void lsh_barrier_wait(lsh_barrier_t *b)

    void *lsh_aligned_calloc(size_t nbytes)

    uint64_t lsh_splitmix64(uint64_t *state)
    uint64_t lsh_bounded(uint64_t x, uint64_t range)


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)
