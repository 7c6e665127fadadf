"""How close one worker's gradient computation is to its BLAS-bound hardware limit.

For each batch size it times, on one thread with one BLAS thread (threadpoolctl):

* ``kernel``: the leashed MLP loss-and-gradient kernel (``BoundModel.loss_grad_many``: one nogil loop
  over random batches of the training set, row gather, bias, ReLU, softmax cross-entropy included);
* ``gemm``: the same GEMM shapes the kernel runs (forward ``X @ W1``, ``H @ W2``; backward ``H^T @ D2``,
  ``D2 @ W2^T``, ``X^T @ D1``), alone in a tight loop through ``scipy.linalg.blas.sgemm`` (the same
  BLAS library the kernel calls through ``scipy.linalg.cython_blas``).

Both are converted to FLOP/s with the same count (the GEMMs the kernel executes; the textbook
"backward = 2 x forward" also counts the input gradient of the first layer, which is never computed,
and is printed for reference). The ratio kernel / gemm is how much of the BLAS-bound limit one
worker reaches. Blocks of the two are interleaved and the fastest block of each is kept, which makes
the ratio robust to a busy machine. Target: >= 80 % at batch 512.

Usage::

    python benchmarks/limit.py                      # batches 32 64 512, about 20 s
    python benchmarks/limit.py --batch 512 --seconds 5
    python benchmarks/limit.py --quick              # a few seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Table,
    blas_note,
    gemm_flops,
    load_note,
    mlp_gemm_shapes,
    mlp_nominal_flops,
)

COLUMNS = ["batch", "kernel_us", "gemm_us", "kernel_GFLOPs", "gemm_GFLOPs", "ratio",
           "nominal_kernel_GFLOPs"]
TARGET_BATCH = 512
TARGET_RATIO = 0.80


@dataclass
class LimitConfig:
    batches: tuple[int, ...] = (32, 64, 512)
    hidden: tuple[int, ...] = (128,)
    dataset: str = "mnist"
    seconds: float = 2.0          # total time per batch size and method (split in blocks)
    blocks: int = 7
    seed: int = 0


def _sgemm_call(shape: tuple[str, int, int, int, bool, bool], rng: np.random.Generator
                ) -> Callable[[], object]:
    """A no-argument callable running one row-major GEMM through scipy's f2py sgemm without copies.

    Row-major ``C = op(A) @ op(B)`` is column-major ``C^T = op(B)^T @ op(A)^T``; the transposed views of
    C-ordered arrays are Fortran-ordered, so f2py passes them through as they are.
    """
    from scipy.linalg.blas import sgemm

    _, m, n, k, ta, tb = shape
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    c = np.zeros((m, n), dtype=np.float32)
    at, bt, ct = a.T, b.T, c.T
    out = sgemm(1.0, bt, at, 0.0, ct, trans_a=int(tb), trans_b=int(ta), overwrite_c=1)
    if not np.shares_memory(out, c):
        raise RuntimeError("sgemm copied its output; the BLAS-limit loop would time a copy")
    expected = (a.T if ta else a) @ (b.T if tb else b)
    if not np.allclose(c, expected, rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"sgemm layout check failed for {shape}")

    def call() -> object:
        return sgemm(1.0, bt, at, 0.0, ct, trans_a=int(tb), trans_b=int(ta), overwrite_c=1)

    return call


def _best_time(run_block: Callable[[int], None], iters: int) -> float:
    t0 = time.perf_counter()
    run_block(iters)
    return (time.perf_counter() - t0) / iters


def _calibrate(run_block: Callable[[int], None], block_seconds: float) -> int:
    iters = 1
    while True:
        t = _best_time(run_block, iters) * iters
        if t >= block_seconds / 4 or iters >= 1 << 20:
            return max(1, int(iters * block_seconds / max(t, 1e-9)))
        iters *= 4


def measure_batch(batch: int, config: LimitConfig, X: np.ndarray, y: np.ndarray) -> dict[str, object]:
    """Time the kernel and the bare GEMMs at one batch size; returns one table row."""
    from leashed.models.registry import build_model

    n_classes = int(y.max()) + 1
    model = build_model("mlp", X.shape[1], n_classes, config.hidden)
    bound = model.bind(X, y, batch)
    theta = model.init_params(config.seed)
    grad = np.zeros(model.n_params, dtype=np.float32)
    rng = np.random.default_rng(config.seed)
    pool = rng.integers(0, X.shape[0], size=(64, batch), dtype=np.int64)  # 64 random batches, reused

    many = getattr(bound, "loss_grad_many", None)

    def kernel_block(iters: int) -> None:
        done = 0
        while done < iters:
            k = min(iters - done, len(pool))
            if many is not None:
                many(theta, pool[:k], grad)
            else:
                for i in range(k):
                    bound.loss_grad(theta, pool[i], grad)
            done += k

    widths = [X.shape[1], *config.hidden, n_classes]
    shapes = mlp_gemm_shapes(batch, widths)
    calls = [_sgemm_call(s, rng) for s in shapes]

    def gemm_block(iters: int) -> None:
        for _ in range(iters):
            for call in calls:
                call()

    block_s = config.seconds / config.blocks
    k_iters = _calibrate(kernel_block, block_s)
    g_iters = _calibrate(gemm_block, block_s)
    k_best = g_best = float("inf")
    for _ in range(config.blocks):  # interleaved, so both see the same background load
        k_best = min(k_best, _best_time(kernel_block, k_iters))
        g_best = min(g_best, _best_time(gemm_block, g_iters))
    flops = gemm_flops(shapes)
    return {
        "batch": batch,
        "kernel_us": k_best * 1e6,
        "gemm_us": g_best * 1e6,
        "kernel_GFLOPs": flops / k_best / 1e9,
        "gemm_GFLOPs": flops / g_best / 1e9,
        "ratio": g_best / k_best,
        "nominal_kernel_GFLOPs": mlp_nominal_flops(batch, widths) / k_best / 1e9,
    }


def run_limit(config: LimitConfig, progress: Callable[[str], None] | None = None, data: Any = None) -> Table:
    """Measure every batch size of ``config`` (on ``data``, else ``config.dataset`` loaded); returns the
    table (ratio column = kernel / BLAS limit)."""
    from threadpoolctl import threadpool_limits

    from leashed.models.datasets import load_dataset

    data = data if data is not None else load_dataset(config.dataset)
    X, y = data.X_train, data.y_train
    arch = "-".join(map(str, [X.shape[1], *config.hidden, data.n_classes]))
    table = Table(f"One worker vs its BLAS-bound limit: MLP {arch} on {config.dataset}, 1 thread, "
                  f"1 BLAS thread", list(COLUMNS))
    with threadpool_limits(limits=1, user_api="blas"):
        for batch in config.batches:
            if progress:
                progress(f"limit: batch {batch}")
            table.add(**measure_batch(batch, config, X, y))
        note_blas = blas_note()
    widths = [X.shape[1], *config.hidden, data.n_classes]
    table.notes += [
        f"FLOPs per gradient = executed GEMMs: {gemm_flops(mlp_gemm_shapes(1, widths)):,} x batch "
        f"(forward 2B(784*128+128*10), backward 2B(784*128+2*128*10): no input gradient); "
        f"nominal_kernel_GFLOPs counts backward = 2 x forward ({mlp_nominal_flops(1, widths):,} x batch)",
        "ratio = gemm_us / kernel_us = kernel FLOP/s / BLAS-limit FLOP/s (best of "
        f"{config.blocks} interleaved blocks each); target >= {TARGET_RATIO:.0%} at batch {TARGET_BATCH}",
        note_blas,
        load_note(),
    ]
    return table


def target_met(table: Table) -> bool | None:
    for row in table.rows:
        if row["batch"] == TARGET_BATCH:
            return bool(row["ratio"] >= TARGET_RATIO)
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 32 64 512)")
    p.add_argument("--hidden", type=int, nargs="+", default=[128], help="hidden widths (default 128)")
    p.add_argument("--dataset", default="mnist", help="data set name (default mnist)")
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds per batch size and method (default 3, --quick 0.4)")
    p.add_argument("--blocks", type=int, default=7, help="interleaved timing blocks (best kept)")
    p.add_argument("--quick", action="store_true", help="short run (batches 64 512, 0.4 s each)")
    p.add_argument("--out", type=Path, default=None, help="also write limit.csv and limit.json here")
    return p


def config_from_args(args: argparse.Namespace) -> LimitConfig:
    batches = tuple(args.batch) if args.batch else ((64, 512) if args.quick else (32, 64, 512))
    seconds = args.seconds if args.seconds is not None else (0.4 if args.quick else 3.0)
    return LimitConfig(batches=batches, hidden=tuple(args.hidden), dataset=args.dataset, seconds=seconds,
                       blocks=max(1, args.blocks if not args.quick else min(args.blocks, 4)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    table = run_limit(config_from_args(args), progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(table.to_text())
    met = target_met(table)
    if met is not None:
        print(f"target (>= {TARGET_RATIO:.0%} of the BLAS limit at batch {TARGET_BATCH}): "
              f"{'met' if met else 'NOT met'}")
    if args.out:
        for path in table.write(args.out, "limit"):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "limit.py"))
