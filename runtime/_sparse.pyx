# cython: language_level=3
"""Sparsified updates for the runtime (papers.md §5): top-k, rand-k, error memory, sparse application.

The nogil kernels (declared in ``_sparse.pxd``; the worker loops cimport them as
``leashed.runtime._sparse``) allocate nothing: the caller passes per-thread scratch. The Python functions
and the :class:`Sparsifier` class below wrap the same kernels for tests, the simulator's with-gradients
mode and the pure-Python reference.

Semantics (papers.md §5, "In leashed"; identical to the numpy implementation in
``leashed.sim.gradients.sparsify_numpy``):

* ``topk:K`` keeps the K coordinates of largest magnitude |a_j|. **Ties: the lower index wins**: among
  equal magnitudes the coordinates are taken in increasing index order, which is the order of a stable
  ``np.argsort(-np.abs(a))``. A NaN counts as smaller than every magnitude (taken last, again lower index
  first), as in that argsort; -0.0 and +0.0 are equal. Cost O(d) expected: an introselect (random-pivot
  three-way quickselect, heapsort after 2·log2(d) bad rounds) finds the K-th largest magnitude T over
  the magnitudes at or above a threshold guessed from a 2,048-value sample (over all d for small d,
  large K or a bad guess; the result is the same), and one pass in index order keeps every |a_j| > T
  and the first |a_j| = T coordinates until K are kept, so the output is already sorted by index.
* ``randk:K`` keeps K distinct coordinates drawn uniformly from the thread's splitmix64 generator
  (runtime/_atomics.h ``lsh_splitmix64``) by a partial Fisher–Yates shuffle of a persistent scratch
  permutation: draw i swaps position i with i + ⌊x·(d − i) / 2^64⌋ (``lsh_bounded``), i = 0 … K−1, so one
  selection costs K draws and O(K log K) for sorting the K indices. The values may be multiplied by
  ``scale`` (d/K makes rand-k unbiased, E[Φ(a)] = a; leashed's specs use 1, as the simulator does).
* **Error memory** (error feedback, papers.md §5): with a per-thread memory e, a = e + g, Φ(a) is
  applied and e ← a − Φ(a). Selected coordinates become a_j − Φ(a)_j (exactly 0 unless scaled), the
  others keep a_j, so after every update (applied so far) + e = (sum of raw gradients), up to the
  rounding of the additions e + g: exactly for integer-valued gradients (the counter model) below 2^24.
* ``K = d`` is the dense gradient exactly: every coordinate, unchanged values, and the application
  θ_j − α·v_j is the dense update's arithmetic (float32 coefficient, float32 product).
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport fabsf, sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset

from leashed.runtime._atomics cimport lsh_bounded, lsh_load_f32_relaxed, lsh_splitmix64, lsh_store_f32_relaxed

cnp.import_array()

KIND_CODES = {"none": SPARSE_NONE, "topk": SPARSE_TOPK, "randk": SPARSE_RANDK}

ctypedef fused sortable_t:
    float
    int64_t


# ============================================================================ small sorting helpers
cdef inline void _swap(sortable_t *a, int64_t i, int64_t j) noexcept nogil:
    cdef sortable_t t = a[i]
    a[i] = a[j]
    a[j] = t


cdef void _insertion(sortable_t *a, int64_t lo, int64_t hi) noexcept nogil:
    """Sort a[lo..hi] (inclusive) ascending."""
    cdef int64_t i, j
    cdef sortable_t x
    for i in range(lo + 1, hi + 1):
        x = a[i]
        j = i - 1
        while j >= lo and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


cdef void _sift(sortable_t *base, int64_t root, int64_t n) noexcept nogil:
    cdef int64_t child
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and base[child] < base[child + 1]:
            child += 1
        if base[root] < base[child]:
            _swap(base, root, child)
            root = child
        else:
            return


cdef void _heapsort(sortable_t *a, int64_t lo, int64_t hi) noexcept nogil:
    """Sort a[lo..hi] (inclusive) ascending in O(n log n) worst case (the introsort / introselect fallback)."""
    cdef sortable_t *base = a + lo
    cdef int64_t n = hi - lo + 1, start, end
    if n < 2:
        return
    start = n // 2 - 1
    while start >= 0:
        _sift(base, start, n)
        start -= 1
    end = n - 1
    while end > 0:
        _swap(base, 0, end)
        _sift(base, 0, end)
        end -= 1


cdef inline int _depth_limit(int64_t n) noexcept nogil:
    cdef int depth = 4
    while n > 1:
        depth += 2
        n >>= 1
    return depth


cdef void _introsort_i64(int64_t *a, int64_t lo, int64_t hi, int depth) noexcept nogil:
    cdef int64_t i, j, mid
    cdef int64_t pivot
    while hi - lo >= 16:
        if depth == 0:
            _heapsort(a, lo, hi)
            return
        depth -= 1
        mid = lo + (hi - lo) // 2
        if a[mid] < a[lo]:
            _swap(a, mid, lo)
        if a[hi] < a[lo]:
            _swap(a, hi, lo)
        if a[hi] < a[mid]:
            _swap(a, hi, mid)
        pivot = a[mid]
        # Hoare partition: afterwards a[lo..j] <= pivot <= a[j+1..hi], both parts non-empty
        i = lo - 1
        j = hi + 1
        while True:
            i += 1
            while a[i] < pivot:
                i += 1
            j -= 1
            while a[j] > pivot:
                j -= 1
            if i >= j:
                break
            _swap(a, i, j)
        # recurse into the smaller part, loop on the larger one (stack depth O(log n))
        if j - lo < hi - j:
            _introsort_i64(a, lo, j, depth)
            lo = j + 1
        else:
            _introsort_i64(a, j + 1, hi, depth)
            hi = j
    _insertion(a, lo, hi)


cdef void sparse_sort_i64(int64_t *a, int64_t n) noexcept nogil:
    """Sort a[0..n) ascending in place (introsort: O(n log n) worst case, no allocation)."""
    if n > 1:
        _introsort_i64(a, 0, n - 1, _depth_limit(n))


# ============================================================================ selection kernels
cdef inline float _magnitude(float x) noexcept nogil:
    """|x|, and -1 for NaN (smaller than every magnitude: NaN coordinates are taken last)."""
    return fabsf(x) if x == x else <float>-1.0


cdef float sparse_kth_magnitude(float *mag, int64_t d, int64_t k) noexcept nogil:
    """The k-th largest (1-based) of mag[0..d), 1 <= k <= d, by introselect; expected O(d).

    mag holds non-NaN floats and is reordered in place so that mag[d-k] holds the result T, every entry
    before it is <= T and every entry after it is >= T (so all entries > T lie in mag[d-k+1..d)).
    Pivots are medians of three positions drawn from a fixed local splitmix64 stream (the result does not
    depend on them); the partition is three-way, so many equal entries (zeros) cost nothing extra."""
    cdef int64_t p = d - k, lo = 0, hi = d - 1, lt, gt, i, n
    cdef int depth = _depth_limit(d)
    cdef uint64_t state = 0x5851F42D4C957F2DULL ^ <uint64_t>d
    cdef float pivot, x, y, z, v
    while hi - lo >= 16:
        if depth == 0:
            _heapsort(mag, lo, hi)
            return mag[p]
        depth -= 1
        n = hi - lo + 1
        x = mag[lo + <int64_t>lsh_bounded(lsh_splitmix64(&state), <uint64_t>n)]
        y = mag[lo + <int64_t>lsh_bounded(lsh_splitmix64(&state), <uint64_t>n)]
        z = mag[lo + <int64_t>lsh_bounded(lsh_splitmix64(&state), <uint64_t>n)]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
        pivot = x if x > y else y  # median of the three
        # Dijkstra's three-way partition: [lo, lt) < pivot, [lt, gt] == pivot, (gt, hi] > pivot
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            v = mag[i]
            if v < pivot:
                mag[i] = mag[lt]
                mag[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                mag[i] = mag[gt]
                mag[gt] = v
                gt -= 1
            else:
                i += 1
        if p < lt:
            hi = lt - 1
        elif p > gt:
            lo = gt + 1
        else:
            return pivot
    _insertion(mag, lo, hi)
    return mag[p]


cdef enum:
    TOPK_SAMPLE = 2048  # magnitudes sampled to guess a threshold below the K-th largest
    TOPK_MIN_D = 8 * TOPK_SAMPLE  # smallest d for which sampling pays (with k <= d // 4)


cdef inline uint64_t _sample_seed(int64_t d) noexcept nogil:
    """The fixed splitmix64 state the top-k threshold sample of a d-vector starts from."""
    return 0x2545F4914F6CDD1DULL ^ <uint64_t>d


cdef float _sampled_threshold(const float *a, int64_t d, int64_t k, float *mag) noexcept nogil:
    """A guess t0 a little below the k-th largest magnitude of a[0..d): the r-th largest of TOPK_SAMPLE
    magnitudes at positions from a fixed splitmix64 stream, r the sample's expected count above the
    k-th largest plus a quarter plus 3 standard deviations plus 8 (so |a_j| >= t0 holds for about 1.25 k
    coordinates, and for fewer than k only with a tiny probability). Uses mag[0..TOPK_SAMPLE)."""
    cdef uint64_t state = _sample_seed(d)
    cdef int64_t i, r
    cdef double expected = <double>TOPK_SAMPLE * <double>k / <double>d
    for i in range(TOPK_SAMPLE):
        mag[i] = _magnitude(a[<int64_t>lsh_bounded(lsh_splitmix64(&state), <uint64_t>d)])
    r = <int64_t>(1.25 * expected + 3.0 * sqrt(expected) + 8.0)
    if r > TOPK_SAMPLE:
        r = TOPK_SAMPLE
    return sparse_kth_magnitude(mag, TOPK_SAMPLE, r)


cdef int64_t sparse_topk(const float *a, int64_t d, int64_t k, float *mag, int64_t *idx,
                         float *val) noexcept nogil:
    """Top-k of a[0..d) by magnitude, ties to the lower index (module docstring).

    Writes the k kept coordinates in increasing order to idx[0..k) and their values a[idx] to val[0..k);
    mag[0..d) is scratch. Returns k, or -1 if k is not in [1, d]. Expected O(d).

    The K-th largest magnitude T is found by introselect over the candidates |a_j| >= t0, a threshold
    guessed from a sample (_sampled_threshold), when there are at least k of them: every coordinate left
    out is below t0 <= T, so T and the count above T are those of the whole vector, and the result is
    the same as selecting over all d (only faster: one branch-free pass and a selection over about 1.25 k
    values instead of d). Too few candidates (a bad sample), small d or k > d/4: all d magnitudes."""
    cdef int64_t j, n = 0, n_gt = 0, n_eq = 0, need_eq, nc = 0, take, tie
    cdef float t, t0, m, x
    if k < 1 or k > d:
        return -1
    if k == d:
        for j in range(d):
            idx[j] = j
            val[j] = a[j]
        return d
    if d >= TOPK_MIN_D and k <= d // 4:
        t0 = _sampled_threshold(a, d, k, mag)
        for j in range(d):  # branch-free: write every magnitude, keep it by advancing nc
            m = _magnitude(a[j])
            mag[nc] = m
            nc += m >= t0
    if nc < k:
        nc = d
        for j in range(d):
            mag[j] = _magnitude(a[j])
    t = sparse_kth_magnitude(mag, nc, k)
    for j in range(nc - k + 1, nc):  # every magnitude > t lies here (sparse_kth_magnitude's layout)
        if mag[j] > t:
            n_gt += 1
    need_eq = k - n_gt  # >= 1: mag[nc-k] == t is one of the k largest
    for j in range(nc - k):  # ties with t left out of the k largest can only lie before mag[nc-k]
        n_eq += mag[j] == t
    if n_eq == 0:  # every coordinate with |a_j| == t is kept (the usual case): keep |a_j| >= t
        for j in range(d):
            x = a[j]
            idx[n] = j
            val[n] = x
            n += _magnitude(x) >= t
            if n == k:
                break
        return n
    for j in range(d):  # more ties than places: keep m > t, and m == t while places are left
        x = a[j]
        m = _magnitude(x)
        tie = m == t
        take = (m > t) | (tie & (need_eq > 0))
        need_eq -= take & tie
        idx[n] = j
        val[n] = x
        n += take
        if n == k:
            break
    return n


cdef void sparse_perm_init(int64_t *perm, int64_t d) noexcept nogil:
    """perm[j] = j: the starting state of a thread's rand-k permutation scratch."""
    cdef int64_t j
    for j in range(d):
        perm[j] = j


