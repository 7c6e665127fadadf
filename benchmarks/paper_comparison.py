"""The Leashed-SGD paper's headline experiment (papers.md §2, §7), scaled to this machine.

MLP (784-128-10) and CNN (the authors' conv 1->4, conv 4->8, FC 200->128->10) on MNIST (and
Fashion-MNIST with ``--datasets mnist fashion-mnist``); algorithms ``lock``, ``hogwild`` and ``leashed``
with persistence T_p = inf, 1 and 0; m = 2 and 4 worker threads; a small grid of learning rates.
Every configuration runs in its own subprocess (``python -m leashed train ... --out run.npz``), so its
peak resident memory (``ru_maxrss`` from ``os.wait4``) is its own. Per run:

* wall-clock time to reach 50 %, 25 % and 10 % of the initial training loss (first sample at or below),
  and the speedup over ``lock`` at the same (model, data, m, lr, seed): ``x_lock_t25`` = lock's t25 / t25;
* whether it diverged (non-finite loss or parameters, or a final loss above 80 % of the initial loss:
  too large a step can leave the loss at chance level without a NaN);
* peak RSS of the process, the most live parameter vectors seen in the samples and their size;
* the staleness τ it saw (mean, max), dropped gradients, committed updates per second.

Outputs (``--out DIR``): ``paper_comparison.csv/.json`` (one row per run), ``summary.csv/.json`` (per
algorithm: fraction diverged, median speedup over lock, staleness, memory), ``loss_vs_time.png`` (loss
against wall time per algorithm at one learning rate, one panel per model, data set and m),
``stability.png`` (fraction of runs that diverged, learning rate x algorithm) and ``runs/`` (every
results file and the log of its run).

Usage::

    python benchmarks/paper_comparison.py                       # 2 models x 5 algorithms x m 2,4 x 4 lrs
    python benchmarks/paper_comparison.py --epochs 3 --seeds 3 --datasets mnist fashion-mnist
    python benchmarks/paper_comparison.py --quick               # MLP, m = 2, one lr: under a minute
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Table,
    diverged,
    finite_curve,
    load_note,
    ratio,
    save_loss_panels,
    time_to_target,
)

from leashed import algorithms as registry  # noqa: E402

#: (label, algorithm, persistence)
ALGORITHMS: dict[str, tuple[str, str]] = {
    "lock": ("lock", "inf"),
    "hogwild": ("hogwild", "inf"),
    "leashed-inf": ("leashed", "inf"),
    "leashed-1": ("leashed", "1"),
    "leashed-0": ("leashed", "0"),
}
FRACTIONS = (0.5, 0.25, 0.1)
#: a run whose final loss is above this fraction of its initial loss counts as diverged: too large a step
#: can send the loss up and leave it at chance level (2.30 for 10 classes) without ever producing a NaN.
#: 0.8, not 0.9: runs stuck near chance ended at 87-89 % of the initial loss (m = 16, lr 0.2, test
#: accuracy 0.21-0.22), while the runs that train end below 35 % even after one epoch
STALL = 0.8
COLUMNS = ["model", "dataset", "m", "lr", "seed", "algorithm", "updates_per_s", "t50_s", "t25_s", "t10_s",
           "x_lock_t25", "diverged", "final_loss", "test_acc", "tau_mean", "tau_max", "dropped",
           "live_max", "vectors_MiB", "rss_MiB", "wall_s"]
SUMMARY_COLUMNS = ["algorithm", "runs", "failed", "diverged_frac", "reached_t25", "median_x_lock_t25",
                   "median_updates_per_s", "tau_mean", "live_max", "max_vectors_MiB", "max_rss_MiB"]


@dataclass
class PaperConfig:
    models: tuple[str, ...] = ("mlp", "cnn")
    datasets: tuple[str, ...] = ("mnist",)
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)
    threads: tuple[int, ...] = (2, 4)
    lrs: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0)
    seeds: tuple[int, ...] = (0,)
    epochs: int = 1
    updates: int | None = None          # overrides epochs (smoke tests)
    batch_size: int = 64
    hidden: tuple[int, ...] = (128,)
    evaluations: int = 10
    plot_lr: float | None = None        # learning rate of the loss-vs-time plot (default: middle of lrs)
    timeout_s: float = 900.0


@dataclass
class RunRecord:
    """One configuration's outcome (the table row plus the curve for the plot)."""

    row: dict[str, Any]
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    error: str | None = None


