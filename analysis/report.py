"""One self-contained HTML page summarising a set of results files (``leashed report``).

:func:`build_report` writes ``index.html`` with its figures as PNG files in ``figures/`` beside it: the
runs' specs, a summary table (:meth:`RunResult.summary`), training curves, staleness histograms with the
fitted models (papers.md §4) and their fit table, throughput and speedup against m, CAS attempts, live
vectors and -- when both simulator and runtime results are given and some pair up -- the predicted
against measured comparison (:mod:`leashed.analysis.compare`). The page uses no scripts and no external
resources. The folder is built in a temporary sibling and renamed into place (an existing folder is
replaced only if leashed wrote it).
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from leashed import algorithms
from leashed.analysis import compare as compare_mod
from leashed.analysis import plots
from leashed.analysis._io import atomic_directory, check_output_dir, leashed_version
from leashed.analysis.staleness import DEFAULT_MODELS, StalenessFit, fit_result, parse_models
from leashed.analysis.steps import describe_policy
from leashed.errors import LeashedError

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; } figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } .ok { color: #176117; } .bad { color: #a11; }
.note { color: #555; font-size: .9em; }
"""

SPEC_FIELDS = ("algorithm", "threads", "persistence", "model", "dataset", "batch_size", "lr", "epochs",
               "updates", "step_policy", "sparsifier", "error_memory", "seed", "compute_time", "update_time")
SUMMARY_FIELDS = ("updates_applied", "updates_dropped", "wall_time_s", "updates_per_s", "staleness_mean",
                  "staleness_var", "cas_attempts_mean", "cas_failures", "live_vectors_max",
                  "final_train_loss", "final_test_accuracy", "diverged_at", "interrupted", "lost_updates")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _cell(x: Any) -> str:
    if x is None:
        return "<td>–</td>"
    if isinstance(x, bool):
        return f"<td>{'yes' if x else 'no'}</td>"
    if isinstance(x, (int, np.integer)):
        return f'<td class="num">{int(x)}</td>'
    if isinstance(x, float):
        if not math.isfinite(x):
            return f'<td class="num">{_e(x)}</td>'
        text = f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"
        return f'<td class="num">{text}</td>'
    return f"<td>{_e(x)}</td>"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ['<div class="scroll"><table><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


class _Page:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.parts: list[str] = []
        self.figures: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, name: str, caption: str, draw: Any) -> None:
        """Draw a figure into figures/NAME.png and link it with a caption."""
        rel = f"figures/{name}.png"
        draw(self.folder / rel)
        self.figures.append(rel)
        self.add(f'<figure><img src="{_e(rel)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption>'
                 f"</figure>")


def _has_staleness(r: Any) -> bool:
    tau = r.staleness
    return len(tau) > 0 and bool(tau.max() > 0)


