"""``leashed report RESULT... --out DIR``: one HTML page of a set of runs (see :mod:`.report`)."""

from __future__ import annotations

import argparse

from leashed.analysis.staleness import DEFAULT_MODELS, FIT_MODELS, parse_models
from leashed.results import RunResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULT",
                        help="results files (.npz), runtime and/or sim")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="report folder (index.html + figures/); replaced as a whole if leashed wrote it")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"staleness models to fit, from {','.join(FIT_MODELS)} (default: %(default)s)")
    parser.add_argument("--title", help="page title")
    parser.add_argument("--paired", action="store_true",
                        help="compare the k-th simulation and the k-th runtime run of a setting as a pair "
                             "(as `leashed compare --paired`; the order given on the command line)")


def run(args: argparse.Namespace) -> int:
    models = parse_models(args.models)
    from leashed.analysis._io import check_output_dir

    check_output_dir(args.out)  # exists-and-foreign, unwritable: refused before any work
    results = [RunResult.load(path) for path in args.results]
    from leashed.analysis.report import build_report  # matplotlib only once the inputs are good

    index = build_report(results, args.out, files=[str(p) for p in args.results], models=models,
                         title=args.title, paired=args.paired)
    print(index)
    return 0
