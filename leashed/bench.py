"""``leashed bench``: short versions of the three benchmarks, one report.

Runs, in this order, and prints each table as it finishes:

1. ``benchmarks/limit.py``: one worker's gradient FLOP/s against its BLAS-bound limit;
2. ``benchmarks/vs_pytorch_hogwild.py``: leashed and hogwild against PyTorch's Hogwild recipe (skipped,
   with a note, when PyTorch is not installed: it is never a dependency of leashed);
3. ``benchmarks/paper_comparison.py``: the Leashed-SGD paper's headline experiment, scaled down.

Writes ``report.md`` and ``report.html`` (the same tables and plots), each table as CSV and JSON, the
plots as PNG and the runs' results files into ``--out DIR``, and prints the report's path last. The
default takes about 5 minutes on 2 cores; ``--quick`` (tiny sizes, for smoke tests) under a minute.

The benchmark scripts are the package ``leashed.benchmarks`` (the checkout's ``benchmarks/`` folder, mapped
by pyproject.toml's package-dir and installed with the wheel), or ``$LEASHED_BENCHMARKS_DIR``.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from leashed.errors import LeashedError

SECTIONS = ("limit", "vs-pytorch", "paper")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run short versions of the benchmarks (limit, vs PyTorch, the Leashed-SGD paper's "
                          "comparison) and write a report. A full run takes about 5 minutes on 2 cores; "
                          "--quick under a minute (40 s on a busy 2-core machine). The scripts and their "
                          "targets: leashed docs benchmarks.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a smoke test: under a minute); timings are not meaningful")
    parser.add_argument("--out", type=Path, default=Path("leashed-bench"), metavar="DIR",
                        help="folder for the report, tables, plots and runs (default ./leashed-bench)")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[],
                        help="benchmarks to leave out")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if it is installed")


def benchmarks_dir() -> Path:
    """The folder of the benchmark scripts: $LEASHED_BENCHMARKS_DIR, else the installed package
    ``leashed.benchmarks``, else the checkout's ``benchmarks/`` (an editable install made before the
    package existed)."""
    env = os.environ.get("LEASHED_BENCHMARKS_DIR")
    if env:
        candidates = [Path(env)]
    else:
        try:
            spec = importlib.util.find_spec("leashed.benchmarks")
        except ImportError:
            spec = None
        candidates = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
        candidates.append(Path(__file__).resolve().parent.parent / "benchmarks")
    for folder in candidates:
        if (folder / "_common.py").is_file():
            return folder
    raise LeashedError(f"leashed bench needs the benchmark scripts, not found in {candidates[0]}: reinstall "
                       f"leashed (they ship as leashed.benchmarks) or set LEASHED_BENCHMARKS_DIR")


def load_script(folder: Path, name: str) -> ModuleType:
    """Import ``folder/name.py`` (the scripts import their sibling ``_common``)."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module_name = f"leashed_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, folder / f"{name}.py")
    if spec is None or spec.loader is None:
        raise LeashedError(f"cannot load benchmark script {folder / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Report:
    """Sections of tables, plots and notes, written as Markdown and HTML."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[tuple[str, Any]] = []

    def heading(self, text: str) -> None:
        self.parts.append(("h2", text))

    def text(self, text: str) -> None:
        self.parts.append(("p", text))

    def table(self, table: Any) -> None:
        self.parts.append(("table", table))

    def image(self, path: Path, caption: str) -> None:
        self.parts.append(("img", (path, caption)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.parts:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "table":
                out += [value.to_markdown()]
            else:
                path, caption = value
                out += [f"![{caption}]({path.name})", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.parts:
            if kind == "h2":
                body.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                body.append(value.to_html())
            else:
                path, caption = value
                body.append(f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
                 "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
                 "th{background:#f0f0f0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
                f"{html.escape(self.title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")


def run(args: argparse.Namespace) -> int:
    folder = benchmarks_dir()
    common = load_script(folder, "_common")
    out = Path(args.out)
    from leashed._files import check_writable

    check_writable(out, "--out", directory=True)  # before any benchmark runs (docs/errors.md)
    out.mkdir(parents=True, exist_ok=True)
    quick = bool(args.quick)
    started = time.perf_counter()
    failures = 0
    report = Report("leashed benchmarks" + (" (quick smoke run: sizes too small for meaningful timings)"
                                            if quick else ""))
    report.text(common.load_note())
    if common.under_load():
        report.text("The machine was busy when this run started: timings are noisy; rerun on a quiet "
                    "machine.")

    mnist = None  # loaded once for limit and vs-pytorch (the paper runs load it in their subprocesses)
    if not {"limit", "vs-pytorch"} <= set(args.skip):
        from leashed.models.datasets import load_dataset

        mnist = load_dataset("mnist")

    if "limit" not in args.skip:
        limit = load_script(folder, "limit")
        cfg = limit.LimitConfig(batches=(64, 512), seconds=0.3 if quick else 2.0, blocks=3 if quick else 7)
        _say("bench: limit")
        table = limit.run_limit(cfg, progress=_say, data=mnist)
        print(table.to_text(), flush=True)
        table.write(out, "limit")
        report.heading("1. One worker vs its BLAS-bound limit (benchmarks/limit.py)")
        report.table(table)

    from leashed import interrupts

    if interrupts.requested():  # stop at the first interrupted step (docs/errors.md)
        return interrupts.exit_status()
    if "vs-pytorch" not in args.skip:
        vs = load_script(folder, "vs_pytorch_hogwild")
        report.heading("2. leashed vs PyTorch Hogwild (benchmarks/vs_pytorch_hogwild.py)")
        torch = None if args.no_torch else common.torch_or_none()
        cfg = vs.VsTorchConfig(batches=(64,) if quick else (32, 64, 512), workers=(1, 2), epochs=1,
                               updates=150 if quick else None, checkpoints=5 if quick else 10,
                               impls=("pytorch", *vs.OURS) if torch is not None else vs.OURS)
        if torch is None:
            note = ("PyTorch is not installed (pip install torch==2.13.0)" if not args.no_torch
                    else "PyTorch left out (--no-torch)") + ": only leashed's rows are shown"
            print(f"bench: {note}", flush=True)
            report.text(note)
        _say("bench: vs_pytorch")
        table, curves = vs.run_vs_torch(cfg, progress=_say, data=mnist)
        print(table.to_text(), flush=True)
        for line in vs.target_report(table):
            print(line, flush=True)
            report.text(line)
        table.write(out, "vs_pytorch")
        report.table(table)
        plot = vs.plot_curves(curves, out / "vs_pytorch.png", cfg.target_loss)
        if plot is not None:
            report.image(plot, "training loss vs wall time, per batch size and worker count")

    if interrupts.requested():
        return interrupts.exit_status()
    if "paper" not in args.skip:
        paper = load_script(folder, "paper_comparison")
        every = tuple(paper.ALGORITHMS)
        if quick:
            grids = [paper.PaperConfig(models=("mlp",), threads=(2,), lrs=(0.2,), updates=200, evaluations=5,
                                       algorithms=("lock", "hogwild", "leashed-inf", "leashed-0"))]
        else:  # the CNN's evaluations are slow (about 2 s a snapshot): fewer configurations
            grids = [paper.PaperConfig(models=("mlp",), algorithms=every, threads=(2, 4),
                                       lrs=(0.05, 0.5, 1.0), epochs=1, evaluations=10),
                     paper.PaperConfig(models=("cnn",), algorithms=every, threads=(4,), lrs=(0.2,),
                                       updates=600, evaluations=5)]
        _say("bench: paper_comparison")
        records = [r for cfg in grids for r in paper.run_grid(cfg, out, progress=_say)]
        failures += sum(1 for r in records if r.error and r.row.get("diverged") is None)
        table, summary = paper.make_tables(records, "Leashed-SGD paper comparison (batch 64)")
        print(table.to_text(), flush=True)
        print(summary.to_text(), flush=True)
        paths = paper.write_outputs(table, summary, records, out, 0.5)
        report.heading("3. The Leashed-SGD paper's experiment, scaled down (benchmarks/paper_comparison.py)")
        report.table(table)
        report.table(summary)
        for path in paths:
            if path.suffix == ".png":
                report.image(path, {"loss_vs_time": "training loss vs wall time per algorithm",
                                    "stability": "stability: fraction of runs that diverged"}.get(
                                        path.stem, path.stem))

    report.text(f"Total benchmark time {time.perf_counter() - started:.0f} s. {common.blas_note()}")
    common.write_text(out / "report.md", report.markdown())
    path = common.write_text(out / "report.html", report.html())
    if failures:
        print(f"bench: {failures} benchmark run(s) failed: see the FAILED notes in the report", flush=True)
    print(path.resolve())
    return 1 if failures else 0