def build_report(results: Sequence[Any], out_dir: str | os.PathLike[str], *,
                 files: Sequence[str | None] | None = None, models: Sequence[str] | str | None = None,
                 title: str | None = None, criteria: compare_mod.Criteria | None = None) -> Path:
    """Write the report folder ``out_dir`` (module docstring) and return the path of its index.html."""
    results = list(results)
    if not results:
        raise LeashedError("a report needs at least one results file")
    files = list(files) if files is not None else [f"run {i + 1}" for i in range(len(results))]
    models = parse_models(models) if models is not None else DEFAULT_MODELS
    check_output_dir(out_dir)
    labels = plots.run_labels(results)
    # fits first (pure computation; failures here should not leave a half-written folder)
    fits: list[list[StalenessFit] | None] = []
    for r in tqdm(results, desc="fitting", disable=None, unit="run", leave=False):
        fits.append(fit_result(r, models) if _has_staleness(r) else None)
    comparison: compare_mod.Comparison | None = None
    compare_note = ""
    sources = {r.source for r in results}
    if sources == {"sim", "runtime"}:
        try:
            comparison = compare_mod.compare_results(results, files, criteria=criteria)
        except LeashedError as exc:
            compare_note = str(exc)

    with atomic_directory(out_dir) as tmp:
        (tmp / "figures").mkdir()
        page = _Page(tmp)
        heading = title or f"leashed report: {len(results)} run{'s' * (len(results) != 1)}"
        page.add(f"<h1>{_e(heading)}</h1>")
        page.add(f'<p class="note">Written {_e(time.strftime("%Y-%m-%d %H:%M:%S %z"))} by leashed '
                 f"{_e(leashed_version())}. Common setting: {_e(plots.spec_caption(results))}.</p>")

        # ---- runs and specs
        page.add("<h2>Runs</h2>")
        rows = []
        for f, r, lab in zip(files, results, labels, strict=True):
            spec = r.spec.to_dict()
            row = [lab, f, r.source]
            for k in SPEC_FIELDS:
                v = spec.get(k)
                row.append(describe_policy(v) if k == "step_policy" else v)
            rows.append(row)
        page.add(_table(["run", "file", "source", *SPEC_FIELDS], rows))
        if any(r.source == "sim" for r in results):
            page.add('<p class="note">Simulator (sim) times are simulated seconds; its throughput compares '
                     "with the hardware's only if the simulator was calibrated from a runtime result.</p>")

        # ---- summary
        page.add("<h2>Summary</h2>")
        summaries = [r.summary() for r in results]
        page.add(_table(["run", *SUMMARY_FIELDS], [[lab] + [s.get(k) for k in SUMMARY_FIELDS]
                                                   for lab, s in zip(labels, summaries, strict=True)]))

        # ---- training
        if any(np.isfinite(r.samples.loss).any() or np.isfinite(r.samples.accuracy).any() for r in results):
            page.add("<h2>Training</h2>")
            page.figure("training", "Training loss and test accuracy against time, one line per run.",
                        lambda p: plots.plot_training(results, p))

        # ---- staleness
        fitted = [(r, lab, f) for r, lab, f in zip(results, labels, fits, strict=True) if f]
        if fitted:
            page.add("<h2>Staleness</h2>")
            page.add('<p class="note">Staleness τ = version at commit − version read (papers.md §1); models '
                     "fitted by maximum likelihood and ranked by AIC = 2k + 2·NLL (papers.md §4). "
                     "χ² p: goodness of fit on bins pooled to expected counts ≥ 5. * marks an estimate on "
                     "the boundary of the parameter space.</p>")
            page.figure("staleness", "Staleness histograms of committed updates with the fitted pmfs.",
                        lambda p: plots.plot_staleness([x[0] for x in fitted], p, fits=[x[2] for x in fitted],
                                                       labels=[x[1] for x in fitted]))
            rows = []
            for r, lab, fl in fitted:
                tau = r.staleness
                for rank, f in enumerate(fl, 1):
                    rows.append([lab, rank, f.model + ("*" if f.at_boundary else ""), f.describe(),
                                 f"{f.nll_per_sample:.4f}", f"{f.aic:.1f}", f.chi2_p,
                                 f.chi2_dof if f.chi2_dof > 0 else None, float(tau.mean()),
                                 float(tau.var() / tau.mean())])
            page.add(_table(["run", "rank", "model", "parameters ± se", "NLL/sample", "AIC", "χ² p", "dof",
                             "mean τ", "D"], rows))
        skipped = [lab for lab, f in zip(labels, fits, strict=True) if not f]
        if skipped:
            page.add(f'<p class="note">No staleness to fit (τ ≡ 0 or no committed updates): '
                     f"{_e(', '.join(skipped))}.</p>")

        # ---- throughput
        with_x = [r for r in results if r.summary().get("updates_per_s")]
        if len({(r.spec.threads, r.spec.algorithm, r.source) for r in with_x}) >= 2:
            page.add("<h2>Throughput</h2>")
            page.figure("throughput", "Committed updates per second and speedup against the thread count m.",
                        lambda p: plots.plot_throughput(with_x, p))

        # ---- CAS attempts
        contended = [r for r in results if len(r.updates) and (
            r.updates.attempts.max() > 1 or algorithms.algorithm(r.spec.algorithm).has_cas)]
        if contended:
            page.add("<h2>CAS attempts</h2>")
            page.figure("attempts", "CAS attempts per computed gradient (1 = first try), dropped included.",
                        lambda p: plots.plot_attempts(contended, p))

        # ---- live vectors
        sampled = [r for r in results if len(r.samples)]
        if sampled:
            page.add("<h2>Live parameter vectors</h2>")
            page.figure("live_vectors", "Live parameter vectors at each sample instant; dotted: the 2m+1 "
                        "bound of Leashed-SGD (papers.md §2.1, T8).",
                        lambda p: plots.plot_live_vectors(sampled, p))

        # ---- comparison
        if comparison is not None:
            page.add("<h2>Predicted (sim) against measured (runtime)</h2>")
            css = "ok" if comparison.consistent else "bad"
            page.add(f'<p class="{css}"><b>Verdict: {_e(comparison.verdict)}</b></p>')
            rows = []
            for p in comparison.pairs:
                rows.append([p.label, p.n[0], p.n[1], p.mean[0], p.mean[1], p.dispersion[0], p.dispersion[1],
                             p.tv, p.test.p_value, p.throughput_ratio, p.calibrated, p.cas_failure[0],
                             p.cas_failure[1], p.verdict])
            page.add(_table(["run", "N sim", "N runtime", "mean τ sim", "mean τ runtime", "D sim",
                             "D runtime", "TV", "χ² homogeneity p", "throughput ratio", "calibrated",
                             "CAS fail sim", "CAS fail runtime", "verdict"], rows))
            c = comparison.criteria
            page.add(f'<p class="note">{_e(c.describe())} The χ² homogeneity p is information only.</p>')
            compare_dir = tmp / "figures" / "_compare"
            compare_dir.mkdir()
            written = set()
            for path in compare_mod.write_comparison(comparison, compare_dir):
                path.rename(tmp / "figures" / f"compare_{path.name}")
                written.add(path.stem)
            compare_dir.rmdir()
            for stem, caption in (("staleness_pairs", "Staleness histograms, predicted beside measured."),
                                  ("staleness_mean", "Mean staleness against m."),
                                  ("dispersion", "Dispersion Var τ / E τ against m."),
                                  ("throughput", "Throughput against m (sim: per simulated second)."),
                                  ("cas_failure", "CAS failure fraction against m."),
                                  ("tv_distance", "Total-variation distance of the staleness against m.")):
                if stem not in written:  # one thread count: no per-quantity figure (the table has it)
                    continue
                page.figures.append(f"figures/compare_{stem}.png")
                page.add(f'<figure><img src="figures/compare_{stem}.png" alt="{_e(caption)}">'
                         f"<figcaption>{_e(caption)}</figcaption></figure>")
        elif compare_note:
            page.add("<h2>Predicted (sim) against measured (runtime)</h2>")
            page.add(f'<p class="note">Not compared: {_e(compare_note)}</p>')

        # ---- machines
        page.add("<h2>Machines and versions</h2>")
        rows = []
        for lab, r in zip(labels, results, strict=True):
            md = r.metadata or {}
            versions = md.get("versions") or {}
            blas = md.get("blas") or []
            rows.append([lab, md.get("cpu_model"), md.get("cpu_cores"), md.get("host"),
                         ", ".join(f"{k} {v}" for k, v in versions.items() if v),
                         ", ".join(f"{b.get('internal_api')} {b.get('version')}" for b in blas
                                   if isinstance(b, dict)) or None,
                         md.get("blas_threads_in_workers"), md.get("git_revision"), md.get("start_time")])
        page.add(_table(["run", "CPU", "cores", "host", "versions", "BLAS", "BLAS threads", "git revision",
                         "started"], rows))

        body = "\n".join(page.parts)
        (tmp / "index.html").write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(heading)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n",
            encoding="utf-8")
    return Path(out_dir) / "index.html"
