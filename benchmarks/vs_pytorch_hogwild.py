"""leashed's runtime against PyTorch's documented Hogwild recipe, side by side in one run.

Same MLP (784-128-10, ReLU, softmax cross-entropy), same data (MNIST), same initial parameters (the
leashed He-normal init, copied into the PyTorch model), same learning rate, plain SGD, the same total
number of gradients. PyTorch follows its multiprocessing notes ("Hogwild"): ``model.share_memory()``,
one ``torch.multiprocessing`` process per worker, ``torch.set_num_threads(1)`` in each, every worker
looping over its own share of the training rows with its own index permutation (no DataLoader) and
``torch.optim.SGD.step()`` on the shared parameters. leashed runs ``hogwild`` and ``leashed`` (T_p = inf)
on worker threads.

Measured per (batch size, workers, implementation): committed updates per second (from the moment
all workers are released to the last one finishing; process start-up is excluded), the wall time to
reach a training loss (on a fixed 10,000-row training subset, at checkpoints), the final test
accuracy, and our/their ratios. Checkpoints: for leashed, the samples of its RunResult; for
PyTorch, the main process copies the shared parameters each time the summed update count passes the
next checkpoint, and evaluates the copies after the run, with the same evaluation code as leashed.
Target: >= 1.5x PyTorch's updates/s at batch 64 on every worker count, equal or better accuracy.

PyTorch is never a dependency of leashed; without it this script prints one line and exits 0.
Install the CPU build with ``pip install torch==2.13.0``.

Usage::

    python benchmarks/vs_pytorch_hogwild.py                          # batches 32 64 512, 1 and 2 workers
    python benchmarks/vs_pytorch_hogwild.py --batch 64 --workers 2 --epochs 3 --lr 0.1
    python benchmarks/vs_pytorch_hogwild.py --quick                  # a few seconds
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
    finite_curve,
    load_note,
    loss_subset,
    ratio,
    run_runtime,
    save_loss_panels,
    time_to_target,
    torch_or_none,
)

COLUMNS = ["batch", "workers", "impl", "updates", "wall_s", "updates_per_s", "x_torch_rate",
           "t_loss_s", "x_torch_time", "final_loss", "test_acc", "d_acc"]
OURS = ("leashed", "hogwild")
TARGET_BATCH = 64
TARGET_RATE = 1.5
ACC_TOLERANCE = 0.005   # "equal" accuracy: within half a percentage point (one run each)


@dataclass
class VsTorchConfig:
    batches: tuple[int, ...] = (32, 64, 512)
    workers: tuple[int, ...] = (1, 2)
    hidden: tuple[int, ...] = (128,)
    dataset: str = "mnist"
    lr: float = 0.1
    epochs: int = 5
    updates: int | None = None          # overrides epochs: total gradients per run
    target_loss: float = 0.3
    checkpoints: int = 20
    seed: int = 0
    start_method: str = "fork"
    train_rows: int | None = None       # use only the first N training rows (smoke tests)
    impls: tuple[str, ...] = ("pytorch", *OURS)


@dataclass
class Curve:
    """What one run gave: totals, checkpoint curve (time, loss), final test accuracy."""

    impl: str
    batch: int
    workers: int
    updates: int
    wall_s: float
    times: list[float]
    losses: list[float]
    test_acc: float

    @property
    def rate(self) -> float:
        return self.updates / self.wall_s if self.wall_s > 0 else float("nan")


# ----------------------------------------------------------------------------------- PyTorch side
def _torch_model(torch: Any, widths: Sequence[int]) -> Any:
    layers: list[Any] = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _linears(model: Any) -> list[Any]:
    return [m for m in model if hasattr(m, "weight")]


def _load_flat(torch: Any, model: Any, theta: np.ndarray, widths: Sequence[int]) -> None:
    """Copy a leashed flat vector (per layer W (in, out) row-major, then b) into the torch model."""
    off = 0
    with torch.no_grad():
        for lin, fi, fo in zip(_linears(model), widths[:-1], widths[1:], strict=True):
            lin.weight.copy_(torch.from_numpy(theta[off:off + fi * fo].reshape(fi, fo).T.copy()))
            off += fi * fo
            lin.bias.copy_(torch.from_numpy(theta[off:off + fo].copy()))
            off += fo


def _store_flat(model: Any, out: np.ndarray, widths: Sequence[int]) -> None:
    """The torch model's parameters in the leashed flat layout (a racy read, as Hogwild's readers do)."""
    off = 0
    for lin, fi, fo in zip(_linears(model), widths[:-1], widths[1:], strict=True):
        out[off:off + fi * fo].reshape(fi, fo)[...] = lin.weight.detach().numpy().T
        off += fi * fo
        out[off:off + fo] = lin.bias.detach().numpy()
        off += fo


def _torch_worker(rank: int, workers: int, model: Any, X: Any, Y: Any, batch: int, steps: int, lr: float,
                  seed: int, counts: Any, ends: Any, barrier: Any) -> None:
    """One Hogwild process: its own share of the rows, its own permutation, SGD on shared parameters."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(seed + rank)
    gen = torch.Generator().manual_seed(seed + rank)
    share = torch.arange(rank, X.shape[0], workers)
    if len(share) < batch:
        share = torch.arange(X.shape[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    barrier.wait()
    done = 0
    while done < steps:
        perm = share[torch.randperm(len(share), generator=gen)]
        for start in range(0, len(perm) - batch + 1, batch):
            if done >= steps:
                break
            idx = perm[start:start + batch]
            xb = X.index_select(0, idx)
            yb = Y.index_select(0, idx)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            done += 1
            counts[rank] = done
    ends[rank] = time.perf_counter()


def run_torch(config: VsTorchConfig, data: Any, model_ll: Any, subset: np.ndarray, batch: int,
              workers: int, total: int) -> Curve:
    """PyTorch's Hogwild recipe; checkpoints copied in this (main) process while the workers run."""
    torch = torch_or_none()
    if torch is None:
        raise RuntimeError("torch is not installed")
    import torch.multiprocessing as tmp

    torch.set_num_threads(1)
    widths = [data.X_train.shape[1], *config.hidden, int(data.n_classes)]
    model = _torch_model(torch, widths)
    theta0 = model_ll.init_params(config.seed)
    _load_flat(torch, model, theta0, widths)
    model.share_memory()
    X = torch.from_numpy(data.X_train)
    Y = torch.from_numpy(data.y_train.astype(np.int64))
    ctx = tmp.get_context(config.start_method)
    if config.start_method != "fork":
        X.share_memory_()
        Y.share_memory_()
    counts = ctx.RawArray("q", workers)
    ends = ctx.RawArray("d", workers)
    barrier = ctx.Barrier(workers + 1)
    steps = [total // workers + (1 if r < total % workers else 0) for r in range(workers)]
    procs = [ctx.Process(target=_torch_worker, daemon=True,
                         args=(r, workers, model, X, Y, batch, steps[r], config.lr, config.seed, counts,
                               ends, barrier)) for r in range(workers)]
    for p in procs:
        p.start()
    n_ck = max(1, config.checkpoints)
    snaps = np.empty((n_ck + 1, model_ll.n_params), dtype=np.float32)
    snaps[0] = theta0
    snap_times = [0.0]
    taken = 1
    try:
        barrier.wait(timeout=120)
        t0 = time.perf_counter()
        while taken <= n_ck:
            done = sum(counts)
            if done >= total * taken // n_ck:
                now = time.perf_counter() - t0
                _store_flat(model, snaps[taken], widths)
                snap_times.append(now)
                taken += 1
                continue
            if not any(p.is_alive() for p in procs):
                break
            time.sleep(0.002)  # leashed's coordinator polls every 2 ms too
        for p in procs:
            p.join(timeout=120)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"a PyTorch worker failed (exit codes {bad})")
    wall = max(ends) - t0
    Xs, ys = data.X_train[subset], data.y_train[subset]
    losses = [model_ll.evaluate(snaps[i], Xs, ys)[0] for i in range(taken)]
    _store_flat(model, snaps[0], widths)
    test_acc = model_ll.evaluate(snaps[0], data.X_test, data.y_test)[1]
    return Curve("pytorch", batch, workers, int(sum(counts)), wall, snap_times, losses, test_acc)


# ----------------------------------------------------------------------------------- leashed side
def run_ours(config: VsTorchConfig, data: Any, model_ll: Any, algorithm: str, batch: int, workers: int,
             total: int) -> Curve:
    from leashed.spec import ExperimentSpec

    spec = ExperimentSpec(algorithm=algorithm, threads=workers, model="mlp", hidden=config.hidden,
                          dataset=config.dataset, batch_size=batch, lr=config.lr, updates=total,
                          seed=config.seed, evaluations=config.checkpoints)
    result = run_runtime(spec, data)
    applied = int(result.totals.get("updates_applied") or 0)
    wall = float(result.totals.get("wall_time_s") or float("nan"))
    times, losses = finite_curve(result.samples.time, result.samples.loss)
    test_acc = model_ll.evaluate(result.params, data.X_test, data.y_test)[1]
    return Curve(algorithm, batch, workers, applied, wall, times, losses, test_acc)


# ----------------------------------------------------------------------------------- driver
def load_data(config: VsTorchConfig, data: Any = None) -> Any:
    from leashed.models.datasets import load_dataset

    data = data if data is not None else load_dataset(config.dataset)
    if config.train_rows is not None and config.train_rows < data.n_train:
        import dataclasses

        n = config.train_rows
        data = dataclasses.replace(data, X_train=np.ascontiguousarray(data.X_train[:n]),
                                   y_train=np.ascontiguousarray(data.y_train[:n]))
    return data


def run_vs_torch(config: VsTorchConfig, progress: Callable[[str], None] | None = None, data: Any = None
                 ) -> tuple[Table, list[Curve]]:
    """Run every (batch, workers, implementation) on ``data`` (else ``config.dataset`` loaded); returns
    the table and the raw curves."""
    from leashed.models.registry import build_model

    torch = torch_or_none()
    impls = [i for i in config.impls if i != "pytorch" or torch is not None]
    data = load_data(config, data)
    model_ll = build_model("mlp", data.X_train.shape[1], int(data.n_classes), config.hidden)
    subset = loss_subset(data.n_train, config.seed)
    arch = "-".join(map(str, [data.X_train.shape[1], *config.hidden, int(data.n_classes)]))
    table = Table(f"leashed vs PyTorch Hogwild: MLP {arch} "
                  f"on {config.dataset}, lr {config.lr}, plain SGD", list(COLUMNS))
    curves: list[Curve] = []
    for batch in config.batches:
        total = config.updates or config.epochs * (data.n_train // batch)
        for workers in config.workers:
            got: dict[str, Curve] = {}
            for impl in impls:
                if progress:
                    progress(f"vs_pytorch: batch {batch}, {workers} worker(s), {impl}")
                if impl == "pytorch":
                    got[impl] = run_torch(config, data, model_ll, subset, batch, workers, total)
                else:
                    got[impl] = run_ours(config, data, model_ll, impl, batch, workers, total)
            theirs = got.get("pytorch")
            for impl, c in got.items():
                curves.append(c)
                t_loss = time_to_target(c.times, c.losses, config.target_loss)
                mine = impl != "pytorch" and theirs is not None
                t_theirs = time_to_target(theirs.times, theirs.losses, config.target_loss) if theirs else None
                table.add(batch=batch, workers=workers, impl=impl, updates=c.updates, wall_s=c.wall_s,
                          updates_per_s=c.rate,
                          x_torch_rate=ratio(c.rate, theirs.rate) if mine else None,
                          t_loss_s=t_loss,
                          x_torch_time=ratio(t_theirs, t_loss) if mine else None,
                          final_loss=c.losses[-1] if c.losses else None, test_acc=c.test_acc,
                          d_acc=(c.test_acc - theirs.test_acc) if mine else None)
    table.notes += [
        f"same {config.updates or str(config.epochs) + ' epoch(s) of'} gradients per run, shared by the "
        f"workers; same initial parameters (seed {config.seed}); lr {config.lr}",
        "x_torch_rate = our updates/s / PyTorch's; x_torch_time = PyTorch's time to loss / ours "
        f"(loss <= {config.target_loss} on a fixed {len(subset)}-row training subset, first checkpoint "
        f"of {config.checkpoints}); d_acc = our test accuracy - PyTorch's",
        f"PyTorch {torch.__version__ if torch else 'not installed'}: {config.start_method} processes, "
        "model.share_memory(), torch.set_num_threads(1), optim.SGD; leashed: threads, 1 BLAS thread",
        load_note(),
    ]
    if torch is None:
        table.notes.insert(0, "PyTorch is not installed (pip install torch==2.13.0): its rows are missing")
    return table, curves


def target_report(table: Table) -> list[str]:
    """One line per worker count: leashed's rate ratio and accuracy at the target batch size."""
    lines = []
    for row in table.rows:
        if row["impl"] == "leashed" and row["batch"] == TARGET_BATCH and row["x_torch_rate"] is not None:
            ok = row["x_torch_rate"] >= TARGET_RATE and row["d_acc"] >= -ACC_TOLERANCE
            lines.append(f"target at batch {TARGET_BATCH}, {row['workers']} worker(s): "
                         f"{row['x_torch_rate']:.2f}x PyTorch's updates/s (>= {TARGET_RATE}x), test accuracy "
                         f"{row['d_acc']:+.4f} (>= -{ACC_TOLERANCE}): {'met' if ok else 'NOT met'}")
    return lines


def plot_curves(curves: Sequence[Curve], path: Path, target_loss: float | None = None) -> Path | None:
    """Training loss against wall time, one panel per (batch, workers), one line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c.batch, c.workers) for c in curves})
    if not panels:
        return None
    impls = list(dict.fromkeys(c.impl for c in curves))
    cols = min(len(panels), 3)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    for ax, (batch, workers) in zip(axes.flat, panels, strict=False):
        for c in curves:
            if (c.batch, c.workers) == (batch, workers):
                ax.plot(c.times, c.losses, marker="o", markersize=2.5, color=f"C{impls.index(c.impl)}",
                        label=f"{c.impl} ({c.rate:.0f} upd/s)")
        if target_loss is not None:
            ax.axhline(target_loss, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"batch {batch}, {workers} worker(s)", fontsize="medium")
    title = ("leashed vs PyTorch Hogwild: training loss vs wall time" if "pytorch" in impls else
             f"{', '.join(impls)} (leashed's own; PyTorch not installed): training loss vs wall time")
    return save_loss_panels(fig, axes, len(panels), "training loss (10k rows)", title, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 32 64 512)")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1 2)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--epochs", type=int, default=5,
                   help="passes over the training data (default 5: batch 512 reaches loss 0.3 too)")
    p.add_argument("--updates", type=int, default=None, help="total gradients per run (overrides --epochs)")
    p.add_argument("--target-loss", type=float, default=0.3, help="training loss to reach (default 0.3)")
    p.add_argument("--checkpoints", type=int, default=20, help="loss checkpoints per run (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default="fork",
                   help="torch.multiprocessing start method (default fork, as in PyTorch's Hogwild notes)")
    p.add_argument("--impl", nargs="+", choices=("pytorch", *OURS), default=None,
                   help="implementations to run (default all)")
    p.add_argument("--quick", action="store_true", help="short run: batch 64, 1 and 2 workers, 300 updates")
    p.add_argument("--out", type=Path, default=None,
                   help="also write vs_pytorch.csv, .json and the loss-vs-time plot vs_pytorch.png here")
    return p


def config_from_args(args: argparse.Namespace) -> VsTorchConfig:
    quick = args.quick
    return VsTorchConfig(
        batches=tuple(args.batch) if args.batch else ((64,) if quick else (32, 64, 512)),
        workers=tuple(args.workers) if args.workers else (1, 2),
        lr=args.lr, epochs=args.epochs,
        updates=args.updates if args.updates is not None else (300 if quick else None),
        target_loss=args.target_loss,
        checkpoints=args.checkpoints if not quick else min(args.checkpoints, 10),
        seed=args.seed, start_method=args.start_method,
        impls=tuple(args.impl) if args.impl else ("pytorch", *OURS),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if torch_or_none() is None:
        print("vs_pytorch_hogwild: PyTorch is not installed (pip install torch==2.13.0); nothing to compare")
        return 0
    config = config_from_args(args)
    table, curves = run_vs_torch(config, progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(table.to_text())
    for line in target_report(table):
        print(line)
    if args.out:
        paths = table.write(args.out, "vs_pytorch")
        plot = plot_curves(curves, Path(args.out) / "vs_pytorch.png", config.target_loss)
        for path in [*paths, *([plot] if plot else [])]:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "vs_pytorch_hogwild.py"))
