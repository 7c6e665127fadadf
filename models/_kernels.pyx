# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""nogil loss-and-gradient kernels of the flat-parameter models (softmax, MLP, CNN, counter, quadratic).

Every model is a layout over one flat float32 vector ``theta``. A :class:`BoundModel` (model + training
set + batch size) exposes a ``leashed_model_t`` (models/model_abi.h) whose ``loss_grad`` is ``noexcept
nogil``, allocates nothing, and writes only into ``grad`` and the caller's workspace of ``work_floats``
floats, so any number of threads may call it at once, one workspace each.

Maths (softmax, mlp, cnn): loss = mean over the batch of the softmax cross-entropy, computed with the
log-sum-exp shift; gradient of that mean. Matrix products are row-major single-precision GEMMs through
``scipy.linalg.cython_blas.sgemm`` (row-major C = A B is the column-major call C^T = B^T A^T).
Layouts (row-major blocks, in this order):

* dense layer ``fc{k}``: ``W`` (fan_in, fan_out), then ``b`` (fan_out,); y = x W + b.
* cnn: ``conv1.W`` (3, 3, cin, 4) HWIO, ``conv1.b`` (4,), ``conv2.W`` (3, 3, 4, 8), ``conv2.b`` (8,), then the
  dense stack on the pooled features flattened in (h, w, c) order. Input rows are (cin, h, w) (CHW).
  Convolutions are valid, stride 1, via im2col (columns ordered ky, kx, c) + GEMM; activations are NHWC;
  max-pooling is 2x2 stride 2 with floor, ties go to the first maximum in (dy, dx) row-major order.
* counter: ``theta`` (d,); loss = -mean(theta) = -sum(theta)/d; the "gradient" written is exactly -1 in every
  coordinate, i.e. d times the true gradient of that loss (so N updates with lr 1 make every parameter N and
  the loss -N); it ignores the data.
* quadratic: ``w`` (d,); loss = 0.5 * mean_i (x_i . w - y_i)^2, gradient = mean_i (x_i . w - y_i) x_i.
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport expf, log
from libc.stdint cimport int32_t, int64_t, intptr_t
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dsdot, saxpy, sgemm

from leashed.errors import DataError, SpecError

cnp.import_array()

