"""``leashed simulate``: simulate M worker threads with SimPy and write a results file (``source: sim``).

Examples (docs/simulator.md)::

    leashed simulate --algorithm leashed --threads 16 --compute-time gamma:mean=2ms,cv=0.2 \\
        --update-time const:200us --updates 20000 --out sim.npz
    leashed simulate --calibrate-from runtime.npz --threads 64 --out predicted.npz
    leashed simulate --algorithm lock --threads 4 --compute-time exp:mean=1ms --update-time const:50us \\
        --model quadratic --lr 0.1 --batch-size 16 --updates 2000 --out grads.npz
    leashed simulate --algorithm leashed --threads 16 --compute-time gamma:mean=2ms,cv=0.2 \\
        --update-time const:200us --sparsifier topk:1% --dim 101770 --updates 20000 --out sparse.npz
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from leashed import algorithms
from leashed.errors import LeashedError, SpecError
from leashed.machine import load_machine
from leashed.models.registry import model_descriptor
from leashed.results import RunResult
from leashed.sim.calibration import LOAD_MODELS, calibrate, switch_cost
from leashed.sim.machine import DEFAULT_TIME_SLICE_S, Machine
from leashed.sim.replicates import run_replicates
from leashed.sim.simulate import DEFAULT_SAMPLES
from leashed.sim.timing import TimingModel, parse_distribution
from leashed.spec import ALGORITHMS, MODELS, STEP_POLICIES, ExperimentSpec

#: timing-only runs without --updates (and without a calibration file) simulate this many gradients
DEFAULT_UPDATES = 10_000
_MODEL_OPTIONS = ("dataset", "lr", "batch_size", "hidden", "epochs", "step_policy", "evaluations",
                  "divergence_factor")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Timing strings: const:5us, exp:mean=1ms, gamma:mean=2ms,cv=0.2, "
                     "lognormal:mean=2ms,cv=0.5, uniform:low=1ms,high=3ms, empirical:RUN.npz "
                     "(units s, ms, us, ns; a bare number is seconds). See docs/simulator.md.")
    what = parser.add_argument_group("what to simulate")
    what.add_argument("--algorithm", choices=ALGORITHMS, help=f"{algorithms.help_text()} (papers.md §2); "
                      "default leashed, or the calibration file's")
    what.add_argument("--threads", type=int, metavar="M", help="simulated worker threads (required, except "
                      "for seq and with --calibrate-from: the file's)")
    what.add_argument("--persistence", metavar="P", help="leashed: failed CAS attempts before a gradient "
                      "is dropped, or inf (default inf)")
    what.add_argument("--updates", type=int, metavar="N", help="gradients computed in total, committed + "
                      f"dropped (default {DEFAULT_UPDATES} without a model, else epochs x batches)")
    what.add_argument("--seed", type=int, metavar="S", help="random seed (default 0)")
    timing = parser.add_argument_group("timing model")
    timing.add_argument("--compute-time", metavar="DIST", help="gradient compute time C, e.g. "
                        "gamma:mean=2ms,cv=0.2")
    timing.add_argument("--update-time", metavar="DIST", help="update time U = copy + apply, e.g. const:20us")
    timing.add_argument("--copy-fraction", type=float, metavar="F", help="share of U spent copying "
                        "(default 0.5; calibrated seqlock: the share its runs measured)")
    timing.add_argument("--bus-contention", type=float, metavar="F", help="memory-bus contention: U "
                        "scales by 1 + F*(concurrent copies - 1) (default 0)")
    timing.add_argument("--sparse-update-factor", type=float, metavar="F", help="with --sparsifier: the "
                        "share of an update that stays dense, U' = U*(F + (1-F)*K/d) (default: the copy "
                        "fraction for leashed, lock, hogwild; 0 for seq, sync)")
    timing.add_argument("--calibrate-from", metavar="RUN.npz", action="append",
                        help="take the timing model (empirical compute times and completed-attempt times, "
                        "local and remote), the machine the run recorded and the spec defaults from a "
                        "runtime results file; repeat for several runs of one algorithm (e.g. m = 1 and 2: "
                        "the spec defaults come from the first; docs/simulator.md)")
    timing.add_argument("--compute-resampling", choices=("timeline", "pooled"), help="with --calibrate-from: "
                        "'timeline' (default) replays the measured gradient times in time order, one block "
                        "of runtime shared by all threads; 'pooled' draws them independently")
    machine = parser.add_argument_group("machine model (docs/simulator.md; off without these options and "
                                        "without --calibrate-from)")
    machine.add_argument("--machine", metavar="MACHINE.json", help="a `leashed calibrate` file: time slice, "
                         "copy times, read slowdown, cores")
    machine.add_argument("--cores", metavar="P", help="cores the threads share (threads beyond P "
                         "time-share); 'none' gives every thread its own core (default: the "
                         "calibration run's usable cores, else none)")
    machine.add_argument("--background-load", type=float, metavar="L", help="cores' worth taken by other "
                         "processes (default: what the calibration runs recorded, else 0)")
    machine.add_argument("--ignore-load", action="store_true", help="ignore the background load the "
                         "calibration runs recorded")
    machine.add_argument("--load-model", choices=LOAD_MODELS, default="competing",
                         help="how the load the calibration runs recorded carries over to --threads: "
                         "'competing' (default) as busy threads of other processes that take their fair "
                         "share, one thread among m + B; 'fixed' the same cores' worth at any m")
    machine.add_argument("--read-slowdown", metavar="S", help="with --calibrate-from: a gradient is slowed "
                         "by S x the time another thread copies the vector it reads (taken out of "
                         "concurrent runs' compute times first); default 0, or the machine file's when "
                         "calibrating from one-thread runs")
    machine.add_argument("--rotation-jitter", type=float, metavar="P", help="probability that a time slot "
                         "breaks the rotation's ties at random (0: the exact rotation; default: read off the "
                         "calibration runs whose threads time-shared the cores, else the machine file's, "
                         "else 0)")
    machine.add_argument("--attempt-model", choices=("runtime", "paper"), help="leashed: 'runtime' (default) "
                         "abandons an attempt at the competing commit as the runtime does; 'paper' charges "
                         "every failed attempt its full U (papers.md §2.1, the closed-form claims)")
    machine.add_argument("--replicates", type=int, metavar="R", help="simulation seeds seed..seed+R-1, "
                         "stored in the file for `leashed compare`'s intervals (default 5 with "
                         "--calibrate-from, else 1)")
    model = parser.add_argument_group("with-gradients mode (slow: one real gradient per simulated one)")
    model.add_argument("--with-gradients", action="store_true", help="apply real model gradients (the "
                       "calibration file's model unless --model is given)")
    model.add_argument("--model", metavar="MODEL", help=f"model: {', '.join(MODELS)}, or a user model "
                       "path/to/file.py:NAME (docs/models.md); implies --with-gradients")
    model.add_argument("--dataset", metavar="NAME", help="data set (default: the calibration file's, else "
                       "mnist; none for counter, synthetic for quadratic)")
    model.add_argument("--lr", type=float, metavar="ALPHA", help="base step size (default: the calibration "
                       "file's, else 0.2)")
    model.add_argument("--batch-size", type=int, metavar="B", help="mini-batch size (default: the "
                       "calibration file's, else 64)")
    model.add_argument("--hidden", metavar="W[,W...]", help="hidden layer widths of mlp, e.g. 128 or 128,128 "
                       "(default: the calibration file's, else 128)")
    model.add_argument("--dim", type=int, metavar="D", help="parameters of counter / features of synthetic "
                       "data (timing only: d of the counter model, for --sparsifier K/d) (default 100)")
    model.add_argument("--epochs", type=int, metavar="E", help="passes over the data when --updates is not "
                       "given (default: the calibration file's, else 1)")
    model.add_argument("--step-policy", choices=STEP_POLICIES, metavar="POLICY",
                       help=f"staleness-adaptive step, one of {', '.join(STEP_POLICIES)} (papers.md §3.1; "
                       "default: the calibration file's, else constant); normalised uses the step table of "
                       "the --calibrate-from run (trained with --step-policy normalised)")
    model.add_argument("--sparsifier", metavar="SPEC", help="none, topk:K or randk:K (K a count or a "
                       "percentage; default none); timing only: scales the update time by K/d "
                       "(--sparse-update-factor)")
    model.add_argument("--error-memory", action="store_true", help="error feedback for the sparsifier")
    model.add_argument("--divergence-factor", type=float, metavar="F", help="stop, save and exit 2 once a "
                       "loss exceeds F x ln(classes) (F x the first loss for regression; default 10; "
                       "docs/errors.md)")
    model.add_argument("--evaluations", type=int, metavar="N", help="loss evaluations over the run "
                       "(default: the calibration file's, else 20)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="FILE", help="results file to write (.npz)")
    out.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                     help=f"periodic samples of live vectors and version (default {DEFAULT_SAMPLES})")
    out.add_argument("--quiet", action="store_true", help="no summary line, no progress bar")


def build(args: argparse.Namespace) -> tuple[ExperimentSpec, TimingModel, bool]:
    """The spec, timing model and mode the command line asks for (SpecError on bad input)."""
    gradients = bool(args.with_gradients or args.model is not None)
    given = {name for name in _MODEL_OPTIONS if getattr(args, name) is not None}
    if args.error_memory:
        given.add("error_memory")
    if given and not gradients:
        names = ", ".join("--" + n.replace("_", "-") for n in sorted(given))
        raise SpecError(f"{names}: only for the with-gradients mode: add --model (or --with-gradients)")
    calibration: RunResult | None = None
    calibrations: list[RunResult] = []
    if args.calibrate_from:
        calibrations = [RunResult.load(path) for path in args.calibrate_from]
        calibration = calibrations[0]
        base = calibration.spec
    else:
        base = ExperimentSpec(algorithm="leashed", model="counter", dataset="none")
        if gradients and args.model is None:
            raise SpecError("--with-gradients without --calibrate-from needs --model")
    changes: dict[str, Any] = {}
    for name in ("algorithm", "threads", "seed", "lr", "batch_size", "dim", "epochs", "step_policy",
                 "sparsifier", "evaluations"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.persistence is not None:
        changes["persistence"] = args.persistence
    if args.error_memory:
        changes["error_memory"] = True
    if args.hidden is not None:
        try:
            changes["hidden"] = tuple(int(h) for h in str(args.hidden).split(",") if h.strip())
        except ValueError:
            raise SpecError(f"--hidden must be comma-separated integers like 128,128, not {args.hidden!r}") \
                from None
    if args.model is not None:
        changes["model"] = args.model
        if args.dataset is None:
            changes["dataset"] = model_descriptor(args.model).default_dataset
    if args.dataset is not None:
        changes["dataset"] = args.dataset
    if ("threads" not in changes and calibration is None
            and not algorithms.algorithm(changes.get("algorithm", base.algorithm)).single_thread):
        raise SpecError("how many workers? pass --threads M")

    # timing model: explicit strings win, then the calibration file
    copy_fraction = 0.5 if args.copy_fraction is None else args.copy_fraction  # calibrated seqlock: measured
    contention = 0.0 if args.bus_contention is None else args.bus_contention
    threads = int(changes.get("threads", base.threads))
    profile = load_machine(args.machine) if args.machine else None
    cores = _cores(args.cores)
    if cores is not None and cores != "none" and profile is not None:
        profile = profile.with_cores(cores)
    machine = Machine()
    if calibration is not None:
        sources = [str(p) for p in args.calibrate_from]
        measured, machine = calibrate(
            calibrations, sources, threads, copy_fraction=args.copy_fraction, bus_contention=contention,
            profile=profile, cores=None if cores in (None, "none") else cores,
            background_load=args.background_load, ignore_load=args.ignore_load,
            compute_resampling=args.compute_resampling or "timeline",
            read_slowdown=_read_slowdown(args.read_slowdown), load_model=args.load_model)
        if cores == "none":
            machine = machine.replace(cores=None)
        compute_text = args.compute_time or f"empirical:{sources[0]}"
        update_text = args.update_time or f"empirical:{sources[0]}"
        compute = parse_distribution(args.compute_time, "compute") if args.compute_time else measured.compute
        update = parse_distribution(args.update_time, "update") if args.update_time else measured.update
        copy_fraction = measured.copy_fraction
        timing = TimingModel(compute, update, copy_fraction, contention, notes=measured.notes,
                             update_remote=None if args.update_time else measured.update_remote)
    else:
        if not args.compute_time or not args.update_time:
            missing = " and ".join(f"--{n}" for n, v in (("compute-time", args.compute_time),
                                                        ("update-time", args.update_time)) if not v)
            raise SpecError(f"missing {missing}: give distributions like gamma:mean=2ms,cv=0.2 and "
                            f"const:20us, or --calibrate-from a runtime results file")
        compute_text, update_text = args.compute_time, args.update_time
        timing = TimingModel.parse(compute_text, update_text, copy_fraction, contention)
        if profile is not None or cores not in (None, "none") or args.background_load:
            given = (profile.cores if profile is not None else None) if cores in (None, "none") else cores
            slice_s = profile.time_slice_s if profile is not None else DEFAULT_TIME_SLICE_S
            jitter = profile.rotation_jitter if profile is not None else None
            machine = Machine(cores=given, time_slice_s=slice_s, background_load=float(args.background_load
                                                                                      or 0.0),
                              switch_cost_s=switch_cost(profile, slice_s), rotation_jitter=jitter or 0.0)
    if args.rotation_jitter is not None:
        if machine.cores is None:
            raise SpecError("--rotation-jitter needs cores that the threads share: give --machine, --cores P "
                            "or --calibrate-from a runtime run")
        machine = machine.replace(rotation_jitter=args.rotation_jitter)
    changes["compute_time"] = compute_text
    changes["update_time"] = update_text

    if args.updates is not None:
        changes["updates"] = args.updates
    elif not gradients and base.updates is None:
        changes["updates"] = len(calibration.updates) if calibration is not None else DEFAULT_UPDATES
    extra = {**base.extra, "copy_fraction": copy_fraction, "bus_contention": contention}
    if getattr(args, "divergence_factor", None) is not None:
        extra["divergence_factor"] = float(args.divergence_factor)
    if args.sparse_update_factor is not None:
        factor = args.sparse_update_factor
        if not (0.0 <= factor <= 1.0):
            raise SpecError(f"--sparse-update-factor is the dense share of an update, in [0, 1], "
                            f"not {factor}")
        if changes.get("sparsifier", base.sparsifier) == "none":
            raise SpecError("--sparse-update-factor needs a sparsifier: add --sparsifier topk:K or randk:K")
        extra["sparse_update_factor"] = factor
    if calibration is not None:
        extra["calibrated_from"] = ", ".join(str(p) for p in args.calibrate_from)
    if args.attempt_model is not None:
        extra["attempt_model"] = args.attempt_model
    if args.read_slowdown is not None and calibration is None:
        raise SpecError("--read-slowdown needs --calibrate-from (it is part of a calibrated prediction)")
    if args.compute_resampling is not None and calibration is None:
        raise SpecError("--compute-resampling needs --calibrate-from (it resamples measured gradient times)")
    extra["machine"] = machine.describe()
    if args.machine:
        extra["machine"]["machine_file"] = str(args.machine)
    replicates = args.replicates if args.replicates is not None else (5 if calibration is not None else 1)
    if replicates < 1 or replicates > 1000:
        raise SpecError(f"--replicates must be between 1 and 1000, not {replicates}")
    extra["replicates"] = replicates
    changes["extra"] = extra
    spec = base.replace(**changes)
    if args.samples < 1:
        raise SpecError(f"--samples must be a positive integer, not {args.samples}")
    return spec, timing, gradients


def _read_slowdown(text: str | None) -> float | None:
    """``--read-slowdown``: a number >= 0, or None when not given."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"--read-slowdown must be a number >= 0, not {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise SpecError(f"--read-slowdown must be a number >= 0, not {text!r}")
    return value


def _cores(text: str | None) -> int | str | None:
    """``--cores``: a positive integer, ``none``, or not given."""
    if text is None:
        return None
    if str(text).strip().lower() == "none":
        return "none"
    try:
        value = int(text)
    except ValueError:
        raise SpecError(f"--cores must be a positive integer or 'none', not {text!r}") from None
    if value < 1:
        raise SpecError(f"--cores must be a positive integer or 'none', not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from leashed import interrupts
    from leashed._files import check_writable
    from leashed.limits import check_sizes

    try:
        spec, timing, gradients = build(args)
    except LeashedError:
        raise
    except (OverflowError, ValueError, ZeroDivisionError) as exc:  # a number the timing laws cannot take
        raise SpecError(f"cannot build the timing model from these options ({exc})") from None
    out = Path(args.out)
    if out.is_dir():
        raise LeashedError(f"--out {out} is a directory; give a file name like {out / 'sim.npz'}")
    check_writable(out if out.suffix == ".npz" else out.with_name(out.name + ".npz"), "--out")
    check_sizes(spec, "simulate", samples=args.samples, gradients=gradients)  # before any allocation
    progress = not args.quiet and sys.stderr.isatty()
    with interrupts.protected():  # SIGINT/SIGTERM: the step loop stops, the partial result is saved
        sim = run_replicates(spec, timing, replicates=int(spec.extra.get("replicates", 1)),
                             gradients=gradients, samples=args.samples, progress=progress)
        try:
            path = sim.result.save(out)
        except OSError as exc:
            raise LeashedError(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from None
    if interrupts.requested():
        print(f"leashed: interrupted: partial result ({sim.result.totals['updates_applied']} updates) saved "
              f"to {path}", file=sys.stderr)
        return interrupts.exit_status()
    if sim.result.totals.get("diverged_at") not in (None, -1):
        from leashed.errors import DivergenceError

        at = sim.result.totals["diverged_at"]
        raise DivergenceError(f"the simulated training diverged at version {at} "
                              f"(non-finite loss, or loss above {sim.engine.loss_limit:.4g}); the result was "
                              f"saved to {path}; try a smaller --lr (or --divergence-factor)")
    if not args.quiet:
        print(_summary(sim.result, path))
    return 0


def _summary(result: RunResult, path: Path) -> str:
    s = result.summary()
    tau = s["staleness_mean"]
    wall = s["wall_time_s"] or 0.0
    rate = s["updates_per_s"]
    text = (f"{result.spec.label()}: {s['updates_applied']} updates applied, {s['updates_dropped']} dropped, "
            f"{wall:.6g} simulated s")
    if rate is not None and math.isfinite(rate):
        text += f" ({rate:.6g} updates/s)"
    if tau is not None:
        text += f", staleness mean {tau:.4g}"
    if algorithms.algorithm(result.spec.algorithm).has_cas:
        text += f", CAS failures {s['cas_failures']}"
    if result.totals.get("diverged_at") not in (None, -1):
        text += f", DIVERGED at version {result.totals['diverged_at']}"
    return f"{text} -> {path}"