# ------------------------------------------------------------------------------------------- one run
def train_argv(model: str, dataset: str, algorithm: str, persistence: str, threads: int, lr: float,
               seed: int, config: PaperConfig, out: Path) -> list[str]:
    """The ``leashed train`` arguments of one configuration (after ``leashed``)."""
    argv = ["train", "--algorithm", algorithm, "--threads", str(threads),
            "--model", model, "--dataset", dataset, "--batch-size", str(config.batch_size), "--lr", str(lr),
            "--seed", str(seed), "--evaluations", str(config.evaluations), "--out", str(out), "--quiet",
            "--hidden", ",".join(str(h) for h in config.hidden)]
    if registry.algorithm(algorithm).has_persistence:
        argv += ["--persistence", persistence]
    argv += ["--updates", str(config.updates)] if config.updates else ["--epochs", str(config.epochs)]
    return argv


#: Runs ``leashed`` like ``python -m leashed ARGS`` and, at exit, prints the process's own peak resident
#: set (VmHWM of /proc/self/status). ``ru_maxrss`` from ``wait4`` is not used: Linux carries the parent's
#: high-water mark into a child across fork + exec, so a child of a large process (``leashed bench``
#: holds MNIST and PyTorch) would report the parent's peak instead of its own.
PEAK_MARK = "__leashed_peak_rss_kib__"
LAUNCHER = f"""
import atexit, sys
def _peak():
    try:
        with open('/proc/self/status') as fh:
            for line in fh:
                if line.startswith('VmHWM:'):
                    sys.stderr.write('\\n{PEAK_MARK} ' + line.split()[1] + '\\n')
    except OSError:
        pass
atexit.register(_peak)
from leashed.cli import main
sys.exit(main(sys.argv[1:]))
"""


#: how long an interrupted child may take to save its partial result before it is killed
CHILD_STOP_S = 30.0


def _stop_child(proc: subprocess.Popen[Any]) -> None:
    """Pass the signal that interrupted us on to the child (SIGINT unless it was SIGTERM) and wait for it
    to stop and save what it measured (at most :data:`CHILD_STOP_S`, then it is killed): a signal sent to
    this process alone (``kill``, a job manager) must not leave an orphaned run writing files."""
    from leashed import interrupts

    if proc.poll() is not None:
        return
    proc.send_signal(interrupts.signalled() or signal.SIGINT)
    try:
        proc.wait(timeout=CHILD_STOP_S)
    except BaseException:
        proc.kill()
        proc.wait()


