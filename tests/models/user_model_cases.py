"""Small numba user models for tests/models/test_user_models.py (docs/models.md): the counter model as
a user model, and models that fail in each way the error protocol covers. They ignore the data (target
``none``, data set ``none``), so runs of them are fast."""

import numpy as np
from numba import carray, cfunc

from leashed.models.user import USER_SIGNATURE, UserModel

D = 40


@cfunc(USER_SIGNATURE, nopython=True, cache=True)
def minus_one(theta_p, n_params, X_p, y_p, n_rows, n_features, rows_p, n, grad_p, work_p, pred_p, loss_p):
    """loss -mean(theta); gradient -1 everywhere (the counter model of models/_kernels.pyx)."""
    theta = carray(theta_p, (n_params,))
    grad = carray(grad_p, (n_params,))
    s = 0.0
    for i in range(n_params):
        s += theta[i]
        grad[i] = -1.0
    carray(loss_p, (1,))[0] = -s / n_params
    return 0


@cfunc(USER_SIGNATURE, nopython=True, cache=True)
def raises_late(theta_p, n_params, X_p, y_p, n_rows, n_features, rows_p, n, grad_p, work_p, pred_p, loss_p):
    """The counter model until a parameter reaches 5, then it raises."""
    theta = carray(theta_p, (n_params,))
    grad = carray(grad_p, (n_params,))
    if theta[0] >= 5.0:
        raise ValueError("theta[0] reached 5")
    for i in range(n_params):
        grad[i] = -1.0
    carray(loss_p, (1,))[0] = 0.0
    return 0


@cfunc(USER_SIGNATURE, nopython=True, cache=True)
def nan_loss(theta_p, n_params, X_p, y_p, n_rows, n_features, rows_p, n, grad_p, work_p, pred_p, loss_p):
    """A finite gradient, a NaN loss (a log of 0, say)."""
    grad = carray(grad_p, (n_params,))
    for i in range(n_params):
        grad[i] = 0.0
    carray(loss_p, (1,))[0] = np.log(0.0) * 0.0
    return 0


@cfunc(USER_SIGNATURE, nopython=True, cache=True)
def code_seven(theta_p, n_params, X_p, y_p, n_rows, n_features, rows_p, n, grad_p, work_p, pred_p, loss_p):
    """Fails with return code 7 once a parameter reaches 3."""
    theta = carray(theta_p, (n_params,))
    grad = carray(grad_p, (n_params,))
    if theta[0] >= 3.0:
        return 7
    for i in range(n_params):
        grad[i] = -1.0
    carray(loss_p, (1,))[0] = 0.0
    return 0


def _model(name, fn, **kw):
    return UserModel(name=name, loss_grad=fn, n_params=D, target="none", dataset="none", reads_rows=False,
                     **kw)


counter = _model("nb_counter", minus_one)
raising = _model("nb_raising", raises_late)
nan = _model("nb_nan", nan_loss)
code = _model("nb_code", code_seven, errors={7: "the parameters left the model's domain"})