cdef int64_t sparse_randk(int64_t d, int64_t k, uint64_t *rng, int64_t *perm,
                          int64_t *idx) noexcept nogil:
    """k distinct coordinates of 0..d-1, uniformly at random, into idx[0..k) in increasing order.

    Partial Fisher–Yates on perm (a permutation of 0..d-1, left a permutation): for i = 0 … k−1, swap
    perm[i] and perm[i + lsh_bounded(lsh_splitmix64(rng), d − i)]; the chosen set is perm[0..k). Exactly k
    draws per call. Returns k, or -1 if k is not in [1, d]."""
    cdef int64_t i, j, tmp
    if k < 1 or k > d:
        return -1
    for i in range(k):
        j = i + <int64_t>lsh_bounded(lsh_splitmix64(rng), <uint64_t>(d - i))
        tmp = perm[i]
        perm[i] = perm[j]
        perm[j] = tmp
        idx[i] = perm[i]
    sparse_sort_i64(idx, k)
    return k


cdef void sparse_gather(const float *a, const int64_t *idx, int64_t k, float scale,
                        float *val) noexcept nogil:
    """val[i] = scale · a[idx[i]] (scale 1 copies exactly)."""
    cdef int64_t i
    for i in range(k):
        val[i] = scale * a[idx[i]]


