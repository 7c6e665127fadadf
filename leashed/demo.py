"""``leashed demo``: the built-in default experiment, end to end, in a few minutes on 2 cores.

1. train ``leashed``, ``lock`` and ``hogwild`` for real at 2 threads on MNIST (MLP 784-128-10);
2. calibrate the simulator from one- and two-thread leashed runs and predict m = 2, 4, 8, 16 on this
   machine; in each of ``--rounds`` rounds, a one- and a two-thread calibration run and a measured run at
   m = ``--compare-threads`` (default: one thread more than the usable cores, so that the threads
   time-share them and the prediction is of a setting no calibration run had), and the prediction of
   that run from that round's calibration runs only;
3. fit the staleness models (papers.md §4) to every run;
4. compare the predictions with the measured runs in pairs (``leashed compare --paired``): a machine whose
   speed drifts between runs moves a round's calibration and measured runs together, so a pair's
   difference is the simulator's error, not the drift (docs/analysis.md, "Paired comparisons");
5. write one HTML report of all of it, step 4's comparisons included; its path is printed last.

Each step is the corresponding ``leashed`` command (the same parser and code), so the demo shows what to
type: the commands are echoed as they run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from leashed import algorithms, interrupts
from leashed.errors import LeashedError

#: the papers' asynchronous algorithms (Leashed-SGD and its two asynchronous baselines), trained for real
DEMO_ALGORITHMS = tuple(algorithms.algorithm(name).name for name in ("leashed", "lock", "hogwild"))
PREDICT_THREADS = (2, 4, 8, 16)
#: paired rounds of step 4 (``--rounds``; two with ``--quick``): on the 2-core VM a pair's throughput
#: ratio varies by about 13 % between rounds, so 20 pairs give an interval of about ±5 %
DEFAULT_ROUNDS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="leashed-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the real runs (default: 2)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data per run (default: 3)")
    parser.add_argument("--dataset", default="mnist", help="data set (default: mnist)")
    parser.add_argument("--model", default="mlp", help="model (default: mlp, 784-128-10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"paired rounds of calibration and measured runs that step 4 compares "
                             f"(default: {DEFAULT_ROUNDS}, 2 with --quick; at least 2)")
    parser.add_argument("--compare-threads", type=int, default=None, metavar="M",
                        help="threads of the measured runs that step 4 compares with their predictions "
                             "(default: usable cores + 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke-sized run (a fraction of an epoch; for tests)")


def _command(argv: list[str]) -> int:
    """Run one ``leashed`` subcommand in-process, echoing it as a user would type it."""
    name = argv[0]
    print(f"$ leashed {shlex.join(argv)}", flush=True)
    from leashed.cli import COMMANDS

    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"leashed {name}")
    module.add_arguments(parser)
    status = int(module.run(parser.parse_args(argv[1:])) or 0)
    from leashed import interrupts

    if status != 0 or interrupts.requested():  # stop at the first interrupted or failed step
        raise _Stopped(interrupts.exit_status(status) if interrupts.requested() else status, name)
    return status


class _Stopped(Exception):
    """A step ended with a non-zero status (interrupted: 130/143, leashed/interrupts.py)."""

    def __init__(self, status: int, step: str) -> None:
        super().__init__(step)
        self.status, self.step = status, step


def run(args: argparse.Namespace) -> int:
    """The five steps; the demo stops at the first step that does not succeed, with its status."""
    try:
        return _run_steps(args)
    except _Stopped as stop:
        print(f"leashed: demo stopped at step `leashed {stop.step}` (exit status {stop.status})",
              file=sys.stderr)
        return stop.status


def _held_out_prediction(runs: Path, calibration: list[Path], machine: Path, args: argparse.Namespace,
                         round_: int, *extra: str) -> Path:
    """Round ``round_``'s prediction of the measured setting from that round's calibration runs (one and
    two threads) and the machine file only: it is never calibrated from the run it is compared with
    (docs/simulator.md, "Calibrated predictions")."""
    suffix = "-loaded" if extra else ""
    path = runs / f"sim-leashed-m{args.compare_threads}-r{round_}{suffix}.npz"
    _command(["simulate", *_calibrate_from(calibration), "--machine", str(machine), "--threads",
              str(args.compare_threads), "--seed", str(args.seed + round_), "--quiet", *extra,
              "--out", str(path)])
    return path


def _calibrate_from(paths: list[Path]) -> list[str]:
    """``--calibrate-from P`` for every calibration run."""
    return [arg for path in paths for arg in ("--calibrate-from", str(path))]


def _loaded_note(measured: list[Path], calibration: list[list[Path]], machine: Path, runs: Path, out: Path,
                 args: argparse.Namespace) -> list[Path]:
    """When the machine was loaded during a measured run, say so, and compare, in pairs again, the
    predictions that take each measured run's recorded load (``--background-load``); returns those
    predictions (none when no run was loaded)."""
    from leashed.machine import machine_loaded
    from leashed.results import RunResult

    records = [(RunResult.load(p).metadata or {}).get("machine") or {} for p in measured]
    loaded = [k for k, record in enumerate(records) if machine_loaded(record)]
    if not loaded:
        return []
    loads = [float(record.get("background_load_cores") or 0.0) for record in records]
    print(f"      the machine was loaded during {len(loaded)} of the {len(measured)} measured runs: other "
          f"processes took up to {max(loads[k] for k in loaded):.2f} cores' worth (`leashed inspect`); "
          f"the predictions for the loads each run recorded:", flush=True)
    predictions = [_held_out_prediction(runs, calibration[k], machine, args, k, "--background-load",
                                        f"{loads[k]:.3f}") for k in range(len(measured))]
    _command(["compare", "--paired", *map(str, predictions), *map(str, measured),
              "--out", str(out / "compare-loaded")])
    return predictions


def _paired_comparison(predictions: list[Path], measured: list[Path]) -> Any:
    """The comparison step 4 printed (``leashed compare --paired``), for the report."""
    from leashed.analysis.compare import compare_results
    from leashed.results import RunResult

    files = [*predictions, *measured]
    return compare_results([RunResult.load(p) for p in files], [p.name for p in files], paired=True)


def _rounds(args: argparse.Namespace) -> int:
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else DEFAULT_ROUNDS)
    if rounds < 2:
        raise LeashedError(f"--rounds must be at least 2 (a paired comparison needs two pairs), not {rounds}")
    return rounds


def _run_steps(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise LeashedError(f"--threads must be at least 1, not {args.threads}")
    rounds = _rounds(args)
    if args.compare_threads is None:
        args.compare_threads = len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else 3
    if args.compare_threads < 1:
        raise LeashedError(f"--compare-threads must be at least 1, not {args.compare_threads}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LeashedError(f"--out {out} exists and is not a folder; choose another --out")
    runs = out / "runs"
    from leashed._files import check_writable

    check_writable(out, "--out", directory=True)  # before any work: one line, nothing created
    runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    size = ["--updates", "300", "--evaluations", "5"] if args.quick else ["--epochs", str(args.epochs)]
    common = ["--model", args.model, "--dataset", args.dataset, "--seed", str(args.seed), *size]

    print(f"[1/5] training {', '.join(DEMO_ALGORITHMS)} for real at {args.threads} threads", flush=True)
    trained = []
    for algorithm in DEMO_ALGORITHMS:
        path = runs / f"train-{algorithm}-m{args.threads}.npz"
        _command(["train", "--algorithm", algorithm, "--threads", str(args.threads), *common,
                  "--out", str(path)])
        trained.append(path)
    from leashed.results import RunResult

    plot_training = interrupts.protected_import("leashed.analysis.plots").plot_training
    curves = plot_training([RunResult.load(p) for p in trained], out / "training.png")
    print(f"      training curves: {curves}", flush=True)

    print(f"[2/5] simulating m = {', '.join(map(str, PREDICT_THREADS))} on this machine, calibrated from "
          f"one- and two-thread leashed runs and `leashed calibrate`; {rounds} rounds of calibration "
          f"runs and a measured run at m = {args.compare_threads}", flush=True)
    machine = out / "machine.json"
    # --from the leashed training run: also how the scheduler rotates this model's threads (2P of them)
    _command(["calibrate", *(["--quick"] if args.quick else []), "--from", str(trained[0]),
              "--out", str(machine)])
    calibration: list[list[Path]] = []
    measured: list[Path] = []
    for r in range(rounds):  # a round's runs follow each other within seconds: they share the drift
        print(f"      round {r + 1}/{rounds}", flush=True)
        pair = []
        for m in (1, 2):  # calibration runs, never a measured one (other seeds)
            path = runs / f"calibrate-leashed-m{m}-r{r}.npz"
            _command(["train", "--algorithm", "leashed", "--threads", str(m), *common, "--evaluations", "0",
                      "--seed", str(args.seed + 100 * m + r), "--quiet", "--out", str(path)])
            pair.append(path)
        calibration.append(pair)
        path = runs / f"measure-leashed-m{args.compare_threads}-r{r}.npz"
        _command(["train", "--algorithm", "leashed", "--threads", str(args.compare_threads), *common,
                  "--evaluations", "0", "--seed", str(args.seed + 1000 + r), "--quiet", "--out", str(path)])
        measured.append(path)
    held_out = [_held_out_prediction(runs, calibration[r], machine, args, r) for r in range(rounds)]
    every_calibration = [path for pair in calibration for path in pair]
    predicted = []
    for m in PREDICT_THREADS:  # the other thread counts may use every calibration run
        path = held_out[0] if m == args.compare_threads else runs / f"sim-leashed-m{m}.npz"
        if m != args.compare_threads:
            _command(["simulate", *_calibrate_from(every_calibration), "--machine", str(machine),
                      "--threads", str(m), "--seed", str(args.seed), "--out", str(path)])
        predicted.append(path)

    print("[3/5] fitting staleness models", flush=True)
    _command(["fit", *map(str, trained + predicted), "--out", str(out / "fit.json"),
              "--plot", str(out / "fit.png")])

    print(f"[4/5] comparing the predictions of m = {args.compare_threads} (each calibrated from its round's "
          f"calibration runs only) with the measured runs, in pairs", flush=True)
    if held_out[0] not in predicted:
        predicted.append(held_out[0])
    _command(["compare", "--paired", *map(str, held_out), *map(str, measured), "--out", str(out / "compare")])
    loaded_predictions = _loaded_note(measured, calibration, machine, runs, out, args)

    print("[5/5] writing the report", flush=True)
    from leashed.analysis.report import build_report

    rounds_heading = (f"Held-out predictions of m = {args.compare_threads} against the measured runs, "
                      f"{rounds} paired rounds")
    comparisons = [(rounds_heading, _paired_comparison(held_out, measured))]
    if loaded_predictions:
        comparisons.append((rounds_heading + ", with each run's recorded background load",
                            _paired_comparison(loaded_predictions, measured)))
    files = trained + predicted
    index = build_report([RunResult.load(p) for p in files], out / "report", files=[p.name for p in files],
                         title=f"leashed demo: {args.model} on {args.dataset}, m = {args.threads}",
                         comparisons=comparisons)
    print(f"done in {time.perf_counter() - started:.0f} s; results in {runs}/", flush=True)
    print(f"report: {index}")
    sys.stdout.flush()
    return 0
