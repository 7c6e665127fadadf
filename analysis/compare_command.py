"""``leashed compare PREDICTED... MEASURED... [--out DIR]`` (see :mod:`.compare`).

Files may come in any order: simulator results (source ``sim``) are the predictions, runtime results the
measurements; they pair by algorithm, threads and T_p. Prints a table and a verdict per pair; ``--out``
writes ``comparison.json`` (format ``leashed-comparison`` version 1) and the figures into DIR, built in a
temporary folder and renamed into place. Exit status 0, or with ``--strict`` 1 if any pair differs.
"""

from __future__ import annotations

import argparse

from leashed.analysis import compare
from leashed.analysis._io import atomic_directory, check_output_dir, write_json_atomic
from leashed.errors import LeashedError
from leashed.results import RunResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULT",
                        help="simulator (predicted) and runtime (measured) results files, any order")
    parser.add_argument("--out", metavar="DIR", help="write comparison.json and figures into DIR")
    d = compare.Criteria()
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="significance level (default %(default)s)")
    parser.add_argument("--tv-tol", type=float, default=d.tv_tol,
                        help="largest total-variation distance still consistent (default %(default)s)")
    parser.add_argument("--mean-tol", type=float, default=d.mean_tol,
                        help="largest relative difference of mean staleness (default %(default)s)")
    parser.add_argument("--throughput-tol", type=float, default=d.throughput_tol,
                        help="throughput ratio must lie in [1/(1+tol), 1+tol] (default %(default)s)")
    parser.add_argument("--cas-tol", type=float, default=d.cas_tol,
                        help="largest difference of CAS failure fractions (default %(default)s)")
    parser.add_argument("--calibrated", action="store_true",
                        help="judge throughput even if the simulator result does not say it was calibrated")
    parser.add_argument("--format", choices=("png", "svg"), default="png", help="figure format")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any pair differs")


def run(args: argparse.Namespace) -> int:
    for name in ("alpha", "tv_tol", "mean_tol", "throughput_tol", "cas_tol"):
        value = getattr(args, name)
        if not value > 0 or (name in ("alpha", "tv_tol") and value >= 1):
            raise LeashedError(f"--{name.replace('_', '-')} must be positive"
                               f"{' and below 1' if name in ('alpha', 'tv_tol') else ''}, not {value}")
    if args.out:
        check_output_dir(args.out)
    results = [RunResult.load(path) for path in args.results]
    criteria = compare.Criteria(alpha=args.alpha, tv_tol=args.tv_tol, mean_tol=args.mean_tol,
                                throughput_tol=args.throughput_tol, cas_tol=args.cas_tol)
    result = compare.compare_results(results, [str(p) for p in args.results], criteria=criteria,
                                     calibrated=True if args.calibrated else None)
    print(result.table())
    if args.out:
        with atomic_directory(args.out) as tmp:
            write_json_atomic(tmp / "comparison.json", result.to_dict())
            compare.write_comparison(result, tmp, fmt=args.format)
        print(f"wrote {args.out}")
    return 1 if args.strict and not result.consistent else 0
