# Declarations of leashed.models._kernels for sibling Cython modules (runtime, simulator).
#
# A sibling that only calls a model needs just the ABI struct:
#
#     from leashed.models._kernels cimport leashed_model_t, call_loss_grad
#     cdef const leashed_model_t* m = <const leashed_model_t*><intptr_t>bound.abi_address
#     loss = call_loss_grad(m, theta, rows, n, grad, work)      # nogil, thread-safe per workspace
#
# The struct itself is defined in models/model_abi.h (the fixed C interface).

from libc.stdint cimport int32_t, int64_t


cdef extern from "model_abi.h":
    cdef struct leashed_model_s:
        double (*loss_grad)(const leashed_model_s *self, const float *theta, const int64_t *rows,
                            int64_t n, float *grad, float *work) noexcept nogil
        void *ctx
        int64_t n_params
        int64_t work_floats
        int64_t batch_size
        int64_t n_rows
    ctypedef leashed_model_s leashed_model_t

ctypedef double (*loss_grad_fn)(const leashed_model_t *self, const float *theta, const int64_t *rows,
                                int64_t n, float *grad, float *work) noexcept nogil


cdef inline double call_loss_grad(const leashed_model_t *m, const float *theta, const int64_t *rows,
                                  int64_t n, float *grad, float *work) noexcept nogil:
    """Mean loss of rows[0:n] at theta; gradient written to grad (see model_abi.h)."""
    return m.loss_grad(m, theta, rows, n, grad, work)


# Model kinds (kernel_ctx_t.kind).
cdef enum:
    KIND_DENSE = 1       # softmax regression and MLP: a stack of dense layers
    KIND_CNN = 2         # conv3x3 -> ReLU -> pool2 -> conv3x3 -> ReLU -> pool2 -> dense stack
    KIND_COUNTER = 3     # gradient of every coordinate is -1
    KIND_QUADRATIC = 4   # least squares, no bias
    MAX_DENSE_LAYERS = 32


# Everything a kernel needs: layout of the flat parameter vector and (once bound) the data.
ctypedef struct kernel_ctx_t:
    int kind
    int64_t n_params
    int64_t n_features
    int64_t n_classes
    # dense stack (softmax, mlp, and the FC part of cnn): layer l maps width[l] -> width[l+1];
    # its weight is a width[l] x width[l+1] row-major block at w_off[l], its bias width[l+1] at b_off[l]
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


cdef class Model:
    cdef kernel_ctx_t ctx
    cdef readonly str name
    cdef readonly int64_t n_params
    cdef readonly int64_t n_features
    cdef readonly int64_t n_classes
    cdef readonly tuple hidden
    cdef readonly object input_shape
    cdef list _layout


cdef class BoundModel:
    cdef leashed_model_t abi
    cdef kernel_ctx_t ctx
    cdef readonly Model model
    cdef readonly object X
    cdef readonly object y
    cdef object _work
