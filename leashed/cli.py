"""The ``leashed`` command line: argparse subcommands with a dispatch table (pyperf style).

Each subcommand lives in the package that owns it and exposes ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``leashed --help`` is fast.
Every :class:`~leashed.errors.LeashedError` becomes one line ``leashed: error: ...`` on stderr and
exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from leashed.errors import LeashedError

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("leashed.demo", "run the built-in default experiment and write a report"),
    "train": ("leashed.runtime.command", "train a model for real on worker threads"),
    "simulate": ("leashed.sim.command", "simulate worker threads with SimPy"),
    "fit": ("leashed.analysis.fit_command", "fit staleness models to results files"),
    "compare": ("leashed.analysis.compare_command", "compare predicted (sim) with measured (runtime) runs"),
    "report": ("leashed.analysis.report_command", "write an HTML report of results files"),
    "inspect": ("leashed.inspect", "summarise a results file"),
    "bench": ("leashed.bench", "run the short benchmarks"),
}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors follow the one-line ``leashed: error:`` convention."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"leashed: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="leashed", description="Asynchronous parallel SGD on shared memory: "
                     "simulate, run and analyse Leashed-SGD and its baselines.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(only=command if command in COMMANDS else "")
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except LeashedError as exc:
        sys.stderr.write(f"leashed: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("leashed: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `leashed fit ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python docs' recipe: no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
