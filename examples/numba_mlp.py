"""A 784-128-10 ReLU MLP on MNIST (101,770 parameters) as a user model in numba.

    pip install 'leashed-sgd[numba]'
    leashed train --model examples/numba_mlp.py:model --algorithm hogwild --threads 2 --epochs 1 --out mlp.npz

The model ABI (arguments, workspace, errors) is docs/models.md. Parameters, in this order (the layout of
the built-in ``mlp`` model): ``fc1.W`` (784, 128), ``fc1.b`` (128,), ``fc2.W`` (128, 10), ``fc2.b`` (10,);
y = x W + b, ReLU after the hidden layer. Loss: the mean softmax cross-entropy over the batch. The
matrix products are numpy's ``np.dot`` with an ``out`` array in the workspace, which numba compiles to
single-precision BLAS calls, so nothing is allocated per call.
"""

import numpy as np
from numba import carray, cfunc

from leashed.models.user import USER_SIGNATURE, UserModel

D, H, C = 784, 128, 10
W1, B1, W2, B2 = 0, D * H, D * H + H, D * H + H + H * C  # offsets of the blocks
N_PARAMS = B2 + C
WORK_PER_ROW = D + H + H + C  # gathered rows, hidden activations, their delta, logits


@cfunc(USER_SIGNATURE, nopython=True, cache=True)
def loss_grad(theta_p, n_params, X_p, y_p, n_rows, n_features, rows_p, n, grad_p, work_p, pred_p, loss_p):
    """Mean cross-entropy of the batch rows[0:n]; gradient into grad, predictions into pred."""
    theta = carray(theta_p, (N_PARAMS,))
    w1 = theta[W1:B1].reshape((D, H))
    b1 = theta[B1:W2]
    w2 = theta[W2:B2].reshape((H, C))
    b2 = theta[B2:]
    grad = carray(grad_p, (N_PARAMS,))
    g_w1 = grad[W1:B1].reshape((D, H))
    g_b1 = grad[B1:W2]
    g_w2 = grad[W2:B2].reshape((H, C))
    g_b2 = grad[B2:]
    X = carray(X_p, (n_rows, D))
    y = carray(y_p, (n_rows,))
    rows = carray(rows_p, (n,))
    pred = carray(pred_p, (n,))
    work = carray(work_p, (n * WORK_PER_ROW,))
    xb = work[:n * D].reshape((n, D))
    h = work[n * D:n * (D + H)].reshape((n, H))
    dh = work[n * (D + H):n * (D + 2 * H)].reshape((n, H))
    z = work[n * (D + 2 * H):].reshape((n, C))
    for i in range(n):
        xb[i, :] = X[rows[i], :]
    # forward
    np.dot(xb, w1, h)
    for i in range(n):
        for j in range(H):
            v = h[i, j] + b1[j]
            h[i, j] = v if v > 0.0 else 0.0
    np.dot(h, w2, z)
    inv_n = 1.0 / n
    total = 0.0
    for i in range(n):
        best = 0
        for j in range(C):
            z[i, j] += b2[j]
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
    # backward: z holds d(loss)/d(logits)
    np.dot(h.T, z, g_w2)
    for j in range(C):
        g_b2[j] = 0.0
    for i in range(n):
        for j in range(C):
            g_b2[j] += z[i, j]
    np.dot(z, w2.T, dh)
    for j in range(H):
        g_b1[j] = 0.0
    for i in range(n):
        for j in range(H):
            v = dh[i, j] if h[i, j] > 0.0 else 0.0
            dh[i, j] = v
            g_b1[j] += v
    np.dot(xb.T, dh, g_w1)
    carray(loss_p, (1,))[0] = total * inv_n
    return 0


def init(rng: np.random.Generator) -> np.ndarray:
    """He-normal weights N(0, 2/fan_in), zero biases (as the built-in mlp model)."""
    theta = np.zeros(N_PARAMS, dtype=np.float32)
    theta[W1:B1] = rng.standard_normal(D * H, dtype=np.float32) * np.float32(np.sqrt(2.0 / D))
    theta[W2:B2] = rng.standard_normal(H * C, dtype=np.float32) * np.float32(np.sqrt(2.0 / H))
    return theta


model = UserModel(
    name="numba_mlp", loss_grad=loss_grad, n_params=N_PARAMS, init=init, work_per_row=WORK_PER_ROW,
    n_features=D, n_classes=C,
    layout=(("fc1.W", (D, H)), ("fc1.b", (H,)), ("fc2.W", (H, C)), ("fc2.b", (C,))),
    summary="784-128-10 ReLU MLP in numba (examples/numba_mlp.py)",
)
