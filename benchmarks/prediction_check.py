"""Does a calibrated prediction agree with the hardware? Simulate, run and compare, at several thread counts.

1. ``--repeats`` rounds, each: a calibration run of the runtime at m = 1 and one at m = 2 (seeds 100 + r,
   200 + r), then a target run at every m of ``--threads`` (seed r: never the runs a prediction was
   calibrated from);
2. ``leashed calibrate --from`` the first two-thread calibration run, right after it: the machine file
   (copies, time slice, load, cores, and the rotation jitter of 2P threads of that run's model);
3. for every m and round r, ``leashed simulate --calibrate-from`` (round r's two calibration runs)
   ``--machine machine.json --threads m`` (5 seeds), then ``leashed compare --paired`` of these
   predictions against the target runs of that m: round r's prediction pairs with round r's run. On the
   shared 2-core VM the machine's speed drifts by up to 25 % over minutes, and runs made within seconds
   of each other share it, so the paired differences see how well the simulator predicts, not how much
   the VM drifted. ``--unpaired`` instead calibrates one prediction per m from every calibration run and
   compares it against all target runs as independent replicates (its interval then holds the drift);
4. the control: the same prediction on a deliberately wrong machine (``--cores 16``); with
   ``--pooled-too`` also the prediction whose gradient and attempt times are drawn independently
   (``--compute-resampling pooled``) instead of replayed on the simulated clock.

Prints one table (predicted and measured throughput, CAS failure fraction, staleness mean, TV and the
verdicts) and writes it with the files into ``--out``. With ``--busy-core``, a busy loop pinned to core 0
runs during the target runs only (the loaded-machine check: the calibration runs and ``leashed calibrate``
stay quiet): the calibrated prediction then takes the background load the target run recorded
(``--background-load``, from its ``metadata["machine"]``, the round's own run when paired; an input
measured beside the run, not fitted to what is predicted), and the table adds the same prediction
without it. With ``--busy-throughout`` the busy loop runs during the whole check, and the predictions
take the load the calibration runs recorded, carried over to each m as competing threads (``leashed
simulate --load-model competing``, the default), as a fixed load (``--load-model fixed``) and not at all.

Usage::

    python benchmarks/prediction_check.py --out /tmp/pc --repeats 20       # m = 1, 2, 3, 4, 8; ~10 min
    python benchmarks/prediction_check.py --threads 1,2,4,8,16 --epochs 5  # on a many-core machine
    python benchmarks/prediction_check.py --busy-core --out /tmp/pc-busy   # another process loads a core
    python benchmarks/prediction_check.py --busy-throughout --out /tmp/pc-all  # ... for the whole check
    python benchmarks/prediction_check.py --pooled-too --out /tmp/pc       # beside it, independent draws
    python benchmarks/prediction_check.py --algorithm sync --out /tmp/pc-sync  # another algorithm
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, load_note  # noqa: E402


def _multi() -> tuple[str, ...]:
    """The algorithms that run on several threads (the registry's, ``leashed.algorithms``)."""
    from leashed.algorithms import multi_thread_names

    return multi_thread_names()


def _leashed(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "leashed", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"leashed {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _busy_loop(cpu: int) -> subprocess.Popen[bytes]:
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def _train(out: Path, m: int, seed: int, size: list[str], dataset: str, reuse: bool = False,
           algorithm: str = "leashed") -> Path:
    path = out / f"run-m{m}-s{seed}.npz"
    if reuse and path.exists():
        return path
    _leashed("train", "--algorithm", algorithm, "--threads", str(m), "--model", "mlp", "--dataset", dataset,
             "--batch-size", "64", *size, "--evaluations", "0", "--seed", str(seed), "--out", str(path))
    return path


def _predict(out: Path, name: str, m: int, calibration: list[Path], *extra: str) -> Path:
    path = out / f"sim-{name}-m{m}.npz"
    if path.exists():
        path.unlink()
    args = ["simulate", "--threads", str(m), "--out", str(path), "--quiet", *extra]
    for c in calibration:
        args += ["--calibrate-from", str(c)]
    _leashed(*args)
    return path


def _compare(out: Path, name: str, predicted: list[Path], measured: list[Path],
             paired: bool) -> dict[str, Any]:
    target = out / f"compare-{name}"
    _leashed("compare", *(["--paired"] if paired else []), *map(str, predicted), *map(str, measured),
             "--out", str(target))
    return json.loads((target / "comparison.json").read_text())


def _variants(args: argparse.Namespace, machine: Path, load: float) -> list[tuple[str, tuple[str, ...]]]:
    """(name, ``leashed simulate`` options) of every prediction compared, for a background load of
    ``load`` cores (used by the recorded-load variant of ``--busy-core``)."""
    variants = [("calibrated", ("--machine", str(machine)))]
    if args.rotation_jitter is not None:  # a sensitivity check: the jitter is given, not measured
        variants = [(f"calibrated, jitter {args.rotation_jitter:g}",
                     ("--machine", str(machine), "--rotation-jitter", f"{args.rotation_jitter:g}"))]
    if args.busy_core:
        variants = [("recorded load", ("--machine", str(machine), "--background-load", f"{load:.3f}")),
                    ("load ignored", ("--machine", str(machine), "--ignore-load"))]
    elif args.busy_throughout:  # the load comes from the calibration runs' records
        variants = [("competing load", ("--machine", str(machine))),
                    ("fixed load", ("--machine", str(machine), "--load-model", "fixed")),
                    ("load ignored", ("--machine", str(machine), "--ignore-load"))]
    if args.pooled_too:
        variants.append(("pooled resampling", (*variants[0][1], "--compute-resampling", "pooled")))
    if not args.no_control:
        variants.append(("wrong: --cores 16", ("--machine", str(machine), "--cores", "16")))
    return variants


def _load(run: Path) -> float:
    """The background load (cores) a run recorded in its ``metadata["machine"]``."""
    from leashed.results import RunResult

    return float((RunResult.load(run).metadata.get("machine") or {}).get("background_load_cores") or 0.0)


def _ratio(pair: dict[str, Any]) -> str:
    """The throughput ratio and its interval, ``1.01 [0.99, 1.03]``, ``t`` after it when it is the trimmed
    mean of the pair ratios (``leashed compare --paired`` with 10 pairs or more)."""
    q = pair.get("quantities", {}).get("throughput") or {}
    d = q.get("difference") or {}
    value, (low, high) = d.get("value"), (d.get("interval") or [None, None])
    if value is None:
        return "-"
    interval = f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""
    return f"{value:.3g}{interval}{' t' if q.get('statistic') == 'trimmed' else ''}"


#: a run at m <= P whose median gradient is this many times its round's one-thread run's met a slower host
HOST_SLOW_FACTOR = 1.3


def _median_gradient(path: Path) -> tuple[float, int, int]:
    """(median t_grad − t_start, threads, usable cores) of a runtime result."""
    import numpy as np

    from leashed.results import RunResult

    r = RunResult.load(path)
    u = r.updates
    cores = int((r.metadata.get("machine") or {}).get("usable_cores") or r.spec.threads)
    return float(np.median(u.t_grad - u.t_start)), int(r.spec.threads), cores


def _host_check(rounds: list[list[Path]], targets: dict[int, list[Path]]) -> str:
    """Which runs met a slower host: at m <= the usable cores (no time-sharing, so a gradient's time is
    the machine's speed), a median gradient at least :data:`HOST_SLOW_FACTOR` times that of the round's
    one-thread calibration run. On the 2-core VM such runs had both threads on a core all the time and
    nothing in the guest recording it (docs/analysis.md); the prediction of such a round misses by it.
    Information only: no verdict uses it."""
    slow: dict[str, list[str]] = {"calibration": [], "target": []}
    checked = 0
    for r, cal in enumerate(rounds):
        base, _, _ = _median_gradient(cal[0])
        for kind, paths in (("calibration", cal[1:]), ("target", [t[r] for t in targets.values()])):
            for path in paths:
                g, m, cores = _median_gradient(path)
                if m > cores:
                    continue
                checked += 1
                if g >= HOST_SLOW_FACTOR * base:
                    slow[kind].append(f"{path.name} {g / base:.2f}x")
    found = slow["calibration"] + slow["target"]
    return (f"host check: {len(found)} of {checked} runs at m <= cores had a median gradient >= "
            f"{HOST_SLOW_FACTOR:g}x their round's one-thread run ({len(slow['calibration'])} calibration, "
            f"{len(slow['target'])} target{': ' + ', '.join(found) if found else ''})")


def _value(entry: Any) -> Any:
    return entry.get("value") if isinstance(entry, dict) else entry


def _cell(pair: dict[str, Any], quantity: str) -> tuple[Any, Any, str]:
    """(predicted, measured, verdict) of one quantity of a comparison.json pair; the TV's "predicted" is
    the distance itself."""
    q = pair.get("quantities", {}).get(quantity)
    if q is None:
        return None, None, "-"
    if quantity == "staleness_tv":
        return _value(q.get("difference")), None, q.get("verdict", "-")
    return _value(q.get("predicted")), _value(q.get("measured")), q.get("verdict", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2,3,4,8", help="target thread counts (default 1,2,3,4,8)")
    parser.add_argument("--algorithm", default="leashed", help="the algorithm of every run and prediction "
                        "(default leashed; any that runs on several threads: " + ", ".join(_multi()) + ")")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of calibration and target runs "
                        "(default 3)")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--out", default="prediction-check", help="folder for the files and the table")
    parser.add_argument("--busy-core", action="store_true", help="a busy loop on core 0 during the runs")
    parser.add_argument("--busy-throughout", action="store_true", help="a busy loop on core 0 during the "
                        "whole check (calibration runs and leashed calibrate too): the predictions carry "
                        "the calibration runs' recorded load over to each m (--load-model competing, and "
                        "fixed beside it)")
    parser.add_argument("--no-control", action="store_true", help="skip the --cores 16 control")
    parser.add_argument("--pooled-too", action="store_true", help="add the prediction that draws compute "
                        "times independently (--compute-resampling pooled) beside the timeline one")
    parser.add_argument("--unpaired", action="store_true", help="one prediction per m from every "
                        "calibration run, compared against all target runs as independent replicates")
    parser.add_argument("--reuse-runs", action="store_true", help="keep the runtime runs (and machine "
                        "file) already in --out, run only the missing ones: predict again after a "
                        "simulator change")
    parser.add_argument("--rotation-jitter", type=float, metavar="P", help="predict with this rotation "
                        "jitter (`leashed simulate --rotation-jitter`) instead of the calibrated one (0 from "
                        "runs at m <= 2): a sensitivity check, since P is not measured before the runs")
    parser.add_argument("--quick", action="store_true", help="a smoke run: m = 1, 2, 500 updates each "
                        "(numbers not meaningful)")
    args = parser.parse_args(argv)
    if args.algorithm not in _multi():
        raise SystemExit(f"prediction_check.py: error: --algorithm must be one of {', '.join(_multi())}, "
                         f"not {args.algorithm!r}")
    if args.busy_core and args.busy_throughout:
        raise SystemExit("prediction_check.py: error: --busy-core and --busy-throughout exclude each other")
    if args.quick:
        args.threads = "1,2"
    size = ["--updates", "500"] if args.quick else ["--epochs", str(args.epochs)]
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not threads or min(threads) < 1:
        raise SystemExit("prediction_check.py: error: --threads must be positive integers like 1,2,4")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"prediction check: {load_note()}", flush=True)
    machine = out / "machine.json"
    calibrate_machine = not (args.reuse_runs and machine.exists())
    rounds: list[list[Path]] = []  # each round's calibration runs
    targets: dict[int, list[Path]] = {m: [] for m in threads}
    repeats = max(2, args.repeats)
    throughout = _busy_loop(0) if args.busy_throughout else None
    try:
        _run_rounds(args, out, size, threads, repeats, rounds, targets, machine, calibrate_machine, started)
    finally:
        if throughout is not None:
            throughout.kill()
            throughout.wait()
    _predict_and_compare(args, out, threads, repeats, rounds, targets, machine, started)
    return 0


def _run_rounds(args: argparse.Namespace, out: Path, size: list[str], threads: list[int], repeats: int,
                rounds: list[list[Path]], targets: dict[int, list[Path]], machine: Path,
                calibrate_machine: bool, started: float) -> None:
    """The calibration and target runs of every round (module docstring, steps 1 and 2)."""
    if args.busy_throughout:
        time.sleep(0.5)  # let the busy loop start
    for r in range(repeats):
        rounds.append([_train(out, 1, 100 + r, size, args.dataset, args.reuse_runs, args.algorithm),
                       _train(out, 2, 200 + r, size, args.dataset, args.reuse_runs, args.algorithm)])
        if calibrate_machine:  # after the first two-thread run: --from it measures its model's rotation
            _leashed("calibrate", *(["--quick"] if args.quick else []), "--from", str(rounds[0][1]),
                     "--out", str(machine))
            calibrate_machine = False
        busy = _busy_loop(0) if args.busy_core else None
        try:
            if busy is not None:
                time.sleep(0.5)
            for m in threads:
                targets[m].append(_train(out, m, r, size, args.dataset, args.reuse_runs, args.algorithm))
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        print(f"round {r + 1}/{repeats} done ({time.perf_counter() - started:.0f} s)", flush=True)


def _predict_and_compare(args: argparse.Namespace, out: Path, threads: list[int], repeats: int,
                         rounds: list[list[Path]], targets: dict[int, list[Path]], machine: Path,
                         started: float) -> None:
    """Steps 3 and 4 of the module docstring: predict every m, compare, print and write the table."""
    calibration = [c for cal in rounds for c in cal]
    paired = not args.unpaired
    table = Table(f"calibrated predictions against the runtime ({args.algorithm}, MNIST MLP, batch 64)",
                  ["m", "variant", "X pred", "X meas", "X ratio [90% CI]", "X", "CAS pred", "CAS meas", "CAS",
                   "tau pred", "tau meas", "TV", "TV verdict", "overall"])
    for m in threads:
        loads = [_load(t) for t in targets[m]] if args.busy_core else [0.0] * repeats
        mean_load = sum(loads) / len(loads)
        for k, (name, _) in enumerate(_variants(args, machine, 0.0)):
            tag = name.split(":")[0].replace(",", "").replace(" ", "-")
            begun = time.perf_counter()
            print(f"predicting m = {m}, {name}: {repeats if paired else 1} x 5 seeds ...", end=" ",
                  flush=True)
            if paired:  # each round's prediction takes the load its own target run recorded
                predicted = [_predict(out, f"{tag}-r{r}", m, rounds[r],
                                      *_variants(args, machine, loads[r])[k][1]) for r in range(repeats)]
            else:
                predicted = [_predict(out, tag, m, calibration, *_variants(args, machine, mean_load)[k][1])]
            comparison = _compare(out, f"{tag}-m{m}", predicted, targets[m], paired)
            pair = comparison["pairs"][0]
            print(f"{pair.get('verdict')} ({time.perf_counter() - begun:.0f} s)", flush=True)
            if args.busy_core and name == "recorded load":
                name = f"recorded load {mean_load:.2f}"
            xp, xm, xv = _cell(pair, "throughput")
            cp, cm, cv = _cell(pair, "cas_failure")
            tp, tm, _ = _cell(pair, "staleness_mean")
            tv, _, tvv = _cell(pair, "staleness_tv")
            row = dict(m=m, variant=name, **{"X pred": xp, "X meas": xm, "X ratio [90% CI]": _ratio(pair),
                                             "X": xv, "CAS pred": cp,
                                             "CAS meas": cm, "CAS": cv, "tau pred": tp, "tau meas": tm,
                                             "TV": tv, "TV verdict": tvv, "overall": pair.get("verdict")})
            table.add(**row)
    how = (f"paired: round r's prediction calibrated from its own {rounds[0][0].name.split('-s')[0]}, "
           f"{rounds[0][1].name.split('-s')[0]} runs, {repeats} rounds" if paired else
           f"unpaired: calibrated from {', '.join(p.name for p in calibration)}")
    table.notes.append(_host_check(rounds, targets))
    table.notes.append(f"{how} and {machine.name}; X = committed updates/s; X ratio = predicted / measured "
                       f"(t: the 20 % trimmed mean of the pair ratios, 10 pairs or more); "
                       f"CAS = failed / all attempts; {load_note()}")
    print(table.to_text())
    table.write(out, "prediction_check")
    print(f"load average at the end {os.getloadavg()[0]:.2f}; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "prediction_check.py"))
