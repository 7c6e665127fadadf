"""Plain-numpy reference of every model's loss and gradient (same maths and layouts as _kernels.pyx).

Used by the tests (in float64, for finite differences) and by the benchmark (in float32, as "the same
maths in straightforward numpy"). Computation happens in the dtype of ``theta``.

- softmax / mlp: dense layers x W + b with ReLU between them, mean softmax cross-entropy.
- cnn: NHWC activations, HWIO conv weights, im2col with columns (ky, kx, c), 2x2 max-pool with floor
  (first maximum of each window gets the gradient), pooled features flattened (h, w, c).
- counter: loss = -sum(theta)/d, "gradient" -1 (d times the true gradient, by design).
- quadratic: loss = 0.5 mean (X w - y)^2.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from leashed.models._kernels import Model

__all__ = ["evaluate", "forward", "loss_grad"]


def _xent(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of logits z [n, C] (log-sum-exp shift) and its gradient wrt z."""
    n = z.shape[0]
    zs = z - z.max(axis=1, keepdims=True)
    e = np.exp(zs)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(s[:, 0]) - zs[rows, y]))
    dz = e / s
    dz[rows, y] -= 1.0
    dz /= n
    return loss, dz


def _dense(blocks: dict, x: np.ndarray, n_layers: int, y: np.ndarray, grad: dict | None):
    """Dense stack; returns (loss, logits, d loss / d x or None)."""
    acts = [x]
    for k in range(1, n_layers + 1):
        a = acts[-1] @ blocks[f"fc{k}.W"] + blocks[f"fc{k}.b"]
        if k < n_layers:
            a = np.maximum(a, 0)
        acts.append(a)
    loss, d = _xent(acts[-1], y)
    if grad is None:
        return loss, acts[-1], None
    for k in range(n_layers, 0, -1):
        grad[f"fc{k}.W"][...] = acts[k - 1].T @ d
        grad[f"fc{k}.b"][...] = d.sum(axis=0)
        d = d @ blocks[f"fc{k}.W"].T
        if k > 1:
            d = d * (acts[k - 1] > 0)
    return loss, acts[-1], d


def _im2col(a: np.ndarray) -> np.ndarray:
    """a [n, H, W, C] -> [n * (H-2) * (W-2), 9C], columns (ky, kx, c)."""
    n, H, W, C = a.shape
    win = sliding_window_view(a, (3, 3), axis=(1, 2))  # [n, H-2, W-2, C, 3, 3]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n * (H - 2) * (W - 2), 9 * C)


def _col2im(dcol: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    n, H, W, C = shape
    d = dcol.reshape(n, H - 2, W - 2, 3, 3, C)
    out = np.zeros(shape, dtype=dcol.dtype)
    for ky in range(3):
        for kx in range(3):
            out[:, ky:ky + H - 2, kx:kx + W - 2, :] += d[:, :, :, ky, kx, :]
    return out


def _pool(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2/2 max-pool with floor of a [n, H, W, C]: (pooled, argmax in 0..3 over (dy, dx))."""
    n, H, W, C = a.shape
    PH, PW = H // 2, W // 2
    w = a[:, :2 * PH, :2 * PW, :].reshape(n, PH, 2, PW, 2, C)
    w = w.transpose(0, 1, 3, 5, 2, 4).reshape(n, PH, PW, C, 4)
    arg = w.argmax(axis=-1)
    return np.take_along_axis(w, arg[..., None], axis=-1)[..., 0], arg


def _pool_back(dp: np.ndarray, arg: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    n, H, W, C = shape
    PH, PW = H // 2, W // 2
    w = np.zeros((n, PH, PW, C, 4), dtype=dp.dtype)
    np.put_along_axis(w, arg[..., None], dp[..., None], axis=-1)
    out = np.zeros(shape, dtype=dp.dtype)
    out[:, :2 * PH, :2 * PW, :] = w.reshape(n, PH, PW, C, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(
        n, 2 * PH, 2 * PW, C)
    return out


def _cnn(model: Model, blocks: dict, X: np.ndarray, y: np.ndarray, grad: dict | None):
    cin, H, W = model.input_shape
    n = X.shape[0]
    x = X.reshape(n, cin, H, W).transpose(0, 2, 3, 1)
    col1 = _im2col(x)
    W1, W2 = blocks["conv1.W"], blocks["conv2.W"]
    a1 = np.maximum(col1 @ W1.reshape(-1, W1.shape[3]) + blocks["conv1.b"], 0).reshape(n, H - 2, W - 2, -1)
    p1, arg1 = _pool(a1)
    col2 = _im2col(p1)
    _, h1, w1, _ = p1.shape
    a2 = np.maximum(col2 @ W2.reshape(-1, W2.shape[3]) + blocks["conv2.b"], 0).reshape(n, h1 - 2, w1 - 2, -1)
    p2, arg2 = _pool(a2)
    loss, z, dflat = _dense(blocks, p2.reshape(n, -1), len(model.hidden) + 1, y, grad)
    if grad is None:
        return loss, z
    da2 = _pool_back(dflat.reshape(p2.shape), arg2, a2.shape) * (a2 > 0)
    da2 = da2.reshape(-1, da2.shape[3])
    grad["conv2.W"][...] = (col2.T @ da2).reshape(W2.shape)
    grad["conv2.b"][...] = da2.sum(axis=0)
    dp1 = _col2im(da2 @ W2.reshape(-1, W2.shape[3]).T, p1.shape)
    da1 = (_pool_back(dp1, arg1, a1.shape) * (a1 > 0)).reshape(-1, a1.shape[3])
    grad["conv1.W"][...] = (col1.T @ da1).reshape(W1.shape)
    grad["conv1.b"][...] = da1.sum(axis=0)
    return loss, z


def _run(model: Model, theta: np.ndarray, X: np.ndarray, y, want_grad: bool):
    theta = np.asarray(theta)
    dtype = theta.dtype
    X = np.asarray(X, dtype=dtype)
    g = np.zeros_like(theta) if want_grad else None
    name = model.name
    if name == "counter":
        if g is not None:
            g[:] = -1.0
        return float(-theta.sum(dtype=np.float64) / theta.size), g, None
    if name == "quadratic":
        r = X @ theta - np.asarray(y, dtype=dtype)
        if g is not None:
            g[:] = X.T @ r / X.shape[0]
        return float(0.5 * np.mean(r * r)), g, None
    y = np.asarray(y, dtype=np.int64)
    blocks = model.unflatten(theta)
    gb = model.unflatten(g) if g is not None else None
    if name == "cnn":
        loss, z = _cnn(model, blocks, X, y, gb)
    else:
        loss, z, _ = _dense(blocks, X, len(model.hidden) + 1, y, gb)
    return loss, g, z


def loss_grad(model: Model, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss over all rows of (X, y) at theta and its gradient (dtype of theta)."""
    loss, g, _ = _run(model, theta, X, y, True)
    return loss, g


def forward(model: Model, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Mean loss and the logits (None for counter and quadratic), no gradient."""
    loss, _, z = _run(model, theta, X, y, False)
    return loss, z


def evaluate(model: Model, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean loss, accuracy) like Model.evaluate; accuracy NaN for counter and quadratic."""
    loss, z = forward(model, theta, X, y)
    if z is None:
        return loss, float("nan")
    return loss, float(np.mean(z.argmax(axis=1) == np.asarray(y)))
