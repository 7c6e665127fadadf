"""``leashed train``: train a model for real on worker threads and write a results file (``source: runtime``).

Examples::

    leashed train --out seq.npz                                   # MLP on MNIST, 1 epoch, one thread
    leashed train --algorithm leashed --threads 2 --epochs 5 --out leashed.npz --plot leashed.png
    leashed train --algorithm leashed --threads 8 --persistence 0 --out tp0.npz
    leashed train --algorithm hogwild --threads 4 --model counter --dim 1000 --updates 100000 --lr 1 \\
        --out counter.npz
    leashed train --from leashed.npz --threads 4 --out again.npz  # rerun a stored spec, 4 threads
    leashed train --algorithm leashed --threads 2 --sparsifier topk:1% --error-memory --out sparse.npz
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from leashed import algorithms, interrupts
from leashed.errors import DivergenceError, LeashedError, SpecError
from leashed.models.registry import DATALESS_MODELS, model_descriptor
from leashed.results import RunResult
from leashed.spec import ALGORITHMS, MODELS, STEP_POLICIES, ExperimentSpec

DEFAULTS: dict[str, Any] = {"algorithm": "seq", "threads": 1, "model": "mlp", "hidden": (128,),
                            "dataset": "mnist", "batch_size": 64, "lr": 0.2, "epochs": 1, "seed": 0,
                            "evaluations": 20}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Workers are real threads without the GIL (papers.md §2); --epochs are passes over the "
                     "data in total, shared among the threads. Exit status 2 on bad input or divergence "
                     "(the result is saved first), 130 on Ctrl-C (the partial result is saved).")
    what = parser.add_argument_group("what to run")
    what.add_argument("--algorithm", choices=ALGORITHMS, help=f"{algorithms.help_text()} "
                      "(papers.md §2; default seq)")
    what.add_argument("--threads", type=int, metavar="M", help="worker threads (default 1)")
    what.add_argument("--persistence", metavar="P", help="leashed: failed CAS attempts before a gradient is "
                      "dropped: a non-negative integer or inf (default inf: never drop)")
    what.add_argument("--step-policy", choices=STEP_POLICIES, help="staleness-adaptive step s(tau) "
                      "(papers.md §3; default constant)")
    what.add_argument("--staleness-model", metavar="FIT.json[#N]", help="step policy normalised: the "
                      "staleness model fitted by `leashed fit --out FIT.json` (#N: run N of several)")
    what.add_argument("--sparsifier", metavar="S", help="none, topk:K or randk:K, K a count or a percentage "
                      "of the model (topk:1%%): each gradient keeps K coordinates before it is applied "
                      "(papers.md §5; default none)")
    what.add_argument("--error-memory", action=argparse.BooleanOptionalAction, default=None,
                      help="with --sparsifier: per-thread error feedback, send Phi(e + g) and keep "
                      "e <- e + g - Phi(e + g) (default off)")
    what.add_argument("--from", dest="from_file", metavar="RESULTS.npz", help="rerun the spec stored in a "
                      "results file (options given here override it)")
    model = parser.add_argument_group("model and data")
    model.add_argument("--model", metavar="MODEL", help=f"model: {', '.join(MODELS)} (default mlp), or a "
                       "user model path/to/file.py:NAME (docs/models.md)")
    model.add_argument("--hidden", metavar="W[,W...]", help="hidden layer widths, e.g. 128 or 128,64 "
                       "(default 128)")
    own = ", ".join(f"{data} for {name}" for name, data in DATALESS_MODELS.items())
    model.add_argument("--dataset", help="mnist, fashion-mnist, idx:DIR, cifar10:DIR, synthetic, none "
                       f"(default mnist; {own})")
    model.add_argument("--dim", type=int, help="parameters of counter / features of synthetic data")
    model.add_argument("--batch-size", type=int, metavar="B", help="mini-batch size (default 64)")
    model.add_argument("--lr", type=float, help="base step size alpha_c (default 0.2)")
    model.add_argument("--epochs", type=int, metavar="E", help="passes over the training data in total, "
                       "shared among the threads (default 1)")
    model.add_argument("--updates", type=int, metavar="N", help="gradients in total (overrides --epochs)")
    model.add_argument("--seed", type=int, help="random seed (default 0)")
    model.add_argument("--evaluations", type=int, metavar="N", help="parameter snapshots taken at evenly "
                       "spaced moments of the run, each evaluated for training loss and test accuracy "
                       "after the threads have joined, in parallel on all cores: the last on the full "
                       "test set and 5,000 training rows, the others (the curve) on 250 rows of each; "
                       "adds 12-23%% to one epoch of the MLP or the CNN, measured (default 20; 0: none)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="FILE", help="results file to write (.npz)")
    out.add_argument("--plot", metavar="FILE.png", help="also plot loss and accuracy against time")
    out.add_argument("--backend", choices=("threads", "mpi"), help="threads (default): worker threads in "
                     "this process; mpi: `mpiexec -n P leashed train --backend mpi ...` runs P-1 worker "
                     "ranks (lock, hogwild, leashed; runtime/mpi_backend.py)")
    out.add_argument("--check", action="store_true", help="leashed: checking mode of the parameter store "
                     "(poison recycled vectors, verify every pin; slower)")
    out.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    out.add_argument("--divergence-factor", type=float, metavar="F", help="stop, save and exit 2 once a "
                     "training loss exceeds F x ln(classes) (classifiers) or F x the initial loss (default "
                     "10; inf: only NaN/inf count; docs/errors.md)")


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(h) for h in str(text).split(",") if h.strip())
    except ValueError:
        raise SpecError(f"--hidden must be comma-separated integers like 128 or 128,64, "
                        f"not {text!r}") from None
    if not widths:
        raise SpecError(f"--hidden must be comma-separated integers like 128 or 128,64, not {text!r}")
    return widths


def build_spec(args: argparse.Namespace) -> ExperimentSpec:
    """The ExperimentSpec the command line asks for (SpecError on bad input)."""
    if args.from_file:
        base = RunResult.load(args.from_file).spec
        changes: dict[str, Any] = {}
    else:
        base = ExperimentSpec()
        changes = dict(DEFAULTS)
    for name in ("algorithm", "threads", "model", "dataset", "dim", "batch_size", "lr", "epochs", "updates",
                 "seed", "evaluations", "step_policy", "sparsifier", "error_memory"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.sparsifier is not None and args.sparsifier.strip() == "none" and args.error_memory is None:
        changes["error_memory"] = False  # --from a sparse run with --sparsifier none: dense, no memory
    if args.persistence is not None:
        changes["persistence"] = args.persistence
    if args.hidden is not None:
        changes["hidden"] = _hidden(args.hidden)
    if args.model is not None and args.dataset is None and not args.from_file:
        changes["dataset"] = model_descriptor(args.model).default_dataset
    if args.updates is None and args.epochs is not None:
        changes["updates"] = None
    if args.staleness_model is not None:
        from leashed.analysis.steps import step_table_from_fit

        path, _, which = str(args.staleness_model).rpartition("#")
        if not (path and which.isdigit()):  # FIT.json#N picks run N of a fit file of several runs
            path, which = str(args.staleness_model), ""
        changes["step_table"] = step_table_from_fit(path, result=int(which) if which else None)
        changes["staleness_model"] = str(args.staleness_model)
    elif args.step_policy is not None and args.step_policy != "normalised":
        changes["step_table"] = None
        changes["staleness_model"] = None
    if isinstance(changes.get("lr"), float) and not math.isfinite(changes["lr"]):
        raise SpecError(f"learning rate must be a positive finite number, not {changes['lr']!r}")
    return base.replace(**changes)


def _check_outputs(args: argparse.Namespace) -> tuple[Path, Path | None]:
    from leashed._files import check_writable

    out = Path(args.out)
    if out.is_dir():
        raise LeashedError(f"--out {out} is a directory; give a file name like {out / 'run.npz'}")
    check_writable(out if out.suffix == ".npz" else out.with_name(out.name + ".npz"), "--out")
    plot = None
    if args.plot:
        plot = Path(args.plot)
        if plot.suffix.lower() not in (".png", ".svg"):
            raise LeashedError(f"--plot {plot} must end in .png or .svg")
        check_writable(plot, "--plot")  # before training: an unwritable output never costs a run
    return out, plot


def run(args: argparse.Namespace) -> int:
    if args.backend == "mpi" or (args.backend is None and args.from_file
                                 and RunResult.load(args.from_file).spec.backend == "mpi"):
        return _run_mpi(args)
    from leashed.limits import check_sizes
    from leashed.runtime.run import TAIL_CAVEAT
    from leashed.runtime.run import run as run_spec

    spec = build_spec(args)
    out, plot = _check_outputs(args)
    check_sizes(spec, "train")  # stated limits and available memory, before any allocation
    if spec.step_policy == "tail":
        print(f"leashed: {TAIL_CAVEAT}", file=sys.stderr)
    with interrupts.protected():  # SIGINT/SIGTERM: stop the threads, keep and save what was measured
        factor = 10.0 if getattr(args, "divergence_factor", None) is None else args.divergence_factor
        result = run_spec(spec, progress=False if args.quiet else None, check=args.check,
                          divergence_factor=factor)
        try:
            path = result.save(out)
        except OSError as exc:
            raise LeashedError(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from None
        diverged = result.totals["diverged_at"] is not None and result.totals["diverged_at"] >= 0
        if plot is not None and not diverged and not interrupts.requested():
            _plot(result, plot, args.quiet)
    if result.totals["interrupted"] or interrupts.requested():
        skipped = result.extra.get("evaluations_skipped")
        print(f"leashed: interrupted: {'partial ' if result.totals['interrupted'] else ''}result "
              f"({result.totals['updates_applied']} updates"
              f"{f', {skipped} evaluations skipped' if skipped else ''}) saved to {path}", file=sys.stderr)
        return interrupts.exit_status()
    if diverged:
        limit = (result.extra.get("divergence") or {}).get("loss_limit")
        rule = f", or loss above {limit:.4g}" if isinstance(limit, float) and limit < 1e300 else ""
        raise DivergenceError(f"training diverged at version {result.totals['diverged_at']} (non-finite "
                              f"loss or parameters{rule}); the result was saved to {path}; try a smaller "
                              f"--lr (or --divergence-factor)")
    if not args.quiet:
        print(summary(result, path))
    return 0


def _run_mpi(args: argparse.Namespace) -> int:
    """``--backend mpi``: hand over to runtime/mpi_backend.py (every rank runs this command)."""
    from leashed.runtime.mpi_backend import mpi_command

    def make_spec() -> ExperimentSpec:
        _check_outputs(args)
        return build_spec(args).replace(backend="mpi")

    def report(result: RunResult) -> int:
        path = Path(args.out) if Path(args.out).suffix == ".npz" else Path(args.out + ".npz")
        if result.totals["diverged_at"] is not None and result.totals["diverged_at"] >= 0:
            sys.stderr.write(f"leashed: error: training diverged at version {result.totals['diverged_at']} "
                             f"(non-finite loss or parameters); the result was saved to {path}; try a "
                             f"smaller --lr\n")
            return 2
        if args.plot:
            _plot(result, Path(args.plot), args.quiet)
        if not args.quiet:
            print(summary(result, path))
        return 0

    return mpi_command(make_spec, args.out, report)


def _plot(result: RunResult, path: Path, quiet: bool) -> None:
    try:
        plot_training = interrupts.protected_import("leashed.analysis.plots").plot_training
    except ImportError as exc:
        print(f"leashed: plot skipped: leashed.analysis.plots is not available ({exc})", file=sys.stderr)
        return
    saved = plot_training([result], path)
    if not quiet:
        print(f"plot: {saved}")


def summary(result: RunResult, path: Path) -> str:
    """A short report: throughput, final loss and accuracy, staleness, CAS failures, where it was saved."""
    s = result.summary()
    parts = [f"{result.spec.label()}: {s['updates_applied']} updates in {s['wall_time_s']:.3g} s"]
    if s["updates_per_s"]:
        parts[0] += f" ({s['updates_per_s']:.4g} updates/s)"
    if s["updates_dropped"]:
        parts.append(f"{s['updates_dropped']} dropped")
    if s["final_train_loss"] is not None:
        parts.append(f"final loss {s['final_train_loss']:.4g}")
    if s["final_test_accuracy"] is not None:
        parts.append(f"test accuracy {100 * s['final_test_accuracy']:.2f}%")
    if s["staleness_mean"] is not None:
        parts.append(f"mean staleness {s['staleness_mean']:.3g}")
    if algorithms.algorithm(result.spec.algorithm).has_cas:
        parts.append(f"CAS failures {s['cas_failures']}, "
                     f"live vectors max {result.extra.get('live_vectors_max')}")
    if s["lost_updates"] is not None:
        parts.append(f"lost updates {s['lost_updates']:.6g}")
    return ", ".join(parts) + f" -> {path}"
