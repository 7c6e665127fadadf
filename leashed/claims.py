"""``leashed claims``: the papers' claims measured, each with a verdict (issue 16; docs/claims.md).

Runs the experiments of ``benchmarks/claims.py`` (shipped as ``leashed.benchmarks``, found as ``leashed
bench`` finds its scripts: :func:`leashed.bench.benchmarks_dir`) and writes, into ``--out DIR``, the page
``index.html`` (the report's style, figures embedded; :mod:`leashed.analysis.claims_page`), ``claims.md``
(the table) and ``claims.json`` (every row, interval, verdict and the run's records). Progress: one line
per experiment on stderr; the page's path is printed last. ``--quick`` (3 seeds, one simulated m per
claim) took 196 s on a 2-core machine at load average 6; the full run 927 s (docs/claims.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Measure the papers' claims (time to target, stability, memory, contention "
                          "regulation, adaptive steps, sparsification; docs/papers.md) with several seeds, "
                          "a 90 % interval per statistic and a verdict reproduced / not reproduced / "
                          "inconclusive from a rule fixed before the run; write a page. Rows at m above "
                          "this machine's cores are simulated with real gradients, calibrated from this "
                          "machine's runtime runs. --quick: under 10 minutes on 2 cores. See leashed docs "
                          "claims.")
    parser.add_argument("--quick", action="store_true",
                        help="3 seeds, smaller grids, one or two simulated m per claim (under 10 minutes on "
                             "2 cores)")
    parser.add_argument("--out", type=Path, default=Path("leashed-claims"), metavar="DIR",
                        help="folder for index.html, claims.md, claims.json and figures/ "
                             "(default ./leashed-claims)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: seconds, every row


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from leashed._files import check_writable
    from leashed.analysis.claims_page import write_page
    from leashed.bench import benchmarks_dir, load_script

    out = Path(args.out)
    check_writable(out, "--out", directory=True)  # before anything runs (docs/errors.md)
    script = load_script(benchmarks_dir(), "claims")
    config = script.tiny_config() if args.tiny else script.quick_config() if args.quick else \
        script.ClaimsConfig()
    out.mkdir(parents=True, exist_ok=True)
    _say(f"claims: {config.name} run, {config.seeds} seeds, output in {out}")
    result = script.run_claims(config, out, progress=_say)
    path = write_page(result, script, out)
    overall = result.overall()
    for c in script.CLAIMS:
        _say(f"claims: {c.number}. {c.title}: {overall[c.key]}")
    _say(f"claims: {result.facts['seconds']:.0f} s in all")
    print(path.resolve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The script's entry point (``python benchmarks/claims.py``): the CLI's ``claims`` command."""
    from leashed.cli import main as cli_main

    return cli_main(["claims", *(sys.argv[1:] if argv is None else argv)])
