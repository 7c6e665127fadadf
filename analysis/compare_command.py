"""``leashed compare FILES... [--out DIR] [--strict]`` (see :mod:`.compare`, docs/analysis.md).

Files may come in any order: simulator results (source ``sim``) are the predictions, runtime results the
measurements; they pair by algorithm, threads, T_p, sparsifier and step policy, and several files of one
setting on one side are replicates (with ``--paired``, the k-th prediction and the k-th measured run of a
setting are a pair, :func:`.compare.compare_pair`). Prints a table and an equivalence verdict (agree /
differ / inconclusive) per quantity, per pair and overall; ``--out`` writes ``comparison.json`` (format
``leashed-comparison`` version 2) and the figures into DIR, built in a temporary folder and renamed into
place. Exit status 0, or with ``--strict`` 1 unless the overall verdict is ``agree``.
"""

from __future__ import annotations

import argparse

from leashed.analysis import compare
from leashed.analysis._io import atomic_directory, check_output_dir, write_json_atomic
from leashed.errors import LeashedError
from leashed.results import RunResult

_EPILOG = """\
verdict: each quantity gets a confidence interval over batches of the commit sequence (and over
replicates: several files of one setting on one side, or a simulation's per-seed replicates); the
interval of the difference predicted - measured decides: agree if it lies inside the tolerance, differ if
entirely outside, inconclusive otherwise (two one-sided tests; --confidence 0.9 = two 5% tests).
Tolerances: throughput ratio predicted/measured in [1/1.1, 1.1] (only for a calibrated simulation);
CAS failure fraction +-max(0.03, 30% of measured) (algorithms with CAS); staleness TV <= 0.16, the band
repeated real runs of one setting show (docs/analysis.md); mean staleness +-10% of max(measured, 1),
reported as 'identity' where E tau = m - 1 by construction (hogwild, leashed Tp=inf); dispersion
+-15% of max(measured, 1), judged only where each side's Var tau rests on >= 30 updates' worth of
squared deviations (--min-effective; below that a few long stalls decide it). Overall: differ if any
differs, agree if all agree, else inconclusive.
--paired: the k-th prediction and the k-th measured run of a setting (in the order given) are a pair;
the intervals of the differences are the delete-one-pair jackknife (df = pairs - 1), so drift the members
of a pair share cancels.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("results", nargs="+", metavar="RESULT",
                        help="simulator (predicted) and runtime (measured) results files, any order")
    parser.add_argument("--out", metavar="DIR", help="write comparison.json and figures into DIR")
    d = compare.Criteria()
    parser.add_argument("--confidence", type=float, default=d.confidence,
                        help="two-sided confidence of the intervals (default %(default)s)")
    parser.add_argument("--throughput-tol", type=float, default=d.throughput_tol,
                        help="throughput ratio must lie in [1/(1+tol), 1+tol] (default %(default)s)")
    parser.add_argument("--cas-tol", type=float, default=d.cas_tol,
                        help="absolute floor of the CAS failure fraction tolerance (default %(default)s)")
    parser.add_argument("--cas-rel-tol", type=float, default=d.cas_rel_tol,
                        help="CAS failure fraction tolerance relative to the measured value "
                             "(default %(default)s)")
    parser.add_argument("--tv-tol", type=float, default=d.tv_tol,
                        help="largest staleness total-variation distance that agrees (default %(default)s)")
    parser.add_argument("--mean-tol", type=float, default=d.mean_tol,
                        help="mean staleness tolerance relative to max(measured, 1) (default %(default)s)")
    parser.add_argument("--dispersion-tol", type=float, default=d.dispersion_tol,
                        help="dispersion tolerance relative to max(measured, 1) (default %(default)s)")
    parser.add_argument("--min-effective", type=float, default=d.min_effective,
                        help="judge the dispersion only where each side's Var tau rests on at least this "
                             "many updates' worth of squared deviations (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="level of the chi-square homogeneity test, information only "
                             "(default %(default)s)")
    parser.add_argument("--calibrated", action="store_true",
                        help="judge throughput even if the simulator result does not say it was calibrated")
    parser.add_argument("--paired", action="store_true",
                        help="the k-th prediction and the k-th measured run of a setting, in the order "
                             "given, were made together (e.g. calibrated from runs made just before it): "
                             "judge the differences over these pairs, so the machine's drift between "
                             "pairs cancels")
    parser.add_argument("--format", choices=("png", "svg"), default="png", help="figure format")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 unless the overall verdict is agree")


def run(args: argparse.Namespace) -> int:
    below_one = ("alpha", "tv_tol", "confidence", "cas_tol", "cas_rel_tol")
    for name in ("confidence", "throughput_tol", "cas_tol", "cas_rel_tol", "tv_tol", "mean_tol",
                 "dispersion_tol", "alpha", "min_effective"):
        value = getattr(args, name)
        if not value > 0 or (name in below_one and value >= 1):
            raise LeashedError(f"--{name.replace('_', '-')} must be positive"
                               f"{' and below 1' if name in below_one else ''}, not {value}")
    if args.out:
        check_output_dir(args.out)
    results = [RunResult.load(path) for path in args.results]
    criteria = compare.Criteria(confidence=args.confidence, throughput_tol=args.throughput_tol,
                                cas_tol=args.cas_tol, cas_rel_tol=args.cas_rel_tol, tv_tol=args.tv_tol,
                                mean_tol=args.mean_tol, dispersion_tol=args.dispersion_tol, alpha=args.alpha,
                                min_effective=args.min_effective)
    result = compare.compare_results(results, [str(p) for p in args.results], criteria=criteria,
                                     calibrated=True if args.calibrated else None, paired=args.paired)
    print(result.table())
    if args.out:
        with atomic_directory(args.out) as tmp:
            write_json_atomic(tmp / "comparison.json", result.to_dict())
            compare.write_comparison(result, tmp, fmt=args.format)
        print(f"wrote {args.out}")
    return 1 if args.strict and not result.consistent else 0
