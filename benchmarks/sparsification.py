"""Sparsified asynchronous SGD under staleness (papers.md §5, Candela et al.): does top-k harm convergence?

Candela et al. prove that sparsification does not harm SGD under staleness asymptotically (the O(1/√T)
ergodic rate of SGD; papers.md §5 [paper]). This experiment measures it on the MNIST MLP 784-128-10
(101,770 parameters, batch 64, constant step, seed-fixed batches), dense against top-k at 10 % and 1 %
of the coordinates, each without and with error memory (papers.md §5 "In leashed"):

(a) the simulator with gradients (``leashed.sim.simulate(spec, timing, gradients=True)``): Leashed-SGD
    with T_p = ∞ at m = 16 and 64 simulated threads, so E[τ] = m − 1 (papers.md T1), for a fixed number
    of updates; m = 1 (sequential SGD, τ = 0) is the no-staleness reference (full mode). The timing
    model is C ~ gamma(mean 300 µs, cv 0.2), U = 40 µs, copy ½ + apply ½ (about this machine's MLP
    gradient and update); the sparse runs' U shrinks to U·(½ + ½·K/d) (docs/simulator.md), which moves
    only the time axis, never the order of updates' arithmetic.
(b) the runtime (``leashed.runtime.run``), Leashed-SGD on M = 2 and 4 real threads. A configuration
    the runtime refuses (a runtime without sparsifier support) is skipped with a note.

Output (``--out``, default ``results/sparsification``): ``sparsification.csv`` and ``.md`` (the table:
final training loss on 10,000 seeded training rows, test accuracy, loss relative to dense at the same
engine and thread count, mean loss over the run, measured staleness, time, throughput), and one figure
``sparsification.png`` (loss against updates at each m, and against simulated / wall time).

    python benchmarks/sparsification.py            # about 5 minutes on 2 cores
    python benchmarks/sparsification.py --quick    # smoke test, under a minute
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leashed.errors import LeashedError, SpecError
from leashed.results import RunResult
from leashed.spec import ExperimentSpec, sparsifier_k

#: (label, sparsifier, error memory)
CONFIGS: tuple[tuple[str, str, bool], ...] = (
    ("dense", "none", False),
    ("top10%", "topk:10%", False),
    ("top10%+mem", "topk:10%", True),
    ("top1%", "topk:1%", False),
    ("top1%+mem", "topk:1%", True),
)
COMPUTE_TIME = "gamma:mean=300us,cv=0.2"
UPDATE_TIME = "const:40us"
COLUMNS = ["engine", "m", "config", "K", "seeds", "updates", "train_loss", "loss_spread", "test_acc",
           "loss_vs_dense", "mean_loss", "tau_mean", "tau_max", "time_s", "updates_per_s", "cas_failures"]


@dataclass
class Run:
    """One finished (or skipped) run."""

    engine: str
    m: int
    config: str
    seed: int
    result: RunResult | None = None
    note: str = ""

    @property
    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(version, time, loss) of the evaluated samples."""
        s = self.result.samples
        ok = np.isfinite(s.loss)
        return s.version[ok].astype(float), s.time[ok], s.loss[ok]


@dataclass
class Plan:
    updates_sim: int
    updates_rt: int
    sim_threads: tuple[int, ...]
    rt_threads: tuple[int, ...]
    seeds: tuple[int, ...]
    evaluations: int
    lr: float
    batch: int
    runs: list[Run] = field(default_factory=list)


def base_spec(plan: Plan, algorithm: str, m: int, sparsifier: str, memory: bool, seed: int,
              updates: int) -> ExperimentSpec:
    return ExperimentSpec(algorithm=algorithm, threads=m, model="mlp", hidden=(128,), dataset="mnist",
                          lr=plan.lr, batch_size=plan.batch, updates=updates, seed=seed,
                          evaluations=plan.evaluations, sparsifier=sparsifier, error_memory=memory)


def run_sim(plan: Plan, m: int, label: str, sparsifier: str, memory: bool, seed: int) -> Run:
    from leashed.sim import simulate

    algorithm = "seq" if m == 1 else "leashed"
    spec = base_spec(plan, algorithm, m, sparsifier, memory, seed, plan.updates_sim).replace(
        compute_time=COMPUTE_TIME, update_time=UPDATE_TIME, extra={"copy_fraction": 0.5})
    return Run("sim", m, label, seed, simulate(spec, gradients=True, samples=50))


