# Declarations of leashed.models._kernels for sibling Cython modules (runtime, simulator).
#
# A sibling that only calls a model needs just the ABI struct:
#
#     from leashed.models._kernels cimport leashed_model_t, call_loss_grad
#     cdef const leashed_model_t* m = <const leashed_model_t*><intptr_t>bound.abi_address
#     loss = call_loss_grad(m, theta, rows, n, grad, work)      # nogil, thread-safe per workspace
#
# The struct itself is defined in models/model_abi.h (the fixed C interface). This file holds C-level
# declarations only (no extension types), so cimporting it never imports the module at run time.
# setup.py's link tree (build/cython_include/leashed/models -> models/) lets Cython find it under that
# name; _kernels.pyx itself declares the struct under a private alias and does not depend on this file.

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
