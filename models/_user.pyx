# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A user's own model behind the model ABI (docs/models.md, models/user_abi.h, models/model_abi.h).

The user supplies one C function of the user ABI (a numba ``@cfunc`` or a PyCapsule from C / Cython);
:class:`UserKernelModel` is the :class:`leashed.models._kernels.Model` of it (layout, initialisation,
evaluation, ``bind``) and :class:`UserBoundModel` the ``BoundModel``: its ``leashed_model_t`` has a
trampoline as ``loss_grad`` that hands the user function the bound data and records failures. The
engines call it exactly as they call a built-in kernel (runtime: from nogil threads; the simulator's
with-gradients mode: ``loss_grad``), so a user model is trained without the GIL.

Failures never raise inside the nogil loops (they cannot): the trampoline returns NaN, which stops a run
as a divergence does, and notes why: the first non-zero return code, or a call during which an exception
of the model reached Python's unraisable hook (a numba cfunc cannot raise; ``leashed.models.user``
counts those via :func:`note_raised`). The Python side asks :meth:`UserBoundModel.check_failure` after
the loop and turns the note into one ``ModelError`` line.
"""

import math

import numpy as np

from libc.stdint cimport int32_t, int64_t, intptr_t
from libc.string cimport memset
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid, PyCapsule_New, PyCapsule_CheckExact

from leashed.errors import DataError, SpecError

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

cdef extern from "user_abi.h":
    ctypedef int32_t (*user_fn_t "leashed_user_loss_grad_t")(
        const float *theta, int64_t n_params, const float *X, const int32_t *y, int64_t n_rows,
        int64_t n_features,
        const int64_t *rows, int64_t n, float *grad, float *work, int32_t *pred, double *loss) noexcept nogil
    const char *CAPSULE_NAME "LEASHED_USER_CAPSULE_NAME"

cdef extern from *:
    """
    #include <stdint.h>
    static int64_t leashed_user_raised_count = 0;
    static inline int64_t lsu_raised(void) {
        return __atomic_load_n(&leashed_user_raised_count, __ATOMIC_ACQUIRE);
    }
    static inline void lsu_note_raised(void) {
        __atomic_fetch_add(&leashed_user_raised_count, 1, __ATOMIC_ACQ_REL);
    }
    static inline void lsu_first_status(int32_t *p, int32_t v) {
        int32_t zero = 0;
        __atomic_compare_exchange_n(p, &zero, v, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    }
    static inline void lsu_add(int64_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }
    static inline int64_t lsu_load(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline int32_t lsu_load32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    """
    int64_t lsu_raised() noexcept nogil
    void lsu_note_raised() noexcept nogil
    void lsu_first_status(int32_t *p, int32_t v) noexcept nogil
    void lsu_add(int64_t *p) noexcept nogil
    int64_t lsu_load(const int64_t *p) noexcept nogil
    int32_t lsu_load32(const int32_t *p) noexcept nogil

#: the name a C / Cython model's PyCapsule must carry (user_abi.h)
USER_CAPSULE_NAME = CAPSULE_NAME.decode("ascii")

cdef double NAN_ = float("nan")


ctypedef struct user_ctx_t:
    user_fn_t fn
    int64_t n_params
    const float *X
    const int32_t *y
    int64_t n_rows
    int64_t n_features
    int64_t pred_off      # offset (floats) of the pred area (batch_size int32) in the workspace
    int32_t status        # first non-zero return code of a call (0: none)
    int32_t _pad
    int64_t raised        # calls during which an exception of a user model reached the unraisable hook


cdef inline double call_user(user_ctx_t *u, const float *theta, const float *X, const int32_t *y,
                             int64_t n_rows, const int64_t *rows, int64_t n, float *grad, float *work,
                             int32_t *pred) noexcept nogil:
    """One user call; NaN (and the reason noted in u) on a non-zero code or an exception."""
    cdef double loss = NAN_
    cdef int64_t before = lsu_raised()
    cdef int32_t st = u.fn(theta, u.n_params, X, y, n_rows, u.n_features, rows, n, grad, work, pred, &loss)
    if st != 0:
        lsu_first_status(&u.status, st)
        return NAN_
    if lsu_raised() != before:
        lsu_add(&u.raised)
        return NAN_
    return loss


cdef double user_loss_grad(const abi_t *self, const float *theta, const int64_t *rows, int64_t n,
                           float *grad, float *work) noexcept nogil:
    """The leashed_model_t.loss_grad of a user model: the user function on the bound data."""
    cdef user_ctx_t *u = <user_ctx_t *>self.ctx
    return call_user(u, theta, u.X, u.y, u.n_rows, rows, n, grad, work, <int32_t *>(work + u.pred_off))


def note_raised() -> None:
    """Count one exception raised inside a user model (called by leashed.models.user's unraisable hook,
    in the thread of the failing call, before that call returns)."""
    lsu_note_raised()


def raised_count() -> int:
    """Exceptions of user models counted so far (tests)."""
    return int(lsu_raised())


# ---------------------------------------------------------------------------------------- function pointers
def capsule_address(capsule) -> int:
    """The function pointer in a PyCapsule named USER_CAPSULE_NAME; SpecError for any other object."""
    if not PyCapsule_CheckExact(capsule):
        raise SpecError(f"expected a PyCapsule holding a {USER_CAPSULE_NAME} function, got "
                        f"{type(capsule).__name__}")
    if not PyCapsule_IsValid(capsule, CAPSULE_NAME):
        raise SpecError(f"the PyCapsule is not named {USER_CAPSULE_NAME!r}: it holds a function of another "
                        f"signature (docs/models.md has the one leashed calls)")
    return <intptr_t>PyCapsule_GetPointer(capsule, CAPSULE_NAME)


cdef int32_t minus_one_fn(const float *theta, int64_t n_params, const float *X, const int32_t *y,
                          int64_t n_rows, int64_t n_features, const int64_t *rows, int64_t n, float *grad,
                          float *work, int32_t *pred, double *loss) noexcept nogil:
    """The C example of docs/models.md: the counter model as a user model (loss -mean(theta), gradient -1
    everywhere, so N updates with lr 1 make every parameter N)."""
    cdef int64_t i
    cdef double s = 0.0
    for i in range(n_params):
        s += theta[i]
        grad[i] = -1.0
    for i in range(n):
        pred[i] = 0
    loss[0] = -s / <double>n_params
    return 0


def minus_one_capsule():
    """A PyCapsule of a C user function: the counter model of :func:`minus_one_fn` (tests, docs)."""
    return PyCapsule_New(<void *>minus_one_fn, CAPSULE_NAME, NULL)


# ---------------------------------------------------------------------------------------- the model
cdef class UserKernelModel:
    """A user model as the engines see a :class:`~leashed.models._kernels.Model`: parameters, layout,
    initialisation, evaluation, ``bind``. Built by :func:`leashed.models.user.build_user_model`."""

    cdef user_fn_t fn
    cdef readonly str name
    cdef readonly int64_t n_params
    cdef readonly int64_t n_features
    cdef readonly int64_t n_classes
    cdef readonly bint classes
    cdef readonly int64_t work_fixed
    cdef readonly int64_t work_per_row
    cdef readonly object descriptor
    cdef object _owner
    cdef object _on_failure
    cdef object _init
    cdef list _layout
    cdef readonly tuple hidden
    cdef readonly object input_shape

    def __init__(self, str name, intptr_t address, object owner, int64_t n_params, int64_t n_features,
                 int64_t n_classes, bint classes, int64_t work_fixed, int64_t work_per_row, list layout,
                 object init, object on_failure, object descriptor=None):
        """Internal: the arguments are validated by leashed.models.user (``address`` a user ABI function
        kept alive by ``owner``)."""
        if address == 0 or n_params < 1 or n_features < 0 or work_fixed < 0 or work_per_row < 0:
            raise SpecError(f"bad user model {name!r}: null function or negative sizes")
        if classes and n_classes < 2:
            raise SpecError(f"user model {name!r} predicts classes but the data has {n_classes} classes")
        self.fn = <user_fn_t>address
        self.name = name
        self._owner = owner
        self.n_params = n_params
        self.n_features = n_features
        self.n_classes = n_classes
        self.classes = classes
        self.work_fixed = work_fixed
        self.work_per_row = work_per_row
        self._layout = layout
        self._init = init
        self._on_failure = on_failure
        self.descriptor = descriptor
        self.hidden = ()
        self.input_shape = None

    def __repr__(self) -> str:
        return (f"UserKernelModel(name={self.name!r}, n_params={self.n_params}, "
                f"n_features={self.n_features}, n_classes={self.n_classes})")

    def layout(self):
        """Names and shapes of the parameter blocks, in their order in the flat vector."""
        return list(self._layout)

    def unflatten(self, theta):
        """Dict name -> view of ``theta`` with that block's shape (no copy)."""
        theta = np.asarray(theta)
        out = {}
        off = 0
        for name, shape in self._layout:
            size = int(np.prod(shape))
            out[name] = theta[off:off + size].reshape(shape)
            off += size
        return out

    def init_params(self, seed):
        """The descriptor's initialisation with ``np.random.default_rng(seed)`` (zeros without one),
        checked: float32, C-contiguous, n_params long, finite."""
        if self._init is None:
            return np.zeros(self.n_params, dtype=np.float32)
        theta = self._init(np.random.default_rng(seed))
        theta = np.ascontiguousarray(np.asarray(theta, dtype=np.float32).reshape(-1))
        if theta.shape != (self.n_params,):
            raise SpecError(f"user model {self.name!r}: init returned {theta.shape[0]} parameters, its "
                            f"n_params is {self.n_params}")
        if not np.all(np.isfinite(theta)):
            raise SpecError(f"user model {self.name!r}: init returned non-finite parameters")
        return theta

    def work_floats(self, batch_size, grad=True):
        """Workspace floats one caller needs for batches of batch_size rows (user floats, rounded up to
        16, then batch_size int32 predictions)."""
        return int(_work_floats(self.work_fixed, self.work_per_row, int(batch_size)))

    def _check_data(self, X, y):
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"X must be a 2-d array [rows, features], got shape {X.shape}")
        if X.shape[1] != self.n_features:
            raise DataError(f"X has {X.shape[1]} features but user model {self.name!r} was built for "
                            f"{self.n_features}")
        if X.shape[0] < 1:
            raise DataError("X has no rows: give at least one example")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if not self.classes:
            return X, None
        if y is None:
            raise DataError(f"user model {self.name!r} needs class labels y")
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise DataError(f"y has shape {y.shape} but X has {X.shape[0]} rows: give one label per row")
        y = np.ascontiguousarray(y, dtype=np.int32)
        if y.min() < 0 or y.max() >= self.n_classes:
            raise DataError(f"class labels must lie in 0..{self.n_classes - 1}, found "
                            f"{int(y.min())}..{int(y.max())}")
        return X, y

    def _check_theta(self, theta):
        theta = np.ascontiguousarray(theta, dtype=np.float32)
        if theta.shape != (self.n_params,):
            raise DataError(f"theta has shape {theta.shape}, user model {self.name!r} needs "
                            f"({self.n_params},)")
        return theta

    def _fail(self, int32_t status, int64_t raised, str where):
        self._on_failure(int(status), int(raised), where)

    def bind(self, X, y, batch_size):
        """Bind a training set and a batch size: a :class:`UserBoundModel` (keeps X and y alive)."""
        if int(batch_size) < 1:
            raise SpecError(f"batch_size must be >= 1, got {batch_size}")
        X, y = self._check_data(X, y)
        return UserBoundModel(self, X, y, int(batch_size))

    def evaluate(self, theta, X, y, chunk=1000):
        """(mean loss, accuracy) over all rows of (X, y) in chunks, without the GIL (accuracy from the
        predictions the model writes; NaN for target none). A failure of the model raises ModelError."""
        if int(chunk) < 1:
            raise SpecError(f"chunk must be >= 1, got {chunk}")
        X, y = self._check_data(X, y)
        cdef const float[::1] th = self._check_theta(theta)
        cdef const float[:, ::1] Xv = X
        cdef int64_t N = X.shape[0], ch = min(int(chunk), N), start = 0, m, i, D = self.n_features
        cdef int64_t correct = 0
        cdef double total = 0.0, loss
        cdef const int64_t[::1] rows = np.arange(ch, dtype=np.int64)
        cdef float[::1] grad = np.empty(self.n_params, dtype=np.float32)
        cdef float[::1] work = np.zeros(max(self.work_fixed + self.work_per_row * ch, 1), dtype=np.float32)
        cdef int32_t[::1] pred = np.zeros(ch, dtype=np.int32)
        cdef const int32_t[::1] yv
        cdef const int32_t *yp = NULL
        cdef const float *Xp = &Xv[0, 0] if D > 0 else <const float *>NULL
        cdef user_ctx_t u
        memset(&u, 0, sizeof(user_ctx_t))
        u.fn = self.fn
        u.n_params = self.n_params
        u.n_features = D
        if self.classes:
            yv = y
            yp = &yv[0]
        with nogil:
            while start < N:
                m = min(ch, N - start)
                loss = call_user(&u, &th[0], Xp + start * D if Xp != NULL else NULL,
                                 yp + start if yp != NULL else NULL, m, &rows[0], m, &grad[0], &work[0],
                                 &pred[0])
                if u.status != 0 or u.raised != 0:
                    break
                total += m * loss
                if yp != NULL:
                    for i in range(m):
                        correct += (pred[i] == yp[start + i])
                start += m
        if u.status != 0 or u.raised != 0:
            self._fail(u.status, u.raised, "evaluation")
        if not self.classes:
            return float(total / N), float("nan")
        return float(total / N), float(correct) / float(N)


cdef int64_t _work_floats(int64_t fixed, int64_t per_row, int64_t batch) noexcept nogil:
    cdef int64_t user = fixed + per_row * batch
    return ((user + 15) & ~(<int64_t>15)) + batch


cdef class UserBoundModel:
    """A user model bound to a training set and a batch size; ``abi_address`` is its ``leashed_model_t``
    (the trampoline :func:`user_loss_grad`), used by the runtime's nogil loops like a built-in one."""

    cdef abi_t abi
    cdef user_ctx_t ctx
    cdef readonly UserKernelModel model
    cdef readonly object X
    cdef readonly object y
    cdef object _work

    def __init__(self, UserKernelModel model, X, y, int64_t batch_size):
        """Internal: use ``UserKernelModel.bind``."""
        cdef const float[:, ::1] Xv = X
        cdef const int32_t[::1] yv
        self.model = model
        self.X = X
        self.y = y
        memset(&self.ctx, 0, sizeof(user_ctx_t))
        self.ctx.fn = model.fn
        self.ctx.n_params = model.n_params
        self.ctx.X = &Xv[0, 0] if Xv.shape[1] > 0 else NULL
        self.ctx.n_rows = Xv.shape[0]
        self.ctx.n_features = Xv.shape[1]
        if y is not None:
            yv = y
            self.ctx.y = &yv[0]
        self.ctx.pred_off = _work_floats(model.work_fixed, model.work_per_row, batch_size) - batch_size
        self.abi.loss_grad = user_loss_grad
        self.abi.ctx = &self.ctx
        self.abi.n_params = model.n_params
        self.abi.work_floats = _work_floats(model.work_fixed, model.work_per_row, batch_size)
        self.abi.batch_size = batch_size
        self.abi.n_rows = Xv.shape[0]
        self._work = self.new_workspace()

    @property
    def abi_address(self):
        """Address of this model's leashed_model_t (valid while this object lives)."""
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

    def __repr__(self) -> str:
        return (f"UserBoundModel({self.model.name!r}, n_rows={self.n_rows}, batch_size={self.batch_size}, "
                f"work_floats={self.work_floats})")

    def new_workspace(self):
        """A fresh workspace for one caller (float32, work_floats long)."""
        return np.zeros(max(self.abi.work_floats, 1), dtype=np.float32)

    def failure(self):
        """(first non-zero return code, calls that raised) noted since binding or :meth:`reset_failure`."""
        return int(lsu_load32(&self.ctx.status)), int(lsu_load(&self.ctx.raised))

    def reset_failure(self):
        self.ctx.status = 0
        self.ctx.raised = 0

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

    def check_failure(self, theta0=None, diverged=False):
        """After a loop: a noted failure (a return code, an exception) raises ModelError; so does, after
        a divergence, a non-finite loss or gradient at ``theta0`` on the first rows (the model's fault,
        not the step size's)."""
        status, raised = self.failure()
        if status != 0 or raised != 0:
            self.model._fail(status, raised, "training")
        if not diverged or theta0 is None:
            return
        g = np.empty(self.abi.n_params, dtype=np.float32)
        rows = np.arange(min(self.abi.batch_size, self.abi.n_rows), dtype=np.int64)
        loss = self.loss_grad(theta0, rows, g)
        if not math.isfinite(loss):
            self.model._fail(0, 0, "nonfinite-loss")
        if not np.all(np.isfinite(g)):
            self.model._fail(0, 0, "nonfinite-grad")

    def loss_grad(self, theta, rows, grad_out, work=None):
        """Mean loss over ``rows`` at ``theta``; the gradient is written into ``grad_out``. Releases the
        GIL. A return code or an exception of the model raises ModelError; a NaN loss is returned.
        Without ``work`` it uses this object's workspace (not thread safe)."""
        cdef const float[::1] th = self.model._check_theta(theta)
        cdef const int64_t[::1] r = self._check_rows(rows).reshape(-1)
        cdef float[::1] w = self._check_out(grad_out, work)
        cdef float[::1] g = grad_out
        cdef double loss
        cdef user_ctx_t u = self.ctx
        u.status = 0
        u.raised = 0
        with nogil:
            loss = call_user(&u, &th[0], u.X, u.y, u.n_rows, &r[0], r.shape[0], &g[0], &w[0],
                             <int32_t *>(&w[0] + u.pred_off))
        if u.status != 0 or u.raised != 0:
            self.model._fail(u.status, u.raised, "gradient")
        return loss

    def loss_grad_many(self, theta, rows, grad_out, work=None):
        """One loss_grad per row of the 2-d index array ``rows`` [k, n], in one nogil loop (benchmarks);
        ``grad_out`` ends holding the last gradient. Returns the k losses (float64)."""
        rows2 = self._check_rows(rows)
        if rows2.ndim != 2:
            raise DataError("rows must be a 2-d array [batches, batch rows]")
        cdef const float[::1] th = self.model._check_theta(theta)
        cdef const int64_t[:, ::1] r = rows2
        cdef float[::1] w = self._check_out(grad_out, work)
        cdef float[::1] g = grad_out
        cdef double[::1] losses = np.empty(r.shape[0], dtype=np.float64)
        cdef int64_t i
        cdef user_ctx_t u = self.ctx
        u.status = 0
        u.raised = 0
        with nogil:
            for i in range(r.shape[0]):
                losses[i] = call_user(&u, &th[0], u.X, u.y, u.n_rows, &r[i, 0], r.shape[1], &g[0], &w[0],
                                      <int32_t *>(&w[0] + u.pred_off))
        if u.status != 0 or u.raised != 0:
            self.model._fail(u.status, u.raised, "gradient")
        return np.asarray(losses)
