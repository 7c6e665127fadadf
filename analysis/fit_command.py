"""``leashed fit RESULT... [--models ...] [--out fit.json] [--plot fit.png]`` (papers.md §4).

Fits every requested staleness model to the committed staleness of each results file, prints one line per
file (the best model by AIC; ``--verbose``: a table per file of every model ranked by AIC), and optionally
writes the fit file (JSON, format ``leashed-staleness-fit`` version 1, documented in docs/analysis.md;
written atomically) and a plot of the histograms with the fitted pmfs.
Every results file is read before anything is written, so a bad file leaves no output behind.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from leashed.analysis._io import check_plot_path, write_json_atomic
from leashed.analysis.staleness import (
    DEFAULT_MODELS,
    FIT_MODELS,
    StalenessFit,
    fit_document,
    fit_entry,
    fit_result,
    parse_models,
)
from leashed.errors import LeashedError
from leashed.results import RunResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULT", help="results files (.npz) to fit")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated staleness models from {','.join(FIT_MODELS)} "
                             f"(default: %(default)s)")
    parser.add_argument("--out", metavar="FIT.json", help="write the fits as JSON (for `leashed train "
                        "--step-policy normalised --staleness-model FIT.json`)")
    parser.add_argument("--plot", metavar="FIT.png", help="plot histograms with fitted pmfs (.png or .svg)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="print every model's table per file, not one line per file with the best")


def format_table(entry: dict[str, Any], fits: list[StalenessFit]) -> str:
    """The per-file table: models ranked by AIC with parameters ± standard errors."""
    disp = entry.get("dispersion")
    lines = [f"{entry['file']}: {entry['label']} [{entry['source']}]  N={entry['n']}  "
             f"mean τ {entry['mean']:.4g}  var {entry['var']:.4g}  D {disp:.3g}" if disp is not None else
             f"{entry['file']}: {entry['label']} [{entry['source']}]  N={entry['n']}"]
    rows = [("rank", "model", "parameters (± se)", "NLL/sample", "AIC", "chi2 p (dof)")]
    for i, f in enumerate(fits, 1):
        p = "-" if not math.isfinite(f.chi2_p) else f"{f.chi2_p:.3g}"
        rows.append((str(i), f.model + ("*" if f.at_boundary else ""), f.describe(),
                     f"{f.nll_per_sample:.4f}", f"{f.aic:.1f}", f"{p} ({f.chi2_dof})"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    notes = [f"  * {f.model}: {f.note}" for f in fits if f.note and f.at_boundary]
    return "\n".join(lines + notes)


def format_line(index: int, entry: dict[str, Any], fits: list[StalenessFit]) -> str:
    """One line per file: its index N (0-based, for FIT.json#N), the staleness mean, the best model by AIC."""
    head = f"#{index} {entry['file']}: {entry['label']} [{entry['source']}]  N={entry['n']}"
    if entry.get("mean") is not None:
        head += f"  mean τ {entry['mean']:.4g}"
    if not fits:
        return head
    best = fits[0]
    p = "-" if not math.isfinite(best.chi2_p) else f"{best.chi2_p:.3g}"
    rejected = sum(1 for f in fits if math.isfinite(f.chi2_p) and f.chi2_p < 0.05)
    verdict = (f"; all {len(fits)} models rejected by chi2 at 5 %" if rejected == len(fits) else "")
    return f"{head}  best {best.model} {best.describe()} (chi2 p {p}){verdict}"


def run(args: argparse.Namespace) -> int:
    models = parse_models(args.models)
    if args.plot:
        check_plot_path(args.plot)
    if args.out and Path(args.out).is_dir():
        raise LeashedError(f"--out {args.out} is a folder; give a file name such as fit.json")
    if args.out:
        from leashed._files import check_writable

        check_writable(args.out, "--out")  # before any work (docs/errors.md)
    results = [RunResult.load(path) for path in args.results]  # read everything before writing anything
    entries, all_fits = [], []
    for path, result in tqdm(list(zip(args.results, results, strict=True)), desc="fitting", disable=None,
                             unit="file", leave=False):
        try:
            fits = fit_result(result, models)
        except LeashedError as exc:
            raise LeashedError(f"{path}: {exc}") from None
        entries.append(fit_entry(result, fits, file=str(path)))
        all_fits.append(fits)
    if args.verbose:
        for entry, fits in zip(entries, all_fits, strict=True):
            print(format_table(entry, fits))
            print()
        print("ranked by AIC = 2k + 2 NLL (lower is better); chi2 p: pooled-bin goodness of fit; "
              "* = estimate on the boundary of the parameter space")
    else:
        for i, (entry, fits) in enumerate(zip(entries, all_fits, strict=True)):
            print(format_line(i, entry, fits))
        print("best = lowest AIC of the models fitted; every model's table: --verbose")
    if args.out:
        path = write_json_atomic(args.out, fit_document(entries, models))
        print(f"wrote {path}")
    if args.plot:
        from leashed.interrupts import protected_import

        plots = protected_import("leashed.analysis.plots")  # matplotlib only when plotting

        path = plots.plot_staleness(results, args.plot, fits=all_fits)
        print(f"wrote {path}")
    return 0