# Small C helpers, verbatim into the generated C: software prefetch (which Cython cannot spell) and the
# element-wise backward passes with restrict-qualified pointers, so that -O3 vectorises them without
# -march (SSE2) and without run-time alias checks. Every value loaded unconditionally: a conditional load
# (Cython's ``t[i] if a[i] > 0 else 0``) compiles to a branch, mispredicted half the time on ReLU masks.
cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    static inline void leashed_prefetch_range(const void *p, size_t bytes) {
        const char *c = (const char *)p;
        size_t k;
        for (k = 0; k < bytes; k += 64) __builtin_prefetch(c + k, 0, 3);
        __builtin_prefetch(c + bytes - 1, 0, 3);
    }
    /* out[j] = sum_i d[i, j], rows added in order (contiguous, vectorised across j) */
    static inline void leashed_col_sum(const float *restrict d, int64_t n, int64_t w, float *restrict out) {
        int64_t i, j;
        memset(out, 0, (size_t)w * sizeof(float));
        for (i = 0; i < n; i++) {
            const float *restrict r = d + i * w;
            for (j = 0; j < w; j++) out[j] += r[j];
        }
    }
    /* back through a ReLU whose output was a: a := (a > 0 ? t : 0), and bsum := column sums of the new a
       (the bias gradient of the layer below), in one pass */
    static inline void leashed_relu_back_col_sum(float *restrict a, const float *restrict t, int64_t n,
                                                 int64_t w, float *restrict bsum) {
        int64_t i, j;
        memset(bsum, 0, (size_t)w * sizeof(float));
        for (i = 0; i < n; i++) {
            float *restrict ar = a + i * w;
            const float *restrict tr = t + i * w;
            for (j = 0; j < w; j++) {
                float tv = tr[j];
                float v = ar[j] > 0.0f ? tv : 0.0f;
                ar[j] = v;
                bsum[j] += v;
            }
        }
    }
    """
    void prefetch_range "leashed_prefetch_range"(const void *p, size_t nbytes) noexcept nogil
    void col_sum "leashed_col_sum"(const float *d, int64_t n, int64_t w, float *out) noexcept nogil
    void relu_back_col_sum "leashed_relu_back_col_sum"(float *a, const float *t, int64_t n, int64_t w,
                                                        float *bsum) noexcept nogil

# The ABI struct (models/model_abi.h), under a private Cython name so that this module compiles whether
# or not Cython finds _kernels.pxd (which declares the same C struct as leashed_model_t for siblings).
cdef extern from "model_abi.h":
    cdef struct _abi_s "leashed_model_s":
        double (*loss_grad)(const _abi_s *self, const float *theta, const int64_t *rows,
                            int64_t n, float *grad, float *work) noexcept nogil
        void *ctx
        int64_t n_params
        int64_t work_floats
        int64_t batch_size
        int64_t n_rows
    ctypedef _abi_s abi_t "leashed_model_t"


# Model kinds (kernel_ctx_t.kind).
cdef enum:
    KIND_DENSE = 1       # softmax regression and MLP: a stack of dense layers
    KIND_CNN = 2         # conv3x3 -> ReLU -> pool2 -> conv3x3 -> ReLU -> pool2 -> dense stack
    KIND_COUNTER = 3     # gradient of every coordinate is -1
    KIND_QUADRATIC = 4   # least squares, no bias


# Everything a kernel needs: layout of the flat parameter vector and (once bound) the data.
ctypedef struct kernel_ctx_t:
    int kind
    int64_t n_params
    int64_t n_features
    int64_t n_classes
    # dense stack (softmax, mlp, and the FC part of cnn): layer l maps width[l] -> width[l+1]; its weight
    # is a width[l] x width[l+1] row-major block at w_off[l], its bias width[l+1] floats at b_off[l]
    int64_t n_layers
    int64_t width[33]
    int64_t w_off[32]
    int64_t b_off[32]
    # cnn: input cin x h x w (CHW rows), conv1 cin->c1, conv2 c1->c2, weights HWIO (3, 3, in, out)
    int64_t cin, h, w, c1, c2
    int64_t h1, w1, ph1, pw1, h2, w2, ph2, pw2
    int64_t conv1_w, conv1_b, conv2_w, conv2_b
    # bound data (NULL in an unbound Model)
    const float *X
    const int32_t *yi
    const float *yf
    int64_t n_rows

MAX_DENSE_LAYERS = 32

cdef enum:
    GATHER_AHEAD = 2  # rows prefetched ahead in the MLP's batch gather

# --------------------------------------------------------------------------------------------------------
# small nogil helpers
# --------------------------------------------------------------------------------------------------------

cdef inline void gemm_rm(bint ta, bint tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                         float *C, int64_t ldc) noexcept nogil:
    """Row-major C (M x N) = alpha op(A) op(B) + beta C, as the column-major C^T = op(B)^T op(A)^T."""
    cdef char transa = b'T' if tb else b'N'
    cdef char transb = b'T' if ta else b'N'
    cdef int m = <int>N, n = <int>M, k = <int>K, la = <int>ldb, lb = <int>lda, lc = <int>ldc
    sgemm(&transa, &transb, &m, &n, &k, &alpha, <float *>B, &la, <float *>A, &lb, &beta, C, &lc)


cdef inline int64_t bump(int64_t *cur, int64_t count) noexcept nogil:
    """Reserve count floats (rounded up to 16 = 64 bytes) in a workspace; returns the offset."""
    cdef int64_t off = cur[0]
    cur[0] = off + ((count + 15) & ~(<int64_t>15))
    return off


cdef inline void bias_relu(float *a, const float *b, int64_t n, int64_t w, bint relu) noexcept nogil:
    """a[i, :] += b, then ReLU in place if relu (one fused pass)."""
    cdef int64_t i, j
    cdef float v
    cdef float *r
    for i in range(n):
        r = a + i * w
        if relu:
            for j in range(w):
                v = r[j] + b[j]
                r[j] = 0.0 if v <= 0.0 else v  # keeps NaN (divergence must show in the loss)
        else:
            for j in range(w):
                r[j] = r[j] + b[j]


cdef double softmax_xent(float *z, int64_t n, int64_t C, const int32_t *labels, const int64_t *rows,
                         bint grad, int64_t *correct) noexcept nogil:
    """Mean cross-entropy of logits z (n x C); if grad, z := d(mean loss)/dz; counts argmax hits."""
    cdef int64_t i, j, am, lab, hits = 0
    cdef float m, e, zl
    cdef double s, loss = 0.0
    cdef float inv_n = 1.0 / <float>n
    cdef float scale
    cdef float *r
    for i in range(n):
        r = z + i * C
        lab = labels[rows[i] if rows != NULL else i]
        m = r[0]
        if correct != NULL:
            am = 0
            for j in range(1, C):
                if r[j] > m:
                    m = r[j]
                    am = j
            hits += (am == lab)
        else:  # no argmax wanted (training): branch-free maximum, same value as the loop above
            for j in range(1, C):
                e = r[j]
                m = e if e > m else m
        zl = r[lab]
        s = 0.0
        for j in range(C):
            e = expf(r[j] - m)
            r[j] = e
            s += e
        loss += log(s) - <double>(zl - m)
        if grad:
            scale = <float>(1.0 / s) * inv_n
            for j in range(C):
                r[j] = r[j] * scale
            r[lab] -= inv_n
    if correct != NULL:
        correct[0] += hits
    return loss / <double>n


# --------------------------------------------------------------------------------------------------------
# dense stack (softmax regression, MLP, and the fully connected part of the CNN)
# --------------------------------------------------------------------------------------------------------

ctypedef struct dense_plan_t:
    int64_t act[33]     # workspace offsets of the layer outputs 1..L (act[0] is the input, external)
    int64_t tmp         # backward scratch, n x max hidden width


cdef void dense_plan(const kernel_ctx_t *c, int64_t n, bint grad, int64_t *cur, dense_plan_t *p) noexcept nogil:
    cdef int64_t l, L = c.n_layers, maxw = 0
    for l in range(1, L + 1):
        p.act[l] = bump(cur, n * c.width[l])
    p.tmp = 0
    if grad and L > 1:
        for l in range(1, L):
            if c.width[l] > maxw:
                maxw = c.width[l]
        p.tmp = bump(cur, n * maxw)


cdef double dense_core(const kernel_ctx_t *c, const float *theta, const float *inp, int64_t n,
                       const int32_t *labels, const int64_t *rows, float *grad, float *work,
                       const dense_plan_t *p, float *d_inp, int64_t *correct) noexcept nogil:
    """Forward (ReLU between layers) + softmax cross-entropy; backward into grad and d_inp if given."""
    cdef int64_t l, L = c.n_layers, fi, fo
    cdef float *act[33]
    cdef float *tmp = work + p.tmp
    cdef const float *W
    cdef double loss
    act[0] = <float *>inp
    for l in range(1, L + 1):
        act[l] = work + p.act[l]
    for l in range(L):
        fi = c.width[l]
        fo = c.width[l + 1]
        gemm_rm(False, False, n, fo, fi, 1.0, act[l], fi, theta + c.w_off[l], fo, 0.0, act[l + 1], fo)
        bias_relu(act[l + 1], theta + c.b_off[l], n, fo, l < L - 1)
    loss = softmax_xent(act[L], n, c.width[L], labels, rows, grad != NULL, correct)
    if grad == NULL:
        return loss
    # act[l + 1] now holds the delta of layer l's output
    l = L - 1
    while l >= 0:
        fi = c.width[l]
        fo = c.width[l + 1]
        W = theta + c.w_off[l]
        gemm_rm(True, False, fi, fo, n, 1.0, act[l], fi, act[l + 1], fo, 0.0, grad + c.w_off[l], fo)
        if l == L - 1:  # the bias gradients of the layers below come out of relu_back_col_sum
            col_sum(act[l + 1], n, fo, grad + c.b_off[l])
        if l > 0:
            gemm_rm(False, True, n, fi, fo, 1.0, act[l + 1], fo, W, fo, 0.0, tmp, fi)
            relu_back_col_sum(act[l], tmp, n, fi, grad + c.b_off[l - 1])
        elif d_inp != NULL:
            gemm_rm(False, True, n, fi, fo, 1.0, act[l + 1], fo, W, fo, 0.0, d_inp, fi)
        l -= 1
    return loss


cdef int64_t mlp_work(const kernel_ctx_t *c, int64_t n, bint grad) noexcept nogil:
    cdef int64_t cur = 0
    cdef dense_plan_t p
    bump(&cur, n * c.n_features)
    dense_plan(c, n, grad, &cur, &p)
    bump(&cur, n)  # the batch's labels (int32)
    return cur


cdef double mlp_loss(const kernel_ctx_t *c, const float *theta, const float *X, const int32_t *labels,
                     const int64_t *rows, int64_t n, float *grad, float *work, int64_t *correct) noexcept nogil:
    """Dense stack on rows of X (rows NULL: the first n rows of X, used in place)."""
    cdef int64_t cur = 0, i, D = c.n_features
    cdef dense_plan_t p
    cdef int64_t xb = bump(&cur, n * D)
    cdef int32_t *lab
    dense_plan(c, n, grad != NULL, &cur, &p)
    if rows == NULL:
        return dense_core(c, theta, X, n, labels, NULL, grad, work, &p, NULL, correct)
    # Gather the batch (rows and labels) into the workspace. The rows are random lines of a large array,
    # mostly not in cache: prefetch the rows GATHER_AHEAD ahead so that several are in flight at once,
    # and copy the labels now so that the loss reads them contiguously instead of missing once per row.
    lab = <int32_t *>(work + bump(&cur, n))
    for i in range(min(n, GATHER_AHEAD)):
        prefetch_range(X + rows[i] * D, D * sizeof(float))
    for i in range(n):
        if i + GATHER_AHEAD < n:
            prefetch_range(X + rows[i + GATHER_AHEAD] * D, D * sizeof(float))
        lab[i] = labels[rows[i]]
        memcpy(work + xb + i * D, X + rows[i] * D, D * sizeof(float))
    return dense_core(c, theta, work + xb, n, lab, NULL, grad, work, &p, NULL, correct)


# --------------------------------------------------------------------------------------------------------
# CNN
# --------------------------------------------------------------------------------------------------------

ctypedef struct cnn_plan_t:
    int64_t col1, a1, p1, col2, a2, p2, dp2, da2, dp1, da1
    dense_plan_t dense


cdef void cnn_plan(const kernel_ctx_t *c, int64_t n, bint grad, int64_t *cur, cnn_plan_t *p) noexcept nogil:
    cdef int64_t P1 = n * c.h1 * c.w1, Q1 = n * c.ph1 * c.pw1, P2 = n * c.h2 * c.w2, Q2 = n * c.ph2 * c.pw2
    p.col1 = bump(cur, P1 * 9 * c.cin)
    p.a1 = bump(cur, P1 * c.c1)
    p.p1 = bump(cur, Q1 * c.c1)
    p.col2 = bump(cur, P2 * 9 * c.c1)
    p.a2 = bump(cur, P2 * c.c2)
    p.p2 = bump(cur, Q2 * c.c2)
    dense_plan(c, n, grad, cur, &p.dense)
    if grad:
        p.dp2 = bump(cur, Q2 * c.c2)
        p.da2 = bump(cur, P2 * c.c2)
        p.dp1 = bump(cur, Q1 * c.c1)
        p.da1 = bump(cur, P1 * c.c1)


cdef int64_t cnn_work(const kernel_ctx_t *c, int64_t n, bint grad) noexcept nogil:
    cdef int64_t cur = 0
    cdef cnn_plan_t p
    cnn_plan(c, n, grad, &cur, &p)
    return cur


cdef void maxpool(const float *a, int64_t n, int64_t H, int64_t W, int64_t C, float *out) noexcept nogil:
    """2x2 stride-2 max pooling with floor, NHWC."""
    cdef int64_t s, py, px, ch, PH = H // 2, PW = W // 2
    cdef const float *r0
    cdef const float *r1
    cdef float *o
    cdef float m
    for s in range(n):
        for py in range(PH):
            for px in range(PW):
                r0 = a + ((s * H + 2 * py) * W + 2 * px) * C
                r1 = r0 + W * C
                o = out + ((s * PH + py) * PW + px) * C
                for ch in range(C):
                    m = r0[ch]
                    if r0[C + ch] > m:
                        m = r0[C + ch]
                    if r1[ch] > m:
                        m = r1[ch]
                    if r1[C + ch] > m:
                        m = r1[C + ch]
                    o[ch] = m


cdef void maxpool_back(const float *a, int64_t n, int64_t H, int64_t W, int64_t C, const float *dout,
                       float *da) noexcept nogil:
    """da (NHWC, like a) := gradient routed to the first maximum of each window, through the ReLU that
    produced a (a maximum equal to 0 passes nothing)."""
    cdef int64_t s, py, px, ch, PH = H // 2, PW = W // 2, base, k, best
    cdef int64_t off[4]
    cdef float m
    memset(da, 0, n * H * W * C * sizeof(float))
    off[0] = 0
    off[1] = C
    off[2] = W * C
    off[3] = W * C + C
    for s in range(n):
        for py in range(PH):
            for px in range(PW):
                base = ((s * H + 2 * py) * W + 2 * px) * C
                for ch in range(C):
                    best = base + ch
                    m = a[best]
                    for k in range(1, 4):
                        if a[base + off[k] + ch] > m:
                            best = base + off[k] + ch
                            m = a[best]
                    if m > 0.0:
                        da[best] = dout[((s * PH + py) * PW + px) * C + ch]


cdef void im2col_nhwc(const float *a, int64_t n, int64_t H, int64_t W, int64_t C, float *col) noexcept nogil:
    """col[(s, oy, ox), (ky, kx, c)] = a[s, oy + ky, ox + kx, c] for a valid 3x3 convolution."""
    cdef int64_t s, oy, ox, ky, OH = H - 2, OW = W - 2, K = 9 * C
    cdef float *dst
    for s in range(n):
        for oy in range(OH):
            for ox in range(OW):
                dst = col + ((s * OH + oy) * OW + ox) * K
                for ky in range(3):
                    memcpy(dst + ky * 3 * C, a + ((s * H + oy + ky) * W + ox) * C, 3 * C * sizeof(float))


cdef void col2im_nhwc(const float *col, int64_t n, int64_t H, int64_t W, int64_t C, float *da) noexcept nogil:
    """Adjoint of im2col_nhwc: da := sum of the column entries that read each input element."""
    cdef int64_t s, oy, ox, ky, j, OH = H - 2, OW = W - 2, K = 9 * C
    cdef const float *src
    cdef float *dst
    memset(da, 0, n * H * W * C * sizeof(float))
    for s in range(n):
        for oy in range(OH):
            for ox in range(OW):
                src = col + ((s * OH + oy) * OW + ox) * K
                for ky in range(3):
                    dst = da + ((s * H + oy + ky) * W + ox) * C
                    for j in range(3 * C):
                        dst[j] += src[ky * 3 * C + j]


cdef double cnn_loss(const kernel_ctx_t *c, const float *theta, const float *X, const int32_t *labels,
                     const int64_t *rows, int64_t n, float *grad, float *work, int64_t *correct) noexcept nogil:
    cdef int64_t cur = 0, s, oy, ox, ky, kx, ch, r
    cdef cnn_plan_t p
    cdef int64_t D = c.n_features, cin = c.cin, H = c.h, W = c.w, HW = c.h * c.w
    cdef int64_t P1 = n * c.h1 * c.w1, P2 = n * c.h2 * c.w2, K1 = 9 * c.cin, K2 = 9 * c.c1
    cdef const float *x
    cdef float *dst
    cdef float *col1
    cdef float *a1
    cdef float *p1
    cdef float *col2
    cdef float *a2
    cdef float *p2
    cdef double loss
    cnn_plan(c, n, grad != NULL, &cur, &p)
    col1 = work + p.col1
    a1 = work + p.a1
    p1 = work + p.p1
    col2 = work + p.col2
    a2 = work + p.a2
    p2 = work + p.p2
    # im2col of the CHW input rows, columns (ky, kx, c)
    for s in range(n):
        r = rows[s] if rows != NULL else s
        x = X + r * D
        for oy in range(c.h1):
            for ox in range(c.w1):
                dst = col1 + ((s * c.h1 + oy) * c.w1 + ox) * K1
                for ky in range(3):
                    for kx in range(3):
                        for ch in range(cin):
                            dst[(ky * 3 + kx) * cin + ch] = x[ch * HW + (oy + ky) * W + ox + kx]
    gemm_rm(False, False, P1, c.c1, K1, 1.0, col1, K1, theta + c.conv1_w, c.c1, 0.0, a1, c.c1)
    bias_relu(a1, theta + c.conv1_b, P1, c.c1, True)
    maxpool(a1, n, c.h1, c.w1, c.c1, p1)
    im2col_nhwc(p1, n, c.ph1, c.pw1, c.c1, col2)
    gemm_rm(False, False, P2, c.c2, K2, 1.0, col2, K2, theta + c.conv2_w, c.c2, 0.0, a2, c.c2)
    bias_relu(a2, theta + c.conv2_b, P2, c.c2, True)
    maxpool(a2, n, c.h2, c.w2, c.c2, p2)
    if grad == NULL:
        return dense_core(c, theta, p2, n, labels, rows, NULL, work, &p.dense, NULL, correct)
    loss = dense_core(c, theta, p2, n, labels, rows, grad, work, &p.dense, work + p.dp2, correct)
    # conv2 block
    maxpool_back(a2, n, c.h2, c.w2, c.c2, work + p.dp2, work + p.da2)
    gemm_rm(True, False, K2, c.c2, P2, 1.0, col2, K2, work + p.da2, c.c2, 0.0, grad + c.conv2_w, c.c2)
    col_sum(work + p.da2, P2, c.c2, grad + c.conv2_b)
    gemm_rm(False, True, P2, K2, c.c2, 1.0, work + p.da2, c.c2, theta + c.conv2_w, c.c2, 0.0, col2, K2)
    col2im_nhwc(col2, n, c.ph1, c.pw1, c.c1, work + p.dp1)
    # conv1 block
    maxpool_back(a1, n, c.h1, c.w1, c.c1, work + p.dp1, work + p.da1)
    gemm_rm(True, False, K1, c.c1, P1, 1.0, col1, K1, work + p.da1, c.c1, 0.0, grad + c.conv1_w, c.c1)
    col_sum(work + p.da1, P1, c.c1, grad + c.conv1_b)
    return loss


# --------------------------------------------------------------------------------------------------------
# test models
# --------------------------------------------------------------------------------------------------------

cdef double counter_loss(const kernel_ctx_t *c, const float *theta, float *grad) noexcept nogil:
    cdef int64_t i, d = c.n_params
    cdef double s = 0.0
    for i in range(d):
        s += theta[i]
        if grad != NULL:
            grad[i] = -1.0
    return -s / <double>d


cdef double quadratic_loss(const kernel_ctx_t *c, const float *theta, const float *X, const float *targets,
                           const int64_t *rows, int64_t n, float *grad) noexcept nogil:
    cdef int64_t i, r
    cdef int d = <int>c.n_features, one = 1
    cdef double res, loss = 0.0
    cdef float a
    cdef const float *x
    if grad != NULL:
        memset(grad, 0, d * sizeof(float))
    for i in range(n):
        r = rows[i] if rows != NULL else i
        x = X + r * d
        res = dsdot(&d, <float *>x, &one, <float *>theta, &one) - <double>targets[r]
        loss += res * res
        if grad != NULL:
            a = <float>(res / <double>n)
            saxpy(&d, &a, <float *>x, &one, grad, &one)
    return 0.5 * loss / <double>n


# --------------------------------------------------------------------------------------------------------
# dispatch: the ABI entry point and the evaluation loop
# --------------------------------------------------------------------------------------------------------

cdef double kernel_loss(const kernel_ctx_t *c, const float *theta, const float *X, const int32_t *yi,
                        const float *yf, const int64_t *rows, int64_t n, float *grad, float *work,
                        int64_t *correct) noexcept nogil:
    if n <= 0:
        if grad != NULL:
            memset(grad, 0, c.n_params * sizeof(float))
        return 0.0
    if c.kind == KIND_DENSE:
        return mlp_loss(c, theta, X, yi, rows, n, grad, work, correct)
    if c.kind == KIND_CNN:
        return cnn_loss(c, theta, X, yi, rows, n, grad, work, correct)
    if c.kind == KIND_COUNTER:
        return counter_loss(c, theta, grad)
    return quadratic_loss(c, theta, X, yf, rows, n, grad)


cdef int64_t kernel_work(const kernel_ctx_t *c, int64_t n, bint grad) noexcept nogil:
    if c.kind == KIND_DENSE:
        return mlp_work(c, n, grad)
    if c.kind == KIND_CNN:
        return cnn_work(c, n, grad)
    return 0


cdef double abi_loss_grad(const abi_t *self, const float *theta, const int64_t *rows, int64_t n,
                          float *grad, float *work) noexcept nogil:
    """The leashed_model_t.loss_grad of every bound model (see model_abi.h)."""
    cdef const kernel_ctx_t *c = <const kernel_ctx_t *>self.ctx
    return kernel_loss(c, theta, c.X, c.yi, c.yf, rows, n, grad, work, NULL)


# --------------------------------------------------------------------------------------------------------
# Python classes
# --------------------------------------------------------------------------------------------------------

cdef class Model:
    """A flat-parameter model: a layout over one float32 vector. Build it with ``build_model``."""

    cdef kernel_ctx_t ctx
    cdef readonly str name
    cdef readonly int64_t n_params
    cdef readonly int64_t n_features
    cdef readonly int64_t n_classes
    cdef readonly tuple hidden
    cdef readonly object input_shape
    cdef list _layout

    def __init__(self, str name, int64_t n_features, int64_t n_classes, tuple hidden=(),
                 object input_shape=None, int64_t dim=0):
        """Internal: arguments are validated by ``leashed.models.registry.build_model`` (the checks here
        only keep a direct call from corrupting memory)."""
        cdef kernel_ctx_t *c = &self.ctx
        cdef list widths
        cdef int64_t off = 0, l
        if name not in ("softmax", "mlp", "cnn", "counter", "quadratic"):
            raise SpecError(f"unknown model {name!r}")
        if any(int(h) < 1 for h in hidden) or len(hidden) + 1 > MAX_DENSE_LAYERS:
            raise SpecError(f"hidden widths must be >= 1 and at most {MAX_DENSE_LAYERS - 1} layers")
        if name == "cnn" and (input_shape is None or len(input_shape) != 3 or int(input_shape[0]) < 1
                              or min(int(input_shape[1]), int(input_shape[2])) < 10):
            raise SpecError(f"the cnn needs input_shape (C, H, W) with H, W >= 10, got {input_shape}")
        if (name == "counter" and dim < 1) or (name != "counter" and n_features < 1) or (
                name not in ("counter", "quadratic") and n_classes < 2):
            raise SpecError(f"bad sizes for model {name!r}: n_features={n_features}, n_classes={n_classes}")
        memset(c, 0, sizeof(kernel_ctx_t))
        self.name = name
        self.n_features = n_features
        self.n_classes = n_classes
        self.hidden = tuple(int(h) for h in hidden)
        self.input_shape = None
        layout = []
        c.n_features = n_features
        c.n_classes = n_classes
        if name == "counter":
            c.kind = KIND_COUNTER
            layout.append(("theta", (dim,)))
            off = dim
        elif name == "quadratic":
            c.kind = KIND_QUADRATIC
            layout.append(("w", (n_features,)))
            off = n_features
        else:
            if name == "cnn":
                c.kind = KIND_CNN
                self.input_shape = tuple(int(v) for v in input_shape)
                c.cin, c.h, c.w = self.input_shape
                c.c1, c.c2 = 4, 8
                c.h1, c.w1 = c.h - 2, c.w - 2
                c.ph1, c.pw1 = c.h1 // 2, c.w1 // 2
                c.h2, c.w2 = c.ph1 - 2, c.pw1 - 2
                c.ph2, c.pw2 = c.h2 // 2, c.w2 // 2
                c.conv1_w = off
                off += 9 * c.cin * c.c1
                c.conv1_b = off
                off += c.c1
                c.conv2_w = off
                off += 9 * c.c1 * c.c2
                c.conv2_b = off
                off += c.c2
                layout += [("conv1.W", (3, 3, c.cin, c.c1)), ("conv1.b", (c.c1,)),
                           ("conv2.W", (3, 3, c.c1, c.c2)), ("conv2.b", (c.c2,))]
                widths = [c.ph2 * c.pw2 * c.c2]
            else:
                c.kind = KIND_DENSE
                widths = [n_features]
            widths += list(self.hidden) + [n_classes]
            c.n_layers = len(widths) - 1
            for l in range(c.n_layers + 1):
                c.width[l] = widths[l]
            for l in range(c.n_layers):
                c.w_off[l] = off
                off += widths[l] * widths[l + 1]
                c.b_off[l] = off
                off += widths[l + 1]
                layout += [(f"fc{l + 1}.W", (widths[l], widths[l + 1])), (f"fc{l + 1}.b", (widths[l + 1],))]
        c.n_params = off
        self.n_params = off
        self._layout = layout

    def __reduce__(self):
        dim = self.n_params if self.ctx.kind == KIND_COUNTER else 0
        return (Model, (self.name, self.n_features, self.n_classes, self.hidden, self.input_shape, dim))

    def __repr__(self) -> str:
        return (f"Model(name={self.name!r}, n_params={self.n_params}, n_features={self.n_features}, "
                f"n_classes={self.n_classes}, hidden={self.hidden}, input_shape={self.input_shape})")

    def layout(self):
        """Names and shapes of the parameter blocks, in their order in the flat vector."""
        return list(self._layout)

    def unflatten(self, theta):
        """Dict name -> view of ``theta`` with that block's shape (no copy)."""
        theta = np.asarray(theta)
        out = {}
        cdef int64_t off = 0, size
        for name, shape in self._layout:
            size = int(np.prod(shape))
            out[name] = theta[off:off + size].reshape(shape)
            off += size
        return out

    def init_params(self, seed):
        """He-normal N(0, 2/fan_in) weights, zero biases (counter, quadratic: zeros); float32, C-contiguous."""
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params, dtype=np.float32)
        if self.ctx.kind == KIND_COUNTER or self.ctx.kind == KIND_QUADRATIC:
            return theta
        for name, block in self.unflatten(theta).items():
            if name.endswith(".W"):
                fan_in = int(np.prod(block.shape)) // int(block.shape[len(block.shape) - 1])
                block[...] = rng.standard_normal(block.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        return theta

    def _check_data(self, X, y):
        """Validated (X float32 C-contiguous [N, n_features], y int32 labels / float32 targets / None)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"X must be a 2-d array [rows, features], got shape {X.shape}")
        if self.ctx.kind != KIND_COUNTER and X.shape[1] != self.n_features:
            raise DataError(f"X has {X.shape[1]} features but model {self.name!r} expects "
                            f"{self.n_features}: rebuild the model with n_features={X.shape[1]}")
        if X.shape[0] < 1:
            raise DataError("X has no rows: give at least one example")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.ctx.kind == KIND_COUNTER:
            return X, None
        if y is None:
            raise DataError(f"model {self.name!r} needs targets y")
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise DataError(f"y has shape {y.shape} but X has {X.shape[0]} rows: give one target per row")
        if self.ctx.kind == KIND_QUADRATIC:
            return X, np.ascontiguousarray(y, dtype=np.float32)
        if y.dtype.kind not in "iu":
            if not np.all(np.mod(y, 1) == 0):
                raise DataError("class labels y must be integers")
        y = np.ascontiguousarray(y, dtype=np.int32)
        if y.min() < 0 or y.max() >= self.n_classes:
            raise DataError(f"class labels must lie in 0..{self.n_classes - 1}, found "
                            f"{int(y.min())}..{int(y.max())}: set n_classes to match the data")
        return X, y

    def _check_theta(self, theta):
        theta = np.ascontiguousarray(theta, dtype=np.float32)
        if theta.shape != (self.n_params,):
            raise DataError(f"theta has shape {theta.shape}, model {self.name!r} needs ({self.n_params},)")
        return theta

    def bind(self, X, y, batch_size):
        """Bind a training set and a batch size: a :class:`BoundModel` (keeps X and y alive).

        X: float32 [N, n_features] (converted/copied if needed). y: int32 class labels in 0..n_classes-1
        (softmax, mlp, cnn), float32 regression targets (quadratic), ignored (counter; may be None)."""
        if int(batch_size) < 1:
            raise SpecError(f"batch_size must be >= 1, got {batch_size}")
        X, y = self._check_data(X, y)
        return BoundModel(self, X, y, int(batch_size))

    def work_floats(self, batch_size, grad=True):
        """Workspace floats one caller needs for batches of batch_size rows (forward only if not grad)."""
        return int(kernel_work(&self.ctx, batch_size, grad))

    def evaluate(self, theta, X, y, chunk=1000):
        """(mean loss, accuracy) over all rows of (X, y), in chunks, without the GIL; accuracy is NaN for
        counter and quadratic. Allocates one forward-only workspace of ``chunk`` rows."""
        if int(chunk) < 1:
            raise SpecError(f"chunk must be >= 1, got {chunk}")
        X, y = self._check_data(X, y)
        cdef const float[::1] th = self._check_theta(theta)
        cdef const float[:, ::1] Xv = X
        cdef int64_t N = X.shape[0], ch = min(int(chunk), N), start, m
        cdef int64_t correct = 0
        cdef double total = 0.0
        cdef float[::1] work = np.empty(max(kernel_work(&self.ctx, ch, False), 1), dtype=np.float32)
        cdef const int32_t *yi = NULL
        cdef const float *yf = NULL
        cdef const int32_t[::1] yiv
        cdef const float[::1] yfv
        cdef const float *Xp = &Xv[0, 0] if Xv.shape[1] > 0 else <const float *>NULL
        if self.ctx.kind == KIND_DENSE or self.ctx.kind == KIND_CNN:
            yiv = y
            yi = &yiv[0]
        elif self.ctx.kind == KIND_QUADRATIC:
            yfv = y
            yf = &yfv[0]
        with nogil:
            start = 0
            while start < N:
                m = min(ch, N - start)
                total += m * kernel_loss(&self.ctx, &th[0], Xp + start * self.n_features if Xp != NULL else NULL,
                                         yi + start if yi != NULL else NULL,
                                         yf + start if yf != NULL else NULL,
                                         NULL, m, NULL, &work[0], &correct)
                start += m
        if self.ctx.kind == KIND_COUNTER or self.ctx.kind == KIND_QUADRATIC:
            return float(total / N), float("nan")
        return float(total / N), float(correct) / float(N)


cdef class BoundModel:
    """A model bound to a training set and a batch size; ``abi_address`` is its ``leashed_model_t``."""

    cdef abi_t abi
    cdef kernel_ctx_t ctx
    cdef readonly Model model
    cdef readonly object X
    cdef readonly object y
    cdef object _work

    def __init__(self, Model model, X, y, int64_t batch_size):
        """Internal: use ``Model.bind``."""
        cdef const float[:, ::1] Xv = X
        cdef const int32_t[::1] yiv
        cdef const float[::1] yfv
        self.model = model
        self.X = X
        self.y = y
        self.ctx = model.ctx
        self.ctx.X = &Xv[0, 0] if Xv.shape[1] > 0 else NULL
        self.ctx.n_rows = Xv.shape[0]
        if model.ctx.kind == KIND_DENSE or model.ctx.kind == KIND_CNN:
            yiv = y
            self.ctx.yi = &yiv[0]
        elif model.ctx.kind == KIND_QUADRATIC:
            yfv = y
            self.ctx.yf = &yfv[0]
        self.abi.loss_grad = abi_loss_grad
        self.abi.ctx = &self.ctx
        self.abi.n_params = model.ctx.n_params
        self.abi.work_floats = kernel_work(&model.ctx, batch_size, True)
        self.abi.batch_size = batch_size
        self.abi.n_rows = Xv.shape[0]
        self._work = self.new_workspace()

    @property
    def abi_address(self):
        """Address of this model's leashed_model_t (valid while this BoundModel lives)."""
        return <intptr_t>&self.abi

    @property
    def n_params(self):
        return self.abi.n_params

    @property
    def work_floats(self):
        return self.abi.work_floats

    @property
    def batch_size(self):
        return self.abi.batch_size

    @property
    def n_rows(self):
        return self.abi.n_rows

    def __reduce__(self):
        return (BoundModel, (self.model, self.X, self.y, self.abi.batch_size))

    def __repr__(self) -> str:
        return (f"BoundModel({self.model.name!r}, n_rows={self.n_rows}, batch_size={self.batch_size}, "
                f"work_floats={self.work_floats})")

    def new_workspace(self):
        """A fresh workspace for one caller (float32, work_floats long, at least 1)."""
        return np.zeros(max(self.abi.work_floats, 1), dtype=np.float32)

    def _check_rows(self, rows):
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        n = int(rows.shape[rows.ndim - 1]) if rows.ndim > 0 else 0
        if rows.ndim not in (1, 2) or rows.size < 1 or n > self.abi.batch_size:
            raise DataError(f"a batch must have 1..{self.abi.batch_size} row indices, got shape {rows.shape}")
        if rows.min() < 0 or rows.max() >= self.abi.n_rows:
            raise DataError(f"row indices must lie in 0..{self.abi.n_rows - 1}")
        return rows

    def _check_out(self, grad_out, work):
        if not (isinstance(grad_out, np.ndarray) and grad_out.dtype == np.float32
                and grad_out.shape == (self.abi.n_params,) and grad_out.flags.c_contiguous
                and grad_out.flags.writeable):
            raise DataError(f"grad_out must be a writeable C-contiguous float32 array of {self.abi.n_params}")
        if work is None:
            return self._work
        if not (isinstance(work, np.ndarray) and work.dtype == np.float32 and work.ndim == 1
                and work.flags.c_contiguous and work.size >= max(self.abi.work_floats, 1)):
            raise DataError(f"work must be a C-contiguous float32 array of >= {self.abi.work_floats} floats")
        return work

    def loss_grad(self, theta, rows, grad_out, work=None):
        """Mean loss over ``rows`` at ``theta``; the gradient is written into ``grad_out``. Releases the GIL.

        Without ``work`` it uses this object's internal workspace: not thread safe (two Python threads
        must not call it on the same BoundModel at once). With a ``work`` array of its own per thread
        (``new_workspace()``), calls from several threads are safe."""
        cdef const float[::1] th = self.model._check_theta(theta)
        cdef const int64_t[::1] r = self._check_rows(rows).reshape(-1)
        cdef float[::1] w = self._check_out(grad_out, work)
        cdef float[::1] g = grad_out
        cdef double loss
        with nogil:
            loss = abi_loss_grad(&self.abi, &th[0], &r[0], r.shape[0], &g[0], &w[0])
        return loss

    def loss_grad_many(self, theta, rows, grad_out, work=None):
        """One loss_grad per row of the 2-d index array ``rows`` [k, n], in one nogil loop (for
        benchmarks); ``grad_out`` ends holding the last gradient. Returns the k losses (float64)."""
        rows2 = self._check_rows(rows)
        if rows2.ndim != 2:
            raise DataError("rows must be a 2-d array [batches, batch rows]")
        cdef const float[::1] th = self.model._check_theta(theta)
        cdef const int64_t[:, ::1] r = rows2
        cdef float[::1] w = self._check_out(grad_out, work)
        cdef float[::1] g = grad_out
        cdef double[::1] losses = np.empty(r.shape[0], dtype=np.float64)
        cdef int64_t i
        with nogil:
            for i in range(r.shape[0]):
                losses[i] = abi_loss_grad(&self.abi, &th[0], &r[i, 0], r.shape[1], &g[0], &w[0])
        return np.asarray(losses)
