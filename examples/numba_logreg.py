"""Multinomial logistic regression on MNIST (784 x 10 + 10 parameters) as a user model in numba.

    pip install 'leashed-sgd[numba]'
    leashed train --model examples/numba_logreg.py:model --algorithm leashed --threads 2 --epochs 3 \
        --out lr.npz

The model ABI (arguments, workspace, errors) is docs/models.md. Parameters: ``fc1.W`` (784, 10) row-major,
then ``fc1.b`` (10,), the layout of the built-in ``softmax`` model. Loss: the mean softmax cross-entropy
over the batch (log-sum-exp shifted by the row's maximum); its gradient is written into ``grad``.
"""

import numpy as np
from numba import carray, cfunc

from leashed.models.user import USER_SIGNATURE, UserModel

D, C = 784, 10
N_PARAMS = D * C + C


@cfunc(USER_SIGNATURE, nopython=True, cache=True)
def loss_grad(theta_p, n_params, X_p, y_p, n_rows, n_features, rows_p, n, grad_p, work_p, pred_p, loss_p):
    """Mean cross-entropy of the batch rows[0:n]; gradient into grad, predictions into pred."""
    theta = carray(theta_p, (N_PARAMS,))
    W = theta[:D * C].reshape((D, C))
    b = theta[D * C:]
    X = carray(X_p, (n_rows, D))
    y = carray(y_p, (n_rows,))
    rows = carray(rows_p, (n,))
    grad = carray(grad_p, (N_PARAMS,))
    gW = grad[:D * C].reshape((D, C))
    gb = grad[D * C:]
    work = carray(work_p, (n * (D + C),))
    xb = work[:n * D].reshape((n, D))        # the batch's rows, gathered
    z = work[n * D:].reshape((n, C))         # logits, then d(loss)/d(logits)
    pred = carray(pred_p, (n,))
    for i in range(n):
        xb[i, :] = X[rows[i], :]
    np.dot(xb, W, z)
    inv_n = 1.0 / n
    total = 0.0
    for i in range(n):
        best = 0
        for j in range(C):
            z[i, j] += b[j]
            if z[i, j] > z[i, best]:
                best = j
        pred[i] = best
        m = z[i, best]
        label = y[rows[i]]
        zl = z[i, label]
        s = 0.0
        for j in range(C):
            e = np.exp(z[i, j] - m)
            z[i, j] = e
            s += e
        total += np.log(s) - (zl - m)
        for j in range(C):
            z[i, j] = z[i, j] / s * inv_n
        z[i, label] -= inv_n
    np.dot(xb.T, z, gW)
    for j in range(C):
        acc = 0.0
        for i in range(n):
            acc += z[i, j]
        gb[j] = acc
    carray(loss_p, (1,))[0] = total * inv_n
    return 0


def init(rng: np.random.Generator) -> np.ndarray:
    """He-normal weights N(0, 2/784), zero biases (as the built-in softmax model)."""
    theta = np.zeros(N_PARAMS, dtype=np.float32)
    theta[:D * C] = rng.standard_normal(D * C, dtype=np.float32) * np.float32(np.sqrt(2.0 / D))
    return theta


model = UserModel(
    name="numba_logreg", loss_grad=loss_grad, n_params=N_PARAMS, init=init, work_per_row=D + C,
    n_features=D, n_classes=C, layout=(("fc1.W", (D, C)), ("fc1.b", (C,))),
    summary="multinomial logistic regression 784 x 10 in numba (examples/numba_logreg.py)",
)
