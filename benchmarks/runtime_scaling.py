"""Throughput of the threaded runtime: updates/s of every algorithm at M = 1, 2, 4, 8 worker threads.

The MNIST MLP (784-128-10, batch 64, lr 0.2), the same number of gradients for every run, no evaluations
(only training is timed). The runs of all configurations are interleaved and repeated; each cell is the
median over the repetitions (robust to a repetition disturbed by other work on the machine, in either
the numerator or the denominator of a speedup); the best-of speedups and the spread are printed in notes.
Speedup is against the same algorithm at M = 1, and against ``seq``. On a 2-core machine M = 4 and 8 are
oversubscribed. Target (2 cores): leashed and hogwild >= 1.8x at M = 2.

Usage::

    python benchmarks/runtime_scaling.py                 # 3 repetitions of 3000 gradients, about 2 min
    python benchmarks/runtime_scaling.py --threads 1,2 --repeats 5
    python benchmarks/runtime_scaling.py --quick         # a smoke test: timings not meaningful
    python benchmarks/runtime_scaling.py --threads 1,2,4,8,16 --updates 20000 --dataset idx:DIR  # many cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, blas_note, load_note  # noqa: E402

from leashed import algorithms as registry  # noqa: E402

ALGORITHMS = registry.ALGORITHMS
TARGET = {"leashed": 1.8, "hogwild": 1.8}


def measure(algorithms: tuple[str, ...], threads: tuple[int, ...], updates: int, repeats: int,
            dataset: Any, verbose: bool = True) -> dict[tuple[str, int], list[dict[str, float]]]:
    """{(algorithm, m): [one dict per repetition: updates_per_s, staleness_mean, cas_fail_fraction]}."""
    from leashed.runtime.run import run
    from leashed.spec import ExperimentSpec

    configs = [(a, m) for a in algorithms for m in threads
               if not (registry.algorithm(a).single_thread and m != 1)]
    out: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in configs}
    for rep in range(repeats):
        for algorithm, m in configs:
            spec = ExperimentSpec(algorithm=algorithm, threads=m, model="mlp", hidden=(128,), dataset="mnist",
                                  batch_size=64, lr=0.2, updates=updates, evaluations=0, seed=rep)
            result = run(spec, dataset=dataset, progress=False)
            s = result.summary()
            attempts = result.updates.attempts.astype(float)
            row = {"updates_per_s": float(s["updates_per_s"]),
                   "staleness_mean": float(s["staleness_mean"] or 0.0),
                   "cas_fail_fraction": float((attempts - 1).sum() / max(attempts.sum(), 1.0))}
            out[(algorithm, m)].append(row)
            if verbose:
                print(f"  rep {rep + 1}/{repeats} {algorithm:8s} m={m}: "
                      f"{row['updates_per_s']:8.0f} updates/s", file=sys.stderr, flush=True)
    return out


def table(runs: dict[tuple[str, int], list[dict[str, float]]], threads: tuple[int, ...]) -> Table:
    best = {k: statistics.median(r["updates_per_s"] for r in v) for k, v in runs.items()}
    top = {k: max(r["updates_per_s"] for r in v) for k, v in runs.items()}
    columns = ["algorithm"]
    for m in threads:
        columns += [f"M={m} upd/s"] + ([f"M={m} x(M=1)", f"M={m} x(seq)"] if m > 1 else [])
    columns += ["tau(M=2)", "CAS fail(M=2)"] if 2 in threads else []
    t = Table("Runtime throughput, MNIST MLP 784-128-10, batch 64 (median of the repetitions)", columns)
    baseline = next(a.name for a in registry.entries() if a.speedup_baseline)
    seq = best.get((baseline, 1))
    for algorithm in ALGORITHMS:
        if not any(k[0] == algorithm for k in best):
            continue
        row: dict[str, Any] = {"algorithm": algorithm}
        base = best.get((algorithm, 1))
        for m in threads:
            value = best.get((algorithm, m))
            row[f"M={m} upd/s"] = None if value is None else round(value)
            if m > 1 and value is not None:
                row[f"M={m} x(M=1)"] = None if not base else round(value / base, 2)
                row[f"M={m} x(seq)"] = None if not seq else round(value / seq, 2)
        if (algorithm, 2) in runs:
            r2 = runs[(algorithm, 2)]
            row["tau(M=2)"] = round(statistics.median(r["staleness_mean"] for r in r2), 3)
            row["CAS fail(M=2)"] = round(statistics.median(r["cas_fail_fraction"] for r in r2), 3)
        t.add(**row)
    spread = [max(r["updates_per_s"] for r in v) / min(r["updates_per_s"] for r in v) for v in runs.values()]
    t.notes.append(f"spread between the best and worst repetition of a cell: up to {max(spread):.2f}x")
    for algorithm, target in TARGET.items():
        if (algorithm, 1) in best and (algorithm, 2) in best:
            got = best[(algorithm, 2)] / best[(algorithm, 1)]
            t.notes.append(f"{algorithm} at M=2: {got:.2f}x over M=1 (target >= {target}x): "
                           f"{'met' if got >= target else 'NOT met'}; best of the repetitions "
                           f"{top[(algorithm, 2)] / top[(algorithm, 1)]:.2f}x")
    t.notes.append(load_note())
    t.notes.append(blas_note())
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default=None, help="thread counts (default 1,2,4,8)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="algorithms (default all)")
    parser.add_argument("--updates", type=int, default=3000, help="gradients per run (default 3000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--dataset", default="mnist",
                        help="data set name as in `leashed train --dataset` (default mnist), e.g. idx:DIR")
    parser.add_argument("--quick", action="store_true",
                        help="300 gradients, one repetition (and M = 1, 2 unless --threads is given)")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = "1,2" if args.quick else "1,2,4,8"
    try:
        threads = tuple(int(x) for x in args.threads.split(","))
    except ValueError:
        parser.error(f"--threads takes comma-separated thread counts such as 1,2,4 (got {args.threads!r})")
    if not threads or min(threads) < 1:
        parser.error(f"--threads: every thread count must be at least 1 (got {args.threads!r})")
    algorithms = tuple(a for a in args.algorithms.split(",") if a)
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or not algorithms:
        parser.error(f"--algorithms: choose from {','.join(ALGORITHMS)} (got {args.algorithms!r})")
    if args.updates < 1 or args.repeats < 1:
        parser.error("--updates and --repeats must be at least 1")
    updates, repeats = args.updates, args.repeats
    if args.quick:
        updates, repeats = 300, 1

    from leashed.models.datasets import load_dataset

    dataset = load_dataset(args.dataset)
    start = time.perf_counter()
    runs = measure(algorithms, threads, updates, repeats, dataset)
    print(table(runs, threads).to_text())
    print(f"({time.perf_counter() - start:.0f} s, {updates} gradients per run, {repeats} repetitions)")
    return 0


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "runtime_scaling.py"))
