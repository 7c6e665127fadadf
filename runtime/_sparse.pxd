# Sparsified updates (papers.md §5): nogil kernels of leashed.runtime._sparse for the worker loops.
#
# Sibling modules cimport these functions under the module's import name, so that Cython imports the
# function pointers from the right module at run time:
#
#     from leashed.runtime._sparse cimport SPARSE_TOPK, sparse_select, sparse_copy_apply
#
# (``from runtime._sparse cimport ...`` would compile but make the importing module look for a package
# ``runtime`` at run time.) Every function is nogil, allocates nothing and touches only the arrays it is
# given: the caller provides the scratch, one set per thread. See runtime/_sparse.pyx for the contracts.
#
# Per-thread scratch for a model of d parameters keeping k coordinates:
#   mag    float[d]    top-k only (NULL for rand-k)
#   perm   int64[d]    rand-k only (NULL for top-k): a permutation of 0..d-1, set once by sparse_perm_init
#                      and left to the kernel afterwards (it stays a permutation)
#   idx    int64[k], val float[k]    the output: k coordinates sorted by index and their values
#   memory float[d]    error memory (papers.md §5, "memory"), zero at the start; NULL without memory
#   rng    uint64      the thread's splitmix64 state (runtime/_atomics.h lsh_splitmix64), rand-k only

from libc.stdint cimport int64_t, uint64_t


cdef enum:
    SPARSE_NONE = 0
    SPARSE_TOPK = 1
    SPARSE_RANDK = 2


# ------------------------------------------------------------------------------------ selection
cdef float sparse_kth_magnitude(float *mag, int64_t d, int64_t k) noexcept nogil
cdef int64_t sparse_topk(const float *a, int64_t d, int64_t k, float *mag, int64_t *idx,
                         float *val) noexcept nogil
cdef void sparse_perm_init(int64_t *perm, int64_t d) noexcept nogil
cdef int64_t sparse_randk(int64_t d, int64_t k, uint64_t *rng, int64_t *perm,
                          int64_t *idx) noexcept nogil
cdef void sparse_gather(const float *a, const int64_t *idx, int64_t k, float scale,
                        float *val) noexcept nogil
cdef int64_t sparse_select(int kind, const float *g, int64_t d, int64_t k, float *memory, float scale,
                           uint64_t *rng, float *mag, int64_t *perm, int64_t *idx,
                           float *val) noexcept nogil

# ------------------------------------------------------------------------------------ application
cdef void sparse_apply(float *theta, const int64_t *idx, const float *val, int64_t k,
                       float alpha) noexcept nogil
cdef void sparse_apply_relaxed(float *theta, const int64_t *idx, const float *val, int64_t k,
                               float alpha) noexcept nogil
cdef void sparse_copy_apply(float *dst, const float *src, int64_t d, const int64_t *idx, const float *val,
                            int64_t k, float alpha) noexcept nogil
cdef void sparse_scatter(float *out, int64_t d, const int64_t *idx, const float *val,
                         int64_t k) noexcept nogil

# ------------------------------------------------------------------------------------ helpers
cdef void sparse_sort_i64(int64_t *a, int64_t n) noexcept nogil
