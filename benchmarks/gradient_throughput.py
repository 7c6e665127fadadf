"""One-thread gradient throughput: our nogil kernel versus the same maths in straightforward numpy.

For a model (default the MLP 784-128-10) on random MNIST-shaped data, prints gradient evaluations per
second at each batch size for

- ``kernel``: ``BoundModel.loss_grad_many`` (a nogil loop over pre-drawn batches, as a runtime worker runs),
- ``kernel/py``: ``BoundModel.loss_grad`` called from a Python loop (adds the per-call checks),
- ``numpy``: ``leashed.models.reference.loss_grad`` on ``X[rows]`` in float32 (gather included),

and the ratio kernel / numpy. BLAS is limited to one thread with threadpoolctl. Targets (MLP): >= 1.0x
at batch 512 and >= 1.5x at batch 64.

    python benchmarks/gradient_throughput.py [--model mlp] [--batch 64 512] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from leashed.models import MODEL_NAMES, build_model
from leashed.models import reference as ref


def _calibrate(fn: Callable[[int], None], seconds: float) -> int:
    """Number of calls k for which fn(k) takes about `seconds`."""
    k = 1
    while True:
        t0 = time.perf_counter()
        fn(k)
        dt = time.perf_counter() - t0
        if dt > 0.05 or k >= 1 << 20:
            return max(1, int(k * seconds / max(dt, 1e-9)))
        k *= 4


def _rates(fns: dict[str, Callable[[int], None]], seconds: float, rounds: int = 5) -> dict[str, float]:
    """Best calls per second of each fn(k) (k gradient evaluations), the fns interleaved over `rounds`
    rounds so that a burst of load from other processes does not favour one of them."""
    ks = {name: _calibrate(fn, seconds / rounds) for name, fn in fns.items()}
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(ks[name])
            best[name] = max(best[name], ks[name] / (time.perf_counter() - t0))
    return best


def measure(model_name: str, batch: int, seconds: float, hidden: tuple[int, ...] = (128,),
            n_rows: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Gradient evaluations per second of kernel (nogil loop), kernel from Python, and numpy."""
    rng = np.random.default_rng(seed)
    model = build_model(model_name, 784, 10, hidden=hidden)
    X = rng.random((n_rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, n_rows).astype(np.float32 if model_name == "quadratic" else np.int32)
    theta = model.init_params(seed)
    bound = model.bind(X, y, batch)
    grad = np.empty(model.n_params, dtype=np.float32)
    pool = rng.integers(0, n_rows, (256, batch))

    def kernel(k: int) -> None:
        for start in range(0, k, len(pool)):
            bound.loss_grad_many(theta, pool[: min(len(pool), k - start)], grad)

    def kernel_py(k: int) -> None:
        for i in range(k):
            bound.loss_grad(theta, pool[i % len(pool)], grad)

    def numpy_ref(k: int) -> None:
        for i in range(k):
            rows = pool[i % len(pool)]
            ref.loss_grad(model, theta, X[rows], y[rows])

    return _rates({"kernel": kernel, "kernel_py": kernel_py, "numpy": numpy_ref}, seconds)


def run(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Parse argv, measure, print the table; returns one dict per batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=MODEL_NAMES)
    parser.add_argument("--hidden", type=int, nargs="*", default=[128], help="hidden widths (mlp, cnn)")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="timed seconds per implementation and batch size (best of 5 interleaved rounds)")
    args = parser.parse_args(argv)
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} thr)"
                         for i in threadpool_info() if i["user_api"] == "blas")
        model = build_model(args.model, 784, 10, hidden=tuple(args.hidden))
        print(f"model {args.model} ({model.n_params} parameters), one thread; BLAS: {blas}")
        print(f"{'batch':>6} {'kernel/s':>10} {'kernel/py/s':>12} {'numpy/s':>10} {'ratio':>7} "
              f"{'ratio/py':>9}")
        for b in args.batch:
            r = measure(args.model, b, args.seconds, tuple(args.hidden))
            r["batch"] = b
            r["ratio"] = r["kernel"] / r["numpy"]
            r["ratio_py"] = r["kernel_py"] / r["numpy"]
            rows.append(r)
            print(f"{b:>6} {r['kernel']:>10.1f} {r['kernel_py']:>12.1f} {r['numpy']:>10.1f} "
                  f"{r['ratio']:>6.2f}x {r['ratio_py']:>8.2f}x", flush=True)
    return rows


if __name__ == "__main__":
    import sys

    from _common import script_main

    sys.exit(script_main(run, "gradient_throughput.py"))
