"""Throughput of user models (docs/models.md) against the built-in kernels, at M = 1 and 2 threads.

The numba examples (``examples/numba_mlp.py``, 784-128-10 ReLU, and ``examples/numba_logreg.py``) and the
built-in ``mlp`` and ``softmax`` kernels train MNIST on the threaded runtime (hogwild, batch 64, lr 0.2,
no evaluations: only training is timed), the same gradients for every run. Runs are interleaved and
repeated; each cell is the median of the repetitions. Two ratios matter (issue targets, 2 cores):

* a user model's M = 2 updates/s over its M = 1: >= 1.7x, the proof that its calls hold no GIL;
* the numba MLP's updates/s over the built-in MLP's at the same M: >= 0.5.

Usage (needs numba: ``pip install 'leashed-sgd[numba]'``)::

    python benchmarks/user_model_speed.py                # 3 repetitions, about 2 minutes on 2 cores
    python benchmarks/user_model_speed.py --quick        # a smoke test: timings not meaningful
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, blas_note, load_note, script_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: (label, spec model, the built-in model it is compared with)
MODELS = (("numba mlp", str(ROOT / "examples" / "numba_mlp.py") + ":model", "mlp"),
          ("built-in mlp", "mlp", None),
          ("numba logreg", str(ROOT / "examples" / "numba_logreg.py") + ":model", "softmax"),
          ("built-in softmax", "softmax", None))
TARGET_SCALING = 1.7
TARGET_VS_BUILTIN = 0.5


def measure(threads: tuple[int, ...], updates: dict[str, int], repeats: int, algorithm: str,
            verbose: bool = True) -> dict[tuple[str, int], list[dict[str, float]]]:
    """{(model label, m): per repetition, updates/s, updates per CPU-second of the worker threads, and
    the workers' voluntary context switches (a thread that waits for the GIL makes them)}."""
    from leashed.models.datasets import load_dataset
    from leashed.runtime.run import run
    from leashed.spec import ExperimentSpec

    data = load_dataset("mnist")
    out: dict[tuple[str, int], list[dict[str, float]]] = {(label, m): [] for label, _, _ in MODELS
                                                          for m in threads}
    for rep in range(repeats):
        for label, model, _ in MODELS:
            for m in threads:
                spec = ExperimentSpec(algorithm=algorithm, threads=m, model=model, hidden=(128,),
                                      batch_size=64, lr=0.2, updates=updates[label], evaluations=0, seed=rep)
                result = run(spec, dataset=data, progress=False)
                value = float(result.summary()["updates_per_s"])
                machine = result.metadata.get("machine", {})
                cpu = float(sum(machine.get("thread_cpu_s") or [0.0]))
                out[(label, m)].append({"ups": value, "per_cpu": updates[label] / cpu if cpu else 0.0,
                                        "voluntary": float(sum(machine.get("voluntary_switches") or [0]))})
                if verbose:
                    print(f"  rep {rep + 1}/{repeats} {label:16s} m={m}: {value:8.0f} updates/s",
                          file=sys.stderr, flush=True)
    return out


def table(runs: dict[tuple[str, int], list[dict[str, float]]], threads: tuple[int, ...],
          algorithm: str) -> Table:
    med = {k: statistics.median(r["ups"] for r in v) for k, v in runs.items()}
    per_cpu = {k: statistics.median(r["per_cpu"] for r in v) for k, v in runs.items()}
    columns = ["model"] + [f"M={m} upd/s" for m in threads]
    columns += [f"M={m} x(M=1)" for m in threads if m > 1] + [f"M={m} x(built-in)" for m in threads]
    columns += [f"M={m} upd/CPU-s" for m in threads] + ["voluntary switches"]
    t = Table(f"User models vs built-in kernels, MNIST, {algorithm}, batch 64 (median of the repetitions)",
              columns)
    for label, _, builtin in MODELS:
        row: dict[str, Any] = {"model": label}
        for m in threads:
            row[f"M={m} upd/s"] = round(med[(label, m)])
            if m > 1:
                row[f"M={m} x(M=1)"] = round(med[(label, m)] / med[(label, threads[0])], 2)
            if builtin is not None:
                ref = next(lab for lab, mod, _ in MODELS if mod == builtin)
                row[f"M={m} x(built-in)"] = round(med[(label, m)] / med[(ref, m)], 2)
            row[f"M={m} upd/CPU-s"] = round(per_cpu[(label, m)])
        row["voluntary switches"] = int(max(r["voluntary"] for m in threads for r in runs[(label, m)]))
        t.add(**row)
    if 1 in threads and 2 in threads:
        for label in ("numba mlp", "numba logreg"):
            got = med[(label, 2)] / med[(label, 1)]
            t.notes.append(f"{label} at M=2: {got:.2f}x over M=1 (target >= {TARGET_SCALING}x): "
                           f"{'met' if got >= TARGET_SCALING else 'NOT met'}")
    for m in threads:
        got = med[("numba mlp", m)] / med[("built-in mlp", m)]
        t.notes.append(f"numba mlp at M={m}: {got:.2f} of the built-in kernel's updates/s (target >= "
                       f"{TARGET_VS_BUILTIN}): {'met' if got >= TARGET_VS_BUILTIN else 'NOT met'}")
    t.notes.append("upd/CPU-s: updates per CPU-second of the worker threads; equal at M = 1 and 2 means the "
                   "threads did not serialise, whatever the load; voluntary switches: the most any run's "
                   "workers made (a thread waiting for the GIL makes them)")
    spread = [max(r["ups"] for r in v) / min(r["ups"] for r in v) for v in runs.values()]
    t.notes.append(f"spread between the best and worst repetition of a cell: up to {max(spread):.2f}x")
    t.notes.append(load_note())
    t.notes.append(blas_note())
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--algorithm", default="hogwild", help="algorithm (default hogwild)")
    parser.add_argument("--updates", type=int, default=2000, help="MLP gradients per run (default 2000; the "
                        "logistic regressions run 4x as many)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--quick", action="store_true", help="200 gradients, one repetition")
    args = parser.parse_args(argv)
    try:
        threads = tuple(int(x) for x in args.threads.split(","))
    except ValueError:
        parser.error(f"--threads takes comma-separated thread counts such as 1,2 (got {args.threads!r})")
    if not threads or min(threads) < 1 or args.updates < 1 or args.repeats < 1:
        parser.error("--threads, --updates and --repeats must be at least 1")
    try:
        import numba  # noqa: F401
    except ImportError:
        print("user_model_speed: numba is not installed (pip install 'leashed-sgd[numba]'); nothing measured")
        return 0
    n, repeats = (200, 1) if args.quick else (args.updates, args.repeats)
    updates = {label: (4 * n if "mlp" not in label else n) for label, _, _ in MODELS}
    runs = measure(threads, updates, repeats, args.algorithm)
    print(table(runs, threads, args.algorithm).to_text())
    return 0


if __name__ == "__main__":
    sys.exit(script_main(main, "user_model_speed"))
