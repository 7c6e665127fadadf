"""The ``leashed`` command line: argparse subcommands with a dispatch table (pyperf style).

Each subcommand lives in the package that owns it and exposes ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``leashed --help`` is fast.
Every :class:`~leashed.errors.LeashedError` becomes one line ``leashed: error: ...`` on stderr and
exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
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
    "calibrate": ("leashed.machine", "measure this machine (copies, time slice, load) for the simulator"),
    "bench": ("leashed.bench", "run the short benchmarks"),
    "claims": ("leashed.claims", "measure the papers' claims, each with a verdict, and write a page"),
    "docs": ("leashed.docs", "print the documentation the help texts cite (docs/*.md)"),
}


_PYTHON_ARGUMENT = re.compile(r"`([a-z][a-z_]*)=([^`]*)`")


def cli_words(message: str) -> str:
    """Translate a library error's Python words into the command line's: `` `updates=N` `` (an
    :class:`~leashed.spec.ExperimentSpec` field, as a Python caller passes it) becomes `` `--updates N` ``;
    `` `error_memory=True` `` becomes `` `--error-memory` ``. Other text is left as it is."""
    from leashed.spec import ExperimentSpec

    fields = {f.name for f in dataclasses.fields(ExperimentSpec)}

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2).strip("'\"")
        if name == "step_table":  # filled from a fit file by train's --staleness-model
            return "`--staleness-model FIT.json` (simulate: a --calibrate-from run trained with it)"
        if name not in fields:
            return match.group(0)
        option = "--" + name.replace("_", "-")
        return f"`{option}`" if value == "True" else f"`{option} {value}`"

    return _PYTHON_ARGUMENT.sub(flag, message)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors follow the one-line ``leashed: error:`` convention."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"leashed: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="leashed", description="Asynchronous parallel SGD on shared memory: "
                     "simulate, run and analyse Leashed-SGD and its baselines.")
    from leashed import __version__

    parser.add_argument("--version", action="version", version=f"leashed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(command)
    return parser


#: commands that draw figures: their text is rendered without mathtext (leashed/schema.py)
_PLOTTING = ("train", "fit", "report", "compare", "demo", "bench")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; SIGINT/SIGTERM follow leashed/interrupts.py (exit 130/143, docs/errors.md)."""
    from leashed import interrupts

    try:
        return _handled(argv)
    finally:
        if not interrupts.active():  # the command is over: a later in-process call starts afresh
            interrupts.reset()


def _handled(argv: Sequence[str] | None) -> int:
    from leashed import interrupts

    try:
        with interrupts.handling():
            try:
                status = _main(argv)
            except (KeyboardInterrupt, interrupts.Aborted) as exc:
                what = "aborted" if isinstance(exc, interrupts.Aborted) else "interrupted"
                sys.stderr.write(f"leashed: {what}\n")
                return interrupts.exit_status()
            return interrupts.exit_status() if interrupts.requested() else status
    except (KeyboardInterrupt, interrupts.Aborted):  # a signal while reporting the first one
        return interrupts.exit_status()


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(only=command if command in COMMANDS else "")
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        from leashed.limits import check_args

        check_args(args)  # NaN, inf, out-of-range numbers: before any work
        if args.command in _PLOTTING and (args.command not in ("train", "fit") or getattr(args, "plot", "")):
            from leashed.schema import plain_text_plots

            plain_text_plots()
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except LeashedError as exc:
        sys.stderr.write(f"leashed: error: {cli_words(str(exc))}\n")
        return 2
    except BrokenPipeError:  # e.g. `leashed fit ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python docs' recipe: no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
