# The worker loops' entry point (runtime/_loops.pyx), cimported by runtime/_workers.pyx (Run.work).

from libc.stdint cimport int64_t

from leashed.runtime._phases cimport ctx_t


cdef int worker_main(ctx_t *c, int64_t tid) noexcept nogil
