"""The MPI backend across network namespaces with link latency as a parameter, measured and predicted.

For each netem delay (``--delays``, µs on every host's egress: a round trip gains twice that) and each
algorithm it runs the counter model (64 parameters: what remains is the cost of sharing, papers.md §6.1)
with rank 0 on host 0 and one worker on each other host (tests/mpi/netns.py), every RMA operation over
TCP, then calibrates the simulator from that run (``leashed simulate --calibrate-from RUN --threads P``,
the per-attempt times the backend measured) and holds the prediction against the run
(``leashed compare``). It prints updates/s, mean staleness and the CAS failure fraction, predicted and
measured, and compare's verdict. Needs root (network namespaces) and the mpi extra.

Usage::

    python benchmarks/mpi_latency.py                                 # 0, 100, 1000 µs; a few minutes
    python benchmarks/mpi_latency.py --delays 0 --updates 300 --quick # smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "mpi"))

import netns  # noqa: E402
from _common import Table, load_note  # noqa: E402

from leashed.algorithms import algorithm as algorithm_entry  # noqa: E402
from leashed.results import RunResult  # noqa: E402

COLUMNS = ["delay_us", "algorithm", "updates", "meas_upd_s", "pred_upd_s", "X_ratio", "meas_tau", "pred_tau",
           "meas_cas_frac", "pred_cas_frac", "meas_C_us", "meas_U_us", "verdict"]
#: rank 0 polls every 100 µs: on TCP a passive-target operation waits for the target's progress engine
ENV = {"LEASHED_MPI_POLL_S": "0.0001"}


def _measure(cluster: netns.Cluster, name: str, updates: int, workers: int, tmp: Path) -> RunResult:
    spec = {"algorithm": name, "model": "counter", "dim": 64, "lr": 1.0, "updates": updates,
            "evaluations": 0}
    out = tmp / f"{name}-{cluster.delay_us:g}.npz"
    cmd = cluster.mpiexec(netns.spread(workers + 1, cluster.n), env=ENV)
    cmd += [sys.executable, "-m", "leashed.runtime.mpi_backend", json.dumps(spec), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mpi run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return RunResult.load(out)


def _predict(run: Path, workers: int, updates: int, tmp: Path) -> dict[str, Any]:
    pred = run.with_name(run.stem + "-pred.npz")
    leashed = [sys.executable, "-m", "leashed"]
    subprocess.run([*leashed, "simulate", "--calibrate-from", str(run), "--threads", str(workers),
                    "--updates", str(updates), "--out", str(pred)], capture_output=True, text=True,
                   check=True, timeout=900)
    cmp_dir = tmp / f"cmp-{run.stem}"
    subprocess.run([*leashed, "compare", str(pred), str(run), "--out", str(cmp_dir)], capture_output=True,
                   text=True, check=False, timeout=900)
    pair = json.loads((cmp_dir / "comparison.json").read_text())["pairs"][0]
    pred_result = RunResult.load(pred)
    return {"pair": pair, "pred": pred_result}


def _cas_fraction(result: RunResult) -> float:
    u = result.updates
    attempts = float(u.attempts.sum())
    return float(result.totals["cas_failures"] or 0) / attempts if attempts else float("nan")


def measure(args: argparse.Namespace) -> Table:
    table = Table("MPI backend across namespaces: link delay, measured vs calibrated prediction", COLUMNS)
    with tempfile.TemporaryDirectory(prefix="leashed-mpi-latency-") as tmp, \
            netns.Cluster(args.workers + 1) as cluster:
        for delay in args.delays:
            try:
                cluster.delay(delay)
            except netns.NetemUnavailable as exc:
                print(f"delay {delay:g} us skipped: {exc}", flush=True)
                table.notes.append(f"delay {delay:g} us not measured: {exc}")
                continue
            for name in args.algorithms:
                run = _measure(cluster, name, args.updates, args.workers, Path(tmp))
                path = Path(tmp) / f"{name}-{cluster.delay_us:g}.npz"
                got = _predict(path, args.workers, args.updates, Path(tmp))
                pred = got["pred"]
                s, ps = run.summary(), pred.summary()
                u = run.updates
                cas = algorithm_entry(name).has_cas
                table.add(delay_us=delay, algorithm=name, updates=len(u), meas_upd_s=s["updates_per_s"],
                          pred_upd_s=ps["updates_per_s"], X_ratio=ps["updates_per_s"] / s["updates_per_s"],
                          meas_tau=s["staleness_mean"], pred_tau=ps["staleness_mean"],
                          meas_cas_frac=_cas_fraction(run) if cas else float("nan"),
                          pred_cas_frac=_cas_fraction(pred) if cas else float("nan"),
                          meas_C_us=float((u.t_grad - u.t_start).mean()) * 1e6,
                          meas_U_us=float((u.t_commit - u.t_grad).mean()) * 1e6,
                          verdict=got["pair"].get("verdict", "?"))
                print(table.to_text().splitlines()[-1], flush=True)
    table.notes.append("counter model, 64 parameters, rank 0 + one worker per other namespace, UCX over TCP; "
                       "delay = netem on every host's egress (RTT + 2 x delay)")
    table.notes.append("C = t_grad - t_start, U = t_commit - t_grad (means); CAS fraction = failures / "
                       "attempts; prediction: leashed simulate --calibrate-from RUN (per-attempt times)")
    table.notes.append(load_note())
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 100.0, 1000.0])
    parser.add_argument("--algorithms", nargs="+", default=["leashed", "lock", "hogwild"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="300 updates (smoke run)")
    parser.add_argument("--out", help="folder for mpi_latency.md / .json")
    args = parser.parse_args(argv)
    if args.quick:
        args.updates = 300
    why = netns.unavailable()
    if why:
        raise SystemExit(f"mpi_latency: error: {why}")
    table = measure(args)
    print()
    print(table.to_text())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mpi_latency.md").write_text(table.to_markdown())
        (out / "mpi_latency.json").write_text(json.dumps(table.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