cdef int64_t sparse_select(int kind, const float *g, int64_t d, int64_t k, float *memory, float scale,
                           uint64_t *rng, float *mag, int64_t *perm, int64_t *idx,
                           float *val) noexcept nogil:
    """Φ of papers.md §5 on one gradient g[0..d), with optional error memory; the per-gradient entry point.

    kind SPARSE_TOPK (needs mag; scale is ignored: top-k values are never scaled) or SPARSE_RANDK (needs
    rng and perm; values times scale). memory NULL: select from g. Otherwise memory ← memory + g, select
    from it, and memory[idx] ← memory[idx] − val (the error feedback e ← a − Φ(a)). g is not modified.
    Writes the kept coordinates (increasing) and values to idx[0..k), val[0..k); returns k, or -1 for an
    unknown kind, k outside [1, d] or missing scratch (nothing is modified then)."""
    cdef const float *a = g
    cdef int64_t i, j, n
    if k < 1 or k > d:
        return -1
    if kind == SPARSE_TOPK:
        if mag == NULL:
            return -1
    elif kind == SPARSE_RANDK:
        if rng == NULL or perm == NULL:
            return -1
    else:
        return -1
    if memory != NULL:
        for j in range(d):
            memory[j] = memory[j] + g[j]
        a = memory
    if kind == SPARSE_TOPK:
        n = sparse_topk(a, d, k, mag, idx, val)
    else:
        n = sparse_randk(d, k, rng, perm, idx)
        sparse_gather(a, idx, n, scale, val)
    if memory != NULL:
        for i in range(n):
            j = idx[i]
            memory[j] = memory[j] - val[i]
    return n