def run_runtime(plan: Plan, m: int, label: str, sparsifier: str, memory: bool, seed: int) -> Run:
    spec = base_spec(plan, "leashed", m, sparsifier, memory, seed, plan.updates_rt)
    try:
        from leashed.runtime.run import run  # the function (the package attribute becomes the module)

        result = run(spec, progress=False)
    except SpecError as exc:  # the runtime refuses the configuration (e.g. no sparsifier support yet)
        return Run("runtime", m, label, seed, note=f"skipped: {exc}")
    except (ImportError, LeashedError, RuntimeError) as exc:
        return Run("runtime", m, label, seed, note=f"skipped: {type(exc).__name__}: {exc}")
    return Run("runtime", m, label, seed, result)


# ------------------------------------------------------------------------------------------- table
def summarise(plan: Plan) -> list[dict[str, Any]]:
    """One row per (engine, m, config): means over the seeds."""
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, int, str], list[Run]] = {}
    for r in plan.runs:
        groups.setdefault((r.engine, r.m, r.config), []).append(r)
    dense_loss: dict[tuple[str, int], float] = {}
    for (engine, m, config), runs in groups.items():
        done = [r for r in runs if r.result is not None]
        label = dict((c[0], c) for c in CONFIGS)[config]
        row: dict[str, Any] = {"engine": engine, "m": m, "config": config, "seeds": len(done)}
        if not done:
            row["note"] = "skipped (see the notes)"
            rows.append(row)
            continue
        res = [r.result for r in done]
        s = [x.summary() for x in res]
        d = len(res[0].params) or 101_770
        finals = [v["final_train_loss"] for v in s if v["final_train_loss"] is not None]
        row.update(
            K=sparsifier_k(label[1], d), updates=int(np.mean([v["updates_applied"] for v in s])),
            train_loss=float(np.mean(finals)) if finals else math.nan,
            loss_spread=float(np.ptp(finals)) / 2 if len(finals) > 1 else None,
            test_acc=float(np.mean([v["final_test_accuracy"] or math.nan for v in s])),
            mean_loss=float(np.mean([np.mean(r.curve[2][1:]) for r in done])),
            tau_mean=float(np.mean([v["staleness_mean"] for v in s])),
            tau_max=int(max(int(x.staleness.max()) for x in res)),
            time_s=float(np.mean([v["wall_time_s"] for v in s])),
            updates_per_s=float(np.mean([v["updates_per_s"] for v in s])),
            cas_failures=int(np.mean([v["cas_failures"] or 0 for v in s])),
        )
        diverged = [x.totals.get("diverged_at", -1) for x in res]
        if any(dv not in (-1, None) for dv in diverged):
            row["note"] = f"diverged at {diverged}"
        if config == "dense":
            dense_loss[(engine, m)] = row["train_loss"]
        rows.append(row)
    for row in rows:
        base = dense_loss.get((row["engine"], row["m"]))
        if base and row.get("train_loss") is not None and math.isfinite(row["train_loss"]):
            row["loss_vs_dense"] = row["train_loss"] / base
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]], notes: list[str]) -> str:
    cols = COLUMNS + ["note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS + ["note"])
        writer.writeheader()
        for r in rows:
            writer.writerow({c: fmt(r.get(c)) for c in COLUMNS + ["note"]})


# ------------------------------------------------------------------------------------------- figure
def plot(plan: Plan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim_ms = [m for m in plan.sim_threads if m > 1] or list(plan.sim_threads)
    panels = [("sim", m, "updates") for m in sim_ms] + [("sim", max(sim_ms), "time")]
    rt_done = [r for r in plan.runs if r.engine == "runtime" and r.result is not None]
    if rt_done:
        panels.append(("runtime", max(r.m for r in rt_done), "time"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    colors = dict(zip([c[0] for c in CONFIGS], ["k", "tab:blue", "tab:cyan", "tab:red", "tab:orange"],
                      strict=True))
    for ax, (engine, m, axis) in zip(axes[0], panels, strict=True):
        for label, _, memory in CONFIGS:
            runs = [r for r in plan.runs if (r.engine, r.m, r.config) == (engine, m, label)
                    and r.result is not None]
            if not runs:
                continue
            style = "--" if memory else "-"
            if axis == "updates":  # mean over seeds (same evaluation versions)
                curves = [r.curve for r in runs]
                n = min(len(c[0]) for c in curves)
                x = curves[0][0][:n]
                y = np.mean([c[2][:n] for c in curves], axis=0)
            else:
                x, y = runs[0].curve[1], runs[0].curve[2]
            ax.plot(x, y, style, color=colors[label], label=label, lw=1.4)
        if engine == "sim" and axis == "updates" and 1 in plan.sim_threads:
            ref = [r for r in plan.runs if (r.engine, r.m, r.config) == ("sim", 1, "dense")
                   and r.result is not None]
            if ref:
                ax.plot(ref[0].curve[0], ref[0].curve[2], ":", color="grey", label="dense m=1 (seq)")
        ax.set_yscale("log")
        ax.set_xlabel({"updates": "updates applied", "time": "simulated s" if engine == "sim"
                       else "wall s"}[axis])
        ax.set_ylabel("training loss")
        what = "Leashed T_p=inf"
        ax.set_title(f"{engine}, {what}, {'m' if engine == 'sim' else 'M'}={m}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"MNIST MLP 784-128-10, lr {plan.lr}, batch {plan.batch}: dense vs top-k "
                 "(dashed: error memory)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: few updates, one seed (< 60 s)")
    p.add_argument("--updates", type=int, help="simulated updates per run (default 3000; quick 200)")
    p.add_argument("--runtime-updates", type=int, help="runtime updates per run (default 3000; quick 200)")
    p.add_argument("--seeds", type=int, help="seeds per configuration (default 2; quick 1)")
    p.add_argument("--lr", type=float, default=0.05, help="constant step size (default 0.05)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sim-threads", type=int, nargs="+", metavar="M",
                   help="simulated thread counts (default 1 16 64; quick 16 64)")
    p.add_argument("--no-runtime", action="store_true", help="simulator part only")
    p.add_argument("--out", type=Path, default=Path("results/sparsification"), help="output folder")
    args = p.parse_args(argv)

    quick = args.quick
    plan = Plan(updates_sim=args.updates or (200 if quick else 3000),
                updates_rt=args.runtime_updates or (200 if quick else 3000),
                sim_threads=tuple(args.sim_threads or ((16, 64) if quick else (1, 16, 64))),
                rt_threads=(2,) if quick else (2, 4),
                seeds=tuple(range(args.seeds or (1 if quick else 2))),
                evaluations=4 if quick else 20, lr=args.lr, batch=args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for m in plan.sim_threads:
        for label, sparsifier, memory in CONFIGS:
            for seed in plan.seeds:
                t0 = time.perf_counter()
                r = run_sim(plan, m, label, sparsifier, memory, seed)
                plan.runs.append(r)
                loss = r.result.summary()["final_train_loss"]
                print(f"sim m={m:<3} {label:<11} seed {seed}: loss {loss:.4f} "
                      f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    if not args.no_runtime:
        for m in plan.rt_threads:
            for label, sparsifier, memory in CONFIGS:
                for seed in plan.seeds:
                    r = run_runtime(plan, m, label, sparsifier, memory, seed)
                    plan.runs.append(r)
                    text = r.note or f"loss {r.result.summary()['final_train_loss']:.4f}"
                    print(f"runtime M={m} {label:<11} seed {seed}: {text}", file=sys.stderr)
                    if r.note:
                        break  # a refused configuration is refused for every seed

    rows = summarise(plan)
    notes = [
        f"sim: Leashed-SGD T_p=inf (m=1: seq), timing C={COMPUTE_TIME}, U={UPDATE_TIME}, copy 1/2; "
        f"sparse U' = U(1/2 + K/(2d)); time_s is simulated seconds. runtime: wall seconds.",
        f"{plan.updates_sim} simulated / {plan.updates_rt} runtime updates, lr {plan.lr}, "
        f"batch {plan.batch}, {len(plan.seeds)} seed(s) (loss_spread: half the range over seeds); "
        f"losses on 10,000 seeded training rows; mean_loss: mean over the run's evaluations after the first.",
        "loss_vs_dense: final training loss / dense's at the same engine and thread count.",
    ]
    skipped = {r.note for r in plan.runs if r.note}
    notes += sorted(skipped)
    write_csv(rows, args.out / "sparsification.csv")
    (args.out / "sparsification.md").write_text(to_markdown(rows, notes))
    plot(plan, args.out / "sparsification.png")
    print(to_markdown(rows, notes))
    print(f"wrote {args.out}/sparsification.csv, .md, .png in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "sparsification.py"))