def run_subprocess(argv: list[str], log: Path, timeout_s: float) -> tuple[int, float, float]:
    """Run ``leashed`` with the arguments ``argv`` (after ``leashed``) in a fresh Python, output to
    ``log``; returns (exit code, peak RSS in MiB, wall seconds).

    The peak is the child's own VmHWM (see LAUNCHER); where /proc is missing it falls back to the
    child's ``ru_maxrss`` from ``os.wait4``.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", LAUNCHER, *argv]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("# python -m leashed " + " ".join(argv) + "\n")
        fh.flush()
        # its own session: a Ctrl-C at the terminal reaches only us, and we pass it on once (_stop_child)
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        deadline = t0 + timeout_s
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:
            _stop_child(proc)
            raise
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    peak_kib = float(usage.ru_maxrss)
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(PEAK_MARK):
            peak_kib = float(line.split()[1])
    return code, peak_kib / 1024.0, wall


def summarise_result(result: Any, rss_mib: float, wall: float) -> RunRecord:
    """Table row of one RunResult (the grid keys are added by the caller)."""
    s = result.samples
    times, losses = finite_curve(s.time, s.loss)
    l0 = losses[0] if losses else float("nan")
    final = losses[-1] if losses else float("nan")
    bad = diverged(result) or not (math.isfinite(final) and math.isfinite(l0)) or final > STALL * l0
    tau = result.staleness
    n_params = len(result.params)
    live_max = result.extra.get("live_vectors_max")
    if live_max is None and len(s):
        live_max = int(s.live_vectors.max())
    acc = s.accuracy[np.isfinite(s.accuracy)]
    applied = result.totals.get("updates_applied")
    wall_run = result.totals.get("wall_time_s")
    row: dict[str, Any] = {
        "updates_per_s": applied / wall_run if applied and wall_run else None,
        "diverged": bool(bad),
        "final_loss": final,
        "test_acc": float(acc[-1]) if len(acc) and not bad else None,
        "tau_mean": float(tau.mean()) if len(tau) else None,
        "tau_max": int(tau.max()) if len(tau) else None,
        "dropped": result.totals.get("updates_dropped"),
        "live_max": live_max,
        "vectors_MiB": live_max * n_params * 4 / 2**20 if live_max is not None else None,
        "rss_MiB": rss_mib,
        "wall_s": wall,
        "initial_loss": l0,
    }
    for frac in FRACTIONS:
        row[f"t{int(frac * 100)}_s"] = (None if bad or not math.isfinite(l0)
                                        else time_to_target(times, losses, frac * l0))
    return RunRecord(row, times, losses)


def run_one(model: str, dataset: str, label: str, threads: int, lr: float, seed: int, config: PaperConfig,
            runs_dir: Path) -> RunRecord:
    from leashed.results import RunResult

    algorithm, persistence = ALGORITHMS[label]
    stem = f"{model}-{dataset}-{label}-m{threads}-lr{lr:g}-s{seed}"
    out, log = runs_dir / f"{stem}.npz", runs_dir / f"{stem}.log"
    out.unlink(missing_ok=True)
    argv = train_argv(model, dataset, algorithm, persistence, threads, lr, seed, config, out)
    code, rss, wall = run_subprocess(argv, log, config.timeout_s)
    keys = {"model": model, "dataset": dataset, "m": threads, "lr": lr, "seed": seed, "algorithm": label}
    if out.exists():
        record = summarise_result(RunResult.load(out), rss, wall)
        record.row.update(keys)
        return record
    text = [line for line in log.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith(PEAK_MARK)]
    last = text[-1] if text else f"exit status {code}"
    if "diverg" in last.lower() or "non-finite" in last.lower() or "nan" in last.lower():
        return RunRecord({**keys, "diverged": True, "rss_MiB": rss, "wall_s": wall}, error=last)
    # A failed run (a bug, not a result) is kept as a row without metrics and named in the table's notes.
    return RunRecord({**keys, "rss_MiB": rss, "wall_s": wall},
                     error=f"`leashed {' '.join(argv)}` failed (exit {code}): {last} (log: {log})")


# ------------------------------------------------------------------------------------------- grid
def run_grid(config: PaperConfig, out_dir: Path, progress: Callable[[str], None] | None = None
             ) -> list[RunRecord]:
    """Run every configuration of ``config``, one subprocess each; returns their records."""
    runs_dir = out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    grid = [(mo, ds, m, lr, seed, alg) for mo in config.models for ds in config.datasets
            for m in config.threads for lr in config.lrs for seed in config.seeds
            for alg in config.algorithms]
    records: list[RunRecord] = []
    for i, (mo, ds, m, lr, seed, alg) in enumerate(grid):
        if progress:
            progress(f"paper_comparison: run {i + 1}/{len(grid)}: {mo} {ds} {alg} m={m} lr={lr:g} "
                     f"seed={seed}")
        row_len = f"{config.updates} updates" if config.updates else f"{config.epochs} epoch(s)"
        record = run_one(mo, ds, alg, m, lr, seed, config, runs_dir)
        record.row["length"] = row_len
        if record.error and progress:
            progress(f"paper_comparison: {record.error}")
        records.append(record)
    return records


def make_tables(records: list[RunRecord], title: str = "Leashed-SGD paper comparison"
                ) -> tuple[Table, Table]:
    """The per-run table (with the speedup over lock filled in) and the per-algorithm summary."""
    lock_t25 = {_point(r.row): r.row.get("t25_s") for r in records if r.row["algorithm"] == "lock"}
    for r in records:
        r.row["x_lock_t25"] = ratio(lock_t25.get(_point(r.row)), r.row.get("t25_s"))
    lengths = sorted({str(r.row.get("length")) for r in records})
    table = Table(f"{title}: {', '.join(lengths)} per run", list(COLUMNS), [r.row for r in records])
    table.notes += [
        "t50/t25/t10 = wall seconds to the first sample with training loss <= 50/25/10 % of the initial "
        "loss; x_lock_t25 = lock's t25 / this run's t25 (same model, data, m, lr, seed)",
        f"diverged = non-finite loss or parameters, or final loss above {STALL:.0%} of the initial loss; "
        "rss_MiB = peak RSS of the run's process (data set included); "
        "vectors_MiB = live_max x parameters x 4 B",
        load_note(),
    ]
    table.notes += [f"FAILED: {r.error}" for r in records if r.error and r.row.get("diverged") is None]
    return table, summarise(records)


def run_paper(config: PaperConfig, out_dir: Path, progress: Callable[[str], None] | None = None
              ) -> tuple[Table, Table, list[RunRecord]]:
    """Run the whole grid; returns (per-run table, per-algorithm summary, records)."""
    records = run_grid(config, out_dir, progress)
    table, summary = make_tables(records, f"Leashed-SGD paper comparison (batch {config.batch_size})")
    return table, summary, records


def _point(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["model"], row["dataset"], row["m"], row["lr"], row["seed"])


def summarise(records: Sequence[RunRecord]) -> Table:
    table = Table("Per algorithm, over every model, data set, m, lr and seed", list(SUMMARY_COLUMNS))
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r.row["algorithm"], []).append(r.row)

    def med(values: list[Any]) -> float | None:
        ok = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        return statistics.median(ok) if ok else None

    def most(values: list[Any]) -> float | None:
        ok = [float(v) for v in values if v is not None]
        return max(ok) if ok else None

    for alg, every in by.items():
        rows = [r for r in every if r.get("diverged") is not None]  # leave out runs that failed
        taus = [r.get("tau_mean") for r in rows if r.get("tau_mean") is not None]
        table.add(algorithm=alg, runs=len(rows), failed=len(every) - len(rows),
                  diverged_frac=sum(bool(r.get("diverged")) for r in rows) / len(rows) if rows else None,
                  reached_t25=sum(r.get("t25_s") is not None for r in rows),
                  median_x_lock_t25=med([r.get("x_lock_t25") for r in rows]),
                  median_updates_per_s=med([r.get("updates_per_s") for r in rows]),
                  tau_mean=sum(taus) / len(taus) if taus else None,
                  live_max=most([r.get("live_max") for r in rows]),
                  max_vectors_MiB=most([r.get("vectors_MiB") for r in rows]),
                  max_rss_MiB=most([r.get("rss_MiB") for r in rows]))
    table.notes.append("diverged_frac = stability (lower is better); reached_t25 = runs that reached 25 % of "
                       "their initial loss; failed = runs that crashed (see the notes of the table above)")
    return table


# ------------------------------------------------------------------------------------------- plots
def plot_loss_vs_time(records: Sequence[RunRecord], path: Path, lr: float) -> Path | None:
    """Training loss against wall time, one line per algorithm (first seed), one panel per model, data
    set and m, at learning rate ``lr`` (a panel without that lr shows its middle one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in records if r.times]
    panels = sorted({(r.row["model"], r.row["dataset"], r.row["m"]) for r in chosen})
    if not panels:
        return None
    algs = list(dict.fromkeys(r.row["algorithm"] for r in chosen))
    cols = min(len(panels), 2)
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.0 * cols, 3.8 * rows_n), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        mine = [r for r in chosen if (r.row["model"], r.row["dataset"], r.row["m"]) == panel]
        lrs = sorted({r.row["lr"] for r in mine})
        use = lr if lr in lrs else lrs[(len(lrs) - 1) // 2]
        seed0 = min(r.row["seed"] for r in mine)
        for r in mine:
            if r.row["lr"] != use or r.row["seed"] != seed0:
                continue
            t = np.asarray(r.times)
            loss = np.asarray(r.losses, dtype=float)
            ok = np.isfinite(loss) & (loss > 0)
            ax.plot(t[ok], loss[ok], "--" if r.row.get("diverged") else "-", marker="o", markersize=2.5,
                    color=f"C{algs.index(r.row['algorithm'])}", label=r.row["algorithm"])
        ax.set_title(f"{panel[0]} on {panel[1]}, m = {panel[2]}, lr = {use:g}", fontsize="medium")
    return save_loss_panels(fig, axes, len(panels), "training loss",
                            "Training loss vs wall-clock time (dashed: diverged)", path)


def plot_stability(records: Sequence[RunRecord], path: Path) -> Path | None:
    """Fraction of runs that diverged, learning rate (x) by algorithm (y), annotated with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r.row.get("diverged") is not None]
    if not records:
        return None
    algs = list(dict.fromkeys(r.row["algorithm"] for r in records))
    lrs = sorted({r.row["lr"] for r in records})
    frac = np.full((len(algs), len(lrs)), np.nan)
    counts = np.zeros((len(algs), len(lrs), 2), dtype=int)
    for r in records:
        i, j = algs.index(r.row["algorithm"]), lrs.index(r.row["lr"])
        counts[i, j, 0] += bool(r.row.get("diverged"))
        counts[i, j, 1] += 1
    ok = counts[..., 1] > 0
    frac[ok] = counts[..., 0][ok] / counts[..., 1][ok]
    fig, ax = plt.subplots(figsize=(1.6 * len(lrs) + 3, 0.55 * len(algs) + 1.8))
    im = ax.imshow(frac, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
    ax.set_yticks(range(len(algs)), algs)
    ax.set_xlabel("learning rate")
    for i in range(len(algs)):
        for j in range(len(lrs)):
            if counts[i, j, 1]:
                ax.text(j, i, f"{counts[i, j, 0]}/{counts[i, j, 1]}", ha="center", va="center",
                        color="white" if frac[i, j] > 0.5 else "black", fontsize="small")
    fig.colorbar(im, ax=ax, label="fraction diverged")
    ax.set_title("Stability: runs diverged / runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(table: Table, summary: Table, records: Sequence[RunRecord], out_dir: Path,
                  plot_lr: float) -> list[Path]:
    paths = table.write(out_dir, "paper_comparison") + summary.write(out_dir, "summary")
    for made in (plot_loss_vs_time(records, out_dir / "loss_vs_time.png", plot_lr),
                 plot_stability(records, out_dir / "stability.png")):
        if made is not None:
            paths.append(made)
    return paths


def default_plot_lr(config: PaperConfig) -> float:
    if config.plot_lr is not None:
        return config.plot_lr
    return sorted(config.lrs)[(len(config.lrs) - 1) // 2]


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=("mlp", "cnn", "softmax"), default=None,
                   help="models (default mlp cnn)")
    p.add_argument("--datasets", nargs="+", default=None, help="data sets (default mnist)")
    p.add_argument("--algorithms", nargs="+", choices=tuple(ALGORITHMS), default=None,
                   help="algorithms (default all five)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts m (default 2 4)")
    p.add_argument("--lr", type=float, nargs="+", default=None,
                   help="learning rates (default 0.05 0.2 0.5 1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training data per run (default 1)")
    p.add_argument("--updates", type=int, default=None, help="gradients per run (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--evaluations", type=int, default=10,
                   help="parameter snapshots evaluated per run (default 10; each costs a forward pass over "
                        "20,000 rows, about 2 s for the CNN)")
    p.add_argument("--plot-lr", type=float, default=None, help="lr of the loss-vs-time plot")
    p.add_argument("--quick", action="store_true",
                   help="MLP, m = 2, lr 0.2, lock / hogwild / leashed-inf / leashed-0, 400 updates")
    p.add_argument("--out", type=Path, default=Path("paper-comparison"), help="output folder")
    return p


def config_from_args(args: argparse.Namespace) -> PaperConfig:
    q = args.quick
    return PaperConfig(
        models=tuple(args.models) if args.models else (("mlp",) if q else ("mlp", "cnn")),
        datasets=tuple(args.datasets) if args.datasets else ("mnist",),
        algorithms=tuple(args.algorithms) if args.algorithms else
        (("lock", "hogwild", "leashed-inf", "leashed-0") if q else tuple(ALGORITHMS)),
        threads=tuple(args.threads) if args.threads else ((2,) if q else (2, 4)),
        lrs=tuple(args.lr) if args.lr else ((0.2,) if q else (0.05, 0.2, 0.5, 1.0)),
        seeds=tuple(range(max(1, args.seeds))),
        epochs=args.epochs,
        updates=args.updates if args.updates is not None else (400 if q else None),
        batch_size=args.batch_size,
        evaluations=args.evaluations if not q else min(args.evaluations, 10),
        plot_lr=args.plot_lr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    table, summary, records = run_paper(config, args.out,
                                        progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(table.to_text())
    print()
    print(summary.to_text())
    for path in write_outputs(table, summary, records, args.out, default_plot_lr(config)):
        print(f"wrote {path}")
    failed = [r for r in records if r.error and r.row.get("diverged") is None]
    if failed:
        print(f"{len(failed)} run(s) failed: see the FAILED notes and the logs in {args.out / 'runs'}")
    return 1 if failed else 0


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "paper_comparison.py"))
