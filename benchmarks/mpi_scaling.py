"""The MPI backend next to the threaded runtime: updates/s and mean staleness at 2, 3, 4 ranks.

For each rank count P (P − 1 workers, rank 0 holds the store) and each algorithm (papers.md §2) it runs
the same ExperimentSpec twice, alternately and ``--repeats`` times:

* ``mpi``: ``mpiexec -n P python -m leashed.runtime.mpi_backend SPEC OUT`` (runtime/mpi_backend.py);
* ``threads``: :func:`leashed.runtime.run.run` with ``threads = P − 1`` in this process,

and prints, per configuration, the median over repeats of updates/s, the mean staleness τ, the mean
compute phase C (t_grad − t_start: read + gradient) and the mean update phase U (t_commit − t_grad:
copy/apply/CAS or locked apply, waits included), and the ratio mpi/threads of updates/s.

Workloads: ``mlp`` (MNIST, 784-128-10, batch 64, one epoch: 937 updates) and ``counter`` (64 parameters,
gradient −1, no arithmetic to speak of: what remains is the cost of sharing parameters). The measured
per-update MPI costs are what ``leashed simulate --calibrate-from`` turns into a timing model (docs/mpi.md).

Usage::

    python benchmarks/mpi_scaling.py                   # about 2 minutes on 2 cores
    python benchmarks/mpi_scaling.py --quick           # smoke run, seconds; numbers mean nothing
    python benchmarks/mpi_scaling.py --ranks 2 3 --algorithms leashed --workloads mlp --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, load_note  # noqa: E402

from leashed import algorithms as registry  # noqa: E402
from leashed.results import RunResult  # noqa: E402
from leashed.spec import ExperimentSpec  # noqa: E402

COLUMNS = ["workload", "ranks", "workers", "algorithm", "mpi_upd_s", "threads_upd_s", "ratio",
           "mpi_tau", "threads_tau", "mpi_C_us", "threads_C_us", "mpi_U_us", "threads_U_us", "mpi_drop"]

WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {"model": "mlp", "hidden": [128], "dataset": "mnist", "batch_size": 64, "lr": 0.2, "epochs": 1,
            "evaluations": 0},
    "counter": {"model": "counter", "dim": 64, "lr": 1.0, "updates": 20000, "evaluations": 0},
}
QUICK_UPDATES = {"mlp": 200, "counter": 2000}


def find_mpiexec() -> str | None:
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def phase_means(result: RunResult) -> tuple[float, float, float]:
    """(mean C µs, mean U µs, mean τ) of one result; C and U over all computed gradients."""
    u = result.updates
    c = float(np.mean(u.t_grad - u.t_start)) * 1e6 if len(u) else float("nan")
    up = float(np.mean(u.t_commit - u.t_grad)) * 1e6 if len(u) else float("nan")
    tau = result.summary()["staleness_mean"]
    return c, up, float("nan") if tau is None else float(tau)


def run_mpi(mpiexec: str, ranks: int, spec: dict[str, Any], workdir: Path) -> RunResult:
    out = workdir / f"mpi-{ranks}-{spec['algorithm']}.npz"
    proc = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, "-m", "leashed.runtime.mpi_backend",
                           json.dumps(spec), str(out)], capture_output=True, text=True, timeout=600,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mpi run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return RunResult.load(out)


def run_threads(spec: dict[str, Any], workers: int) -> RunResult:
    from leashed.runtime.run import run

    return run(ExperimentSpec.from_dict({**spec, "threads": workers}), progress=False)


def measure(args: argparse.Namespace) -> Table:
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise SystemExit("no mpiexec: pip install 'leashed-sgd[mpi]'")
    table = Table("MPI backend vs threaded runtime (median of repeats)", COLUMNS)
    with tempfile.TemporaryDirectory(prefix="leashed-mpi-scaling-") as tmp:
        for workload in args.workloads:
            base = dict(WORKLOADS[workload])
            if args.quick:
                base.pop("epochs", None)
                base["updates"] = QUICK_UPDATES[workload]
            for ranks in args.ranks:
                workers = ranks - 1
                for algorithm in args.algorithms:
                    spec = {**base, "algorithm": algorithm, "seed": args.seed}
                    if registry.algorithm(algorithm).has_persistence:
                        spec["persistence"] = args.persistence
                    mpi_rows, thr_rows = [], []
                    for _ in range(args.repeats):  # alternate, so drifting load hits both alike
                        m = run_mpi(mpiexec, ranks, spec, Path(tmp))
                        t = run_threads(spec, workers)
                        mpi_rows.append((m.summary()["updates_per_s"], *phase_means(m),
                                         m.totals["updates_dropped"]))
                        thr_rows.append((t.summary()["updates_per_s"], *phase_means(t)))
                    med = [statistics.median(col) for col in zip(*mpi_rows, strict=True)]
                    tmed = [statistics.median(col) for col in zip(*thr_rows, strict=True)]
                    table.add(workload=workload, ranks=ranks, workers=workers, algorithm=algorithm,
                              mpi_upd_s=med[0], threads_upd_s=tmed[0], ratio=med[0] / tmed[0],
                              mpi_tau=med[3], threads_tau=tmed[3], mpi_C_us=med[1], threads_C_us=tmed[1],
                              mpi_U_us=med[2], threads_U_us=tmed[2], mpi_drop=med[4])
                    print(table.to_text().splitlines()[-1], flush=True)
    table.notes.append("C = t_grad - t_start (read + gradient), U = t_commit - t_grad (apply/copy/CAS or "
                       "locked apply, waits included), per computed gradient; tau = mean staleness")
    table.notes.append("ranks = workers + 1: rank 0 only hosts the RMA windows and polls (sleeping)")
    table.notes.append(load_note())
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--algorithms", nargs="+", default=list(registry.mpi_names()),
                        choices=registry.mpi_names())
    parser.add_argument("--workloads", nargs="+", default=["mlp", "counter"], choices=sorted(WORKLOADS))
    parser.add_argument("--persistence", default="inf", help="leashed T_p (default inf)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="few updates, one repeat (smoke run)")
    parser.add_argument("--out", help="folder for mpi_scaling.csv / .json / .md")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if any(r < 2 for r in args.ranks):
        parser.error("--ranks must be >= 2 (rank 0 holds the store)")
    table = measure(args)
    print()
    print(table.to_text())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mpi_scaling.csv").write_text(table.to_csv())
        (out / "mpi_scaling.json").write_text(json.dumps(table.to_dict(), indent=1))
        (out / "mpi_scaling.md").write_text(table.to_markdown())
        print(f"wrote {os.fspath(out)}/mpi_scaling.{{csv,json,md}}")
    return 0


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "mpi_scaling.py"))