# ============================================================================ application kernels
cdef void sparse_apply(float *theta, const int64_t *idx, const float *val, int64_t k,
                       float alpha) noexcept nogil:
    """θ[idx[i]] ← θ[idx[i]] − α·val[i] in place (lock, seq: the caller owns θ)."""
    cdef int64_t i, j
    for i in range(k):
        j = idx[i]
        theta[j] = theta[j] - alpha * val[i]


cdef void sparse_apply_relaxed(float *theta, const int64_t *idx, const float *val, int64_t k,
                               float alpha) noexcept nogil:
    """As sparse_apply with relaxed atomic element loads and stores (HOGWILD!, architecture.md: racing
    updates may be lost, but every access is defined behaviour in C11)."""
    cdef int64_t i, j
    for i in range(k):
        j = idx[i]
        lsh_store_f32_relaxed(&theta[j], lsh_load_f32_relaxed(&theta[j]) - alpha * val[i])


cdef void sparse_copy_apply(float *dst, const float *src, int64_t d, const int64_t *idx, const float *val,
                            int64_t k, float alpha) noexcept nogil:
    """dst ← src, then dst[idx[i]] ← dst[idx[i]] − α·val[i] (Leashed-SGD: build the new vector from the
    pinned latest one; the copy stays dense, only k coordinates change)."""
    memcpy(dst, src, <size_t>d * sizeof(float))
    sparse_apply(dst, idx, val, k, alpha)


cdef void sparse_scatter(float *out, int64_t d, const int64_t *idx, const float *val,
                         int64_t k) noexcept nogil:
    """out ← 0, then out[idx[i]] ← val[i]: the dense form of a sparse gradient (sync's stripes sum dense
    gradients; zeros add exactly, so the round's update equals the simulator's)."""
    cdef int64_t i
    memset(out, 0, <size_t>d * sizeof(float))
    for i in range(k):
        out[idx[i]] = val[i]


# ============================================================================ Python wrappers
def _f32(a, name):
    arr = np.ascontiguousarray(a, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array, got shape {arr.shape}")
    return arr


def _check_k(k, d):
    if not 1 <= k <= d:
        raise ValueError(f"k must be in [1, {d}], not {k}")


def _check_indices(idx, d):
    arr = np.ascontiguousarray(idx, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"indices must be a 1-d array, got shape {arr.shape}")
    if len(arr) and (arr.min() < 0 or arr.max() >= d):
        raise ValueError(f"indices must lie in [0, {d})")
    return arr


def _writable_f32(a, name):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 1 \
            or not a.flags.c_contiguous or not a.flags.writeable:
        raise TypeError(f"{name} must be a writable, contiguous 1-d float32 array (it is updated in place)")
    return a


def kth_magnitude(a, k):
    """The k-th largest |a_j| (NaN counted as -1), by the introselect of the kernels."""
    cdef float[::1] mag = np.abs(_f32(a, "a"))
    cdef int64_t d = mag.shape[0], kk = k
    cdef float out
    _check_k(kk, d)
    arr = np.asarray(mag)
    arr[np.isnan(arr)] = -1.0
    with nogil:
        out = sparse_kth_magnitude(&mag[0], d, kk)
    return float(out)


def topk(a, k):
    """(indices int64[k] increasing, values float32[k]) of the k largest |a_j|; ties: lower index."""
    cdef const float[::1] av = _f32(a, "a")
    cdef int64_t d = av.shape[0], kk = k
    _check_k(kk, d)
    idx = np.empty(kk, dtype=np.int64)
    val = np.empty(kk, dtype=np.float32)
    cdef float[::1] mag = np.empty(d, dtype=np.float32)
    cdef int64_t[::1] iv = idx
    cdef float[::1] vv = val
    with nogil:
        sparse_topk(&av[0], d, kk, &mag[0], &iv[0], &vv[0])
    return idx, val


TOPK_SAMPLE_SIZE = TOPK_SAMPLE
#: top-k samples a threshold only when d >= TOPK_SAMPLED_MIN_D and k <= d // 4
TOPK_SAMPLED_MIN_D = TOPK_MIN_D


def topk_sample_positions(d):
    """The TOPK_SAMPLE_SIZE positions (with repeats) whose magnitudes sparse_topk samples for a d-vector
    (for tests that build inputs on which the guessed threshold is too high)."""
    cdef uint64_t state = _sample_seed(d)
    out = np.empty(TOPK_SAMPLE, dtype=np.int64)
    cdef int64_t[::1] ov = out
    cdef int64_t i
    for i in range(TOPK_SAMPLE):
        ov[i] = <int64_t>lsh_bounded(lsh_splitmix64(&state), <uint64_t>d)
    return out


def splitmix64(state):
    """One step of lsh_splitmix64: (output, new state), both Python ints in [0, 2^64)."""
    cdef uint64_t s = <uint64_t>(int(state) & 0xFFFFFFFFFFFFFFFF)
    cdef uint64_t x = lsh_splitmix64(&s)
    return int(x), int(s)


def bounded(x, n):
    """lsh_bounded: ⌊x·n / 2^64⌋, a number in [0, n)."""
    return int(lsh_bounded(<uint64_t>(int(x) & 0xFFFFFFFFFFFFFFFF), <uint64_t>int(n)))


def randk(n_params, k, state, perm=None):
    """(indices int64[k] increasing, new state, perm): k distinct coordinates of 0..n_params-1 from the
    splitmix64 ``state``. ``perm`` is the thread's permutation scratch (int64, updated in place; a fresh
    identity permutation if None)."""
    cdef int64_t d = n_params, kk = k
    cdef uint64_t s = <uint64_t>(int(state) & 0xFFFFFFFFFFFFFFFF)
    _check_k(kk, d)
    if perm is None:
        perm = np.arange(d, dtype=np.int64)
    elif not (isinstance(perm, np.ndarray) and perm.dtype == np.int64 and perm.shape == (d,)
              and perm.flags.c_contiguous and perm.flags.writeable):
        raise TypeError(f"perm must be a writable, contiguous int64 array of length {d}")
    cdef int64_t[::1] pv = perm
    idx = np.empty(kk, dtype=np.int64)
    cdef int64_t[::1] iv = idx
    with nogil:
        sparse_randk(d, kk, &s, &pv[0], &iv[0])
    return idx, int(s), perm


def sort_i64(a):
    """A sorted copy of an int64 array, by the kernels' introsort (for tests)."""
    out = np.array(a, dtype=np.int64, copy=True).ravel()
    cdef int64_t[::1] ov = out
    if len(out):
        with nogil:
            sparse_sort_i64(&ov[0], ov.shape[0])
    return out


def apply(theta, idx, val, alpha, relaxed=False):
    """θ[idx] −= float32(alpha)·val in place (``theta`` a writable float32 array); returns θ.
    ``relaxed`` uses the HOGWILD! kernel (relaxed atomic element loads and stores)."""
    _writable_f32(theta, "theta")
    cdef float[::1] tv = theta
    cdef int64_t[::1] iv = _check_indices(idx, tv.shape[0])
    cdef const float[::1] vv = _f32(val, "val")
    cdef float a = alpha
    if iv.shape[0] != vv.shape[0]:
        raise ValueError("indices and values differ in length")
    cdef bint rel = relaxed
    if iv.shape[0]:
        with nogil:
            if rel:
                sparse_apply_relaxed(&tv[0], &iv[0], &vv[0], iv.shape[0], a)
            else:
                sparse_apply(&tv[0], &iv[0], &vv[0], iv.shape[0], a)
    return theta


def copy_apply(dst, src, idx, val, alpha):
    """dst ← src with dst[idx] −= float32(alpha)·val (Leashed-SGD's build of a new vector); returns dst."""
    _writable_f32(dst, "dst")
    cdef float[::1] dv = dst
    cdef const float[::1] sv = _f32(src, "src")
    if sv.shape[0] != dv.shape[0]:
        raise ValueError("dst and src differ in length")
    cdef int64_t[::1] iv = _check_indices(idx, dv.shape[0])
    cdef const float[::1] vv = _f32(val, "val")
    cdef float a = alpha
    if iv.shape[0] != vv.shape[0]:
        raise ValueError("indices and values differ in length")
    if dv.shape[0]:
        with nogil:
            sparse_copy_apply(&dv[0], &sv[0], dv.shape[0], &iv[0] if iv.shape[0] else NULL,
                              &vv[0] if vv.shape[0] else NULL, iv.shape[0], a)
    return dst


def densify(idx, val, n_params):
    """The dense float32 vector with val at idx and zeros elsewhere (the sparse_scatter kernel)."""
    out = np.empty(n_params, dtype=np.float32)
    cdef float[::1] ov = out
    cdef int64_t[::1] iv = _check_indices(idx, n_params)
    cdef const float[::1] vv = _f32(val, "val")
    if iv.shape[0] != vv.shape[0]:
        raise ValueError("indices and values differ in length")
    if ov.shape[0]:
        with nogil:
            sparse_scatter(&ov[0], ov.shape[0], &iv[0] if iv.shape[0] else NULL,
                           &vv[0] if vv.shape[0] else NULL, iv.shape[0])
    return out


cdef class Sparsifier:
    """One thread's sparsifier: kind, k, optional error memory, splitmix64 state and its scratch.

    ``Sparsifier("topk", d, k)`` / ``Sparsifier("randk", d, k, seed=s, scale=d / k)``; calling it on a
    gradient returns fresh ``(indices, values)`` arrays (the kernel's output, sorted by index) and updates
    the memory and generator state exactly as a worker thread does with ``sparse_select``."""

    cdef readonly str kind
    cdef readonly int64_t n_params
    cdef readonly int64_t k
    cdef readonly float scale
    cdef int code
    cdef uint64_t rng
    cdef object _mag, _perm, _idx, _val, _memory

    def __init__(self, str kind, int64_t n_params, int64_t k, bint memory=False, seed=0, float scale=1.0):
        if kind not in ("topk", "randk"):
            raise ValueError(f"kind must be 'topk' or 'randk', not {kind!r}")
        _check_k(k, n_params)
        self.kind = kind
        self.code = KIND_CODES[kind]
        self.n_params = n_params
        self.k = k
        self.scale = scale
        self.rng = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self._mag = np.empty(n_params, dtype=np.float32) if kind == "topk" else None
        self._perm = np.arange(n_params, dtype=np.int64) if kind == "randk" else None
        self._idx = np.empty(k, dtype=np.int64)
        self._val = np.empty(k, dtype=np.float32)
        self._memory = np.zeros(n_params, dtype=np.float32) if memory else None

    @property
    def memory(self):
        """The error memory e (float32[d], live view), or None without memory."""
        return self._memory

    @property
    def rng_state(self):
        """The splitmix64 state (rand-k)."""
        return int(self.rng)

    @property
    def perm(self):
        """The rand-k permutation scratch (live view), or None for top-k."""
        return self._perm

    def __call__(self, g):
        """(indices, values) of Φ(g) (Φ(e + g) with memory); updates the memory and the generator."""
        cdef const float[::1] gv = _f32(g, "g")
        if gv.shape[0] != self.n_params:
            raise ValueError(f"gradient has {gv.shape[0]} entries, the sparsifier expects {self.n_params}")
        cdef float[::1] mag
        cdef int64_t[::1] perm
        cdef float[::1] mem
        cdef int64_t[::1] iv = self._idx
        cdef float[::1] vv = self._val
        cdef float *magp = NULL
        cdef int64_t *permp = NULL
        cdef float *memp = NULL
        cdef int64_t n
        if self._mag is not None:
            mag = self._mag
            magp = &mag[0]
        if self._perm is not None:
            perm = self._perm
            permp = &perm[0]
        if self._memory is not None:
            mem = self._memory
            memp = &mem[0]
        with nogil:
            n = sparse_select(self.code, &gv[0], self.n_params, self.k, memp, self.scale, &self.rng, magp,
                              permp, &iv[0], &vv[0])
        if n != self.k:  # pragma: no cover - the constructor validated everything
            raise RuntimeError("sparse_select rejected its arguments")
        return self._idx.copy(), self._val.copy()

    def dense(self, g):
        """Φ(g) as a dense float32 vector (zeros outside the kept coordinates)."""
        idx, val = self(g)
        return densify(idx, val, self.n_params)
