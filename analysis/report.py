"""One self-contained HTML page summarising a set of results files (``leashed report``; docs/analysis.md).

:func:`build_report` writes ``index.html`` -- one file that can be mailed: its figures are embedded as
``data:`` URIs (their PNG files are also written to ``figures/`` beside it). Designed to be read at a
glance in a 1,200 px window: a first table with one row per run and the columns a reader wants first
(:data:`GLANCE_FIELDS`: algorithm, m, updates/s, final loss, test accuracy, mean τ, CAS failures, live
vectors max), the rest in a details table, the spec fields that differ between runs in a third (the
common ones in one sentence); every table's cells wrap, so none needs a sideways scroll. Then training
curves, staleness histograms with the fitted models (papers.md §4) clipped at the 99.5th percentile,
their fit table with the χ² verdict in words ("all models rejected at α = 0.01"), throughput and
speedup against m, CAS attempts, live vectors, the comparisons the caller gives (the demo's held-out
paired rounds) and -- when both simulator and runtime results are given and some pair up -- the
predicted against measured comparison of the report's own files (:mod:`leashed.analysis.compare`, paired
with ``paired``: its table from the pairs, its figures as
:func:`~leashed.analysis.compare.write_comparison` writes them).
The page uses no scripts and no external resources. The folder is built in a temporary sibling and
renamed into place (an existing folder is replaced only if leashed wrote it).
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
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
from leashed.analysis.equivalence import DIFFER
from leashed.analysis.staleness import DEFAULT_MODELS, StalenessFit, fit_result, parse_models
from leashed.analysis.steps import describe_policy
from leashed.errors import LeashedError

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222;
       line-height: 1.35; }
h1 { font-size: 1.5em; margin-bottom: .3em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em;
       margin-top: 1.8em; } h3 { font-size: 1em; margin: 1.2em 0 .3em; }
.tbl { max-width: 100%; }
table { border-collapse: collapse; font-size: .85em; margin: .4em 0 1em; max-width: 100%; }
table.wide { width: 100%; }
th, td { border: 1px solid #ddd; padding: .25em .45em; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
td.long { overflow-wrap: anywhere; } td.num { white-space: nowrap; }
th { background: #f3f3f3; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.glance { font-size: .95em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } .ok { color: #176117; } .bad { color: #a11; }
.note { color: #555; font-size: .9em; } .warn { color: #8a4b00; }
"""

#: the first table: what a reader wants first, one row per run
GLANCE_FIELDS = (("algorithm", "algorithm"), ("threads", "m"), ("updates_per_s", "updates/s"),
                 ("final_train_loss", "final loss"), ("final_test_accuracy", "test accuracy"),
                 ("staleness_mean", "mean τ"), ("cas_failures", "CAS failures"),
                 ("live_vectors_max", "live vectors max"))
SPEC_FIELDS = ("algorithm", "threads", "persistence", "model", "dataset", "batch_size", "lr", "epochs",
               "updates", "step_policy", "sparsifier", "error_memory", "seed", "compute_time", "update_time")
#: the details table: the rest of RunResult.summary()
DETAIL_FIELDS = (("updates_applied", "updates applied"), ("updates_dropped", "dropped"),
                 ("wall_time_s", "time (s)"), ("staleness_var", "Var τ"),
                 ("cas_attempts_mean", "CAS attempts / gradient"), ("diverged_at", "diverged at"),
                 ("interrupted", "interrupted"), ("lost_updates", "lost updates"))
SUMMARY_FIELDS = tuple(k for k, _ in GLANCE_FIELDS + DETAIL_FIELDS)
#: significance level at which the report calls a staleness model rejected by its χ² goodness of fit
FIT_ALPHA = 0.01


def _shown_spec(result: Any) -> dict[str, Any]:
    """The spec as the report shows it: a calibrated simulation's compute and update times are the laws
    it used (``extra["timing"]``, e.g. ``timeline:RUN.npz``), not the spec's parseable stand-in
    (``empirical:<first calibration file>``)."""
    spec = result.spec.to_dict()
    timing = (result.extra or {}).get("timing") if result.source == "sim" else None
    if isinstance(timing, dict):
        for key, law in (("compute_time", "compute"), ("update_time", "update")):
            if isinstance(timing.get(law), str):
                spec[key] = short_law(timing[law])
    return spec


def short_law(law: str, shown: int = 3) -> str:
    """A law over files as a reader wants it: file names without their folders and, past ``shown`` files,
    the count with the first and the last (``timeline: 40 runs, calibrate-m1-r0.npz … calibrate-m2-r19.npz
    (local attempts)``)."""
    kind, sep, rest = law.partition(":")
    if not sep or kind not in ("timeline", "empirical"):
        return law
    suffix = ""
    match = re.search(r"\s*\(([^()]*)\)$", rest)
    if match:
        suffix, rest = f" ({match.group(1)})", rest[:match.start()]
    names = [os.path.basename(part.strip()) for part in rest.split(",") if part.strip()]
    if len(names) <= shown:
        return f"{kind}:{', '.join(names)}{suffix}"
    return f"{kind}: {len(names)} runs, {names[0]} … {names[-1]}{suffix}"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _cell(x: Any) -> str:
    if x is None:
        return "<td>–</td>"
    if isinstance(x, bool):
        return f"<td>{'yes' if x else 'no'}</td>"
    if isinstance(x, (int, np.integer)):
        return f'<td class="num">{int(x):,}</td>'.replace(",", "\u202f")
    if isinstance(x, float):
        if not math.isfinite(x):
            return f'<td class="num">{_e(x)}</td>'
        text = f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"
        return f'<td class="num">{text}</td>'
    if isinstance(x, _Html):
        return f"<td>{x.text}</td>"
    text = str(x)
    if any(len(word) > 18 for word in text.split()):  # paths, version lists: may break anywhere
        return f'<td class="long">{_e(text)}</td>'
    return f"<td>{_e(text)}</td>"


class _Html:
    """A cell already in HTML."""

    def __init__(self, text: str) -> None:
        self.text = text


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], css: str = "") -> str:
    """An HTML table whose cells wrap (``overflow-wrap: anywhere``): it never needs a sideways scroll."""
    cls = f' class="{css}"' if css else ""
    out = [f'<div class="tbl"><table{cls}><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _drop_empty(head: Sequence[str], rows: Sequence[Sequence[Any]], keep: int = 1) -> tuple[list, list]:
    """Columns after the first ``keep`` that hold no value in any row are left out."""
    cols = [i for i in range(len(head)) if i < keep or any(r[i] is not None for r in rows)]
    return [head[i] for i in cols], [[r[i] for i in cols] for r in rows]


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "< 1e-4" if p < 1e-4 else f"{p:.3g}"


class _Page:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.parts: list[str] = []
        self.figures: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def embed(self, path: Path, caption: str) -> None:
        """Embed the PNG at ``path`` as a data URI (the page is one file that can be mailed)."""
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.figures.append(str(path.relative_to(self.folder)))
        self.add(f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}" '
                 f'data-file="{_e(path.relative_to(self.folder))}"><figcaption>{_e(caption)}</figcaption>'
                 f"</figure>")

    def figure(self, name: str, caption: str, draw: Any) -> None:
        """Draw a figure into figures/NAME.png and embed it with a caption."""
        path = self.folder / "figures" / f"{name}.png"
        draw(path)
        self.embed(path, caption)


def _has_staleness(r: Any) -> bool:
    tau = r.staleness
    return len(tau) > 0 and bool(tau.max() > 0)


def _glance_value(r: Any, s: dict[str, Any], key: str) -> Any:
    if key == "final_test_accuracy":
        v = s.get(key)
        return None if v is None else _Html(f"{100 * v:.2f} %")
    if key == "live_vectors_max" and not algorithms.algorithm(r.spec.algorithm).uses_pool:
        return None
    if key == "cas_failures" and not algorithms.algorithm(r.spec.algorithm).has_cas:
        return None
    return s.get(key)


def _fit_sentences(fitted: Sequence[tuple[Any, str, Sequence[StalenessFit]]]) -> list[str]:
    """Per run, what the χ² goodness-of-fit tests say, in words."""
    out = []
    for _, lab, fl in fitted:
        ps = [f.chi2_p for f in fl if math.isfinite(f.chi2_p)]
        if not ps:
            out.append(f"{lab}: no χ² test (too few pooled bins); ranked by AIC only.")
        elif all(p < FIT_ALPHA for p in ps) and len(ps) == len(fl):
            out.append(f"{lab}: <b>all models rejected at α = {FIT_ALPHA:g}</b> (χ² p &lt; {FIT_ALPHA:g} for "
                       f"every model); the ranking by AIC says only which is least wrong.")
        else:
            kept = [f.model for f in fl if math.isfinite(f.chi2_p) and f.chi2_p >= FIT_ALPHA]
            rejected = [f.model for f in fl if math.isfinite(f.chi2_p) and f.chi2_p < FIT_ALPHA]
            untested = [f.model for f in fl if not math.isfinite(f.chi2_p)]
            parts = [f"not rejected at α = {FIT_ALPHA:g}: {', '.join(kept)}" if kept else
                     f"no tested model passes at α = {FIT_ALPHA:g}"]
            if rejected:
                parts.append(f"rejected: {', '.join(rejected)}")
            if untested:
                parts.append(f"no χ² test (too few pooled bins): {', '.join(untested)}")
            out.append(f"{lab}: {'; '.join(parts)}; best by AIC: {fl[0].model}.")
    return out


def _pair_cells(p: Any) -> list[Any]:
    """One comparison row: N, throughput ratio, CAS failure, mean τ, dispersion, TV, verdict."""
    q = getattr(p, "quantities", {}) or {}

    def both(name: str) -> Any:
        x = q.get(name)
        if x is None:
            return None
        a, b = getattr(x.predicted, "value", None), getattr(x.measured, "value", None)
        return _Html(f"{_f(a)} / {_f(b)} <i>{_e(x.verdict)}</i>")

    def diff(name: str) -> Any:
        x = q.get(name)
        if x is None:
            return None
        d = x.difference
        ci = f" [{_f(d.low)}, {_f(d.high)}]" if getattr(d, "low", None) is not None else ""
        trimmed = f" (trimmed; pooled {_f(x.pooled.value)})" if x.pooled is not None else ""
        return _Html(f"{_f(d.value)}{ci}{_e(trimmed)} <i>{_e(x.verdict)}</i>")

    verdict = str(p.verdict)
    css = "ok" if verdict.startswith("agree") else "bad" if verdict.startswith("differ") else "warn"
    return [p.label, f"{p.n[0]} / {p.n[1]}", diff("throughput"), both("cas_failure"), both("staleness_mean"),
            both("dispersion"), diff("staleness_tv"), _Html(f'<b class="{css}">{_e(verdict)}</b>')]


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def build_report(results: Sequence[Any], out_dir: str | os.PathLike[str], *,
                 files: Sequence[str | None] | None = None, models: Sequence[str] | str | None = None,
                 title: str | None = None, criteria: compare_mod.Criteria | None = None,
                 paired: bool = False,
                 comparisons: Sequence[tuple[str, compare_mod.Comparison]] = ()) -> Path:
    """Write the report folder ``out_dir`` (module docstring) and return the path of its index.html.

    ``paired``: the report's own comparison pairs the k-th simulator and the k-th runtime result of a
    setting (``leashed compare --paired``). ``comparisons``: further comparisons, each with its heading,
    shown before the report's own (the demo's held-out paired rounds, whose files the report does not
    list one by one)."""
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
            comparison = compare_mod.compare_results(results, files, criteria=criteria, paired=paired)
        except LeashedError as exc:
            compare_note = str(exc)

    with atomic_directory(out_dir) as tmp:
        (tmp / "figures").mkdir()
        page = _Page(tmp)
        heading = title or f"leashed report: {len(results)} run{'s' * (len(results) != 1)}"
        page.add(f"<h1>{_e(heading)}</h1>")
        page.add(f'<p class="note">Written {_e(time.strftime("%Y-%m-%d %H:%M:%S %z"))} by leashed '
                 f"{_e(leashed_version())}. Common setting: {_e(plots.spec_caption(results))}. Figures are "
                 f"embedded; their PNG files are in figures/ beside this page.</p>")

        # ---- at a glance: one row per run, the columns a reader wants first
        summaries = [r.summary() for r in results]
        page.add("<h2>Summary</h2>")
        rows = [[lab, r.source, *[_glance_value(r, s, k) for k, _ in GLANCE_FIELDS]]
                for lab, r, s in zip(labels, results, summaries, strict=True)]
        page.add(_table(["run", "source", *[h for _, h in GLANCE_FIELDS]], rows, "glance"))
        if any(r.source == "sim" for r in results):
            page.add('<p class="note">Simulator (sim) times are simulated seconds; its throughput compares '
                     "with the hardware's only if the simulator was calibrated from a runtime result. "
                     "Final loss: training loss of the last snapshot; test accuracy on the full test "
                     "set.</p>")

        # ---- details: the rest of the summary, then the specs (only the fields that differ)
        page.add("<h3>Details</h3>")
        head, rows = _drop_empty(["run", "file", *[h for _, h in DETAIL_FIELDS]],
                                 [[lab, f, *[s.get(k) for k, _ in DETAIL_FIELDS]]
                                  for lab, f, s in zip(labels, files, summaries, strict=True)], keep=2)
        page.add(_table(head, rows, "wide"))
        specs = [_shown_spec(r) for r in results]
        varying = [k for k in SPEC_FIELDS if len({repr(sp.get(k)) for sp in specs}) > 1]
        common = [k for k in SPEC_FIELDS if k not in varying and specs[0].get(k) is not None]
        if varying:
            rows = [[lab, *[describe_policy(sp.get(k)) if k == "step_policy" else sp.get(k) for k in varying]]
                    for lab, sp in zip(labels, specs, strict=True)]
            page.add(_table(["run", *varying], rows, "wide"))
        if common:
            page.add('<p class="note">Same for every run: ' + _e("; ".join(
                f"{k} {describe_policy(specs[0][k]) if k == 'step_policy' else specs[0][k]}" for k in common))
                + ".</p>")

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
                     f"the boundary of the parameter space. Panels end at the {plots.STALENESS_QUANTILE:.1%} "
                     "quantile of τ; the tail beyond is written under each axis.</p>")
            page.figure("staleness", "Staleness histograms of committed updates (bars) with the fitted pmfs "
                        "(lines).",
                        lambda p: plots.plot_staleness([x[0] for x in fitted], p, fits=[x[2] for x in fitted],
                                                       labels=[x[1] for x in fitted]))
            page.add("<ul>" + "".join(f"<li>{line}</li>" for line in _fit_sentences(fitted)) + "</ul>")
            rows = []
            for r, lab, fl in fitted:
                tau = r.staleness
                for rank, f in enumerate(fl, 1):
                    rejected = math.isfinite(f.chi2_p) and f.chi2_p < FIT_ALPHA
                    rows.append([lab if rank == 1 else "", rank, f.model + ("*" if f.at_boundary else ""),
                                 f.describe(), f"{f.nll_per_sample:.4f}", f"{f.aic:.1f}",
                                 _Html(_p_text(f.chi2_p) + (' <span class="bad">rejected</span>' if rejected
                                                            else "")),
                                 f.chi2_dof if f.chi2_dof > 0 else None,
                                 float(tau.mean()) if rank == 1 else None,
                                 float(tau.var() / tau.mean()) if rank == 1 else None])
            page.add(_table(["run", "rank", "model", "parameters ± se", "NLL/sample", "AIC",
                             f"χ² p (α = {FIT_ALPHA:g})", "dof", "mean τ", "D = Var/mean"], rows, "wide"))
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

        # ---- comparisons: the caller's (e.g. the demo's paired rounds), then this report's own files
        for k, (heading, given) in enumerate(comparisons):
            _comparison_section(page, tmp, given, heading, f"compare{k + 1}_")
        if comparison is not None:
            heading = "Predicted (sim) against measured (runtime)"
            _comparison_section(page, tmp, comparison, heading + (" in this report's files" if comparisons
                                                                  else ""), "compare_")
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
            rows.append([lab, plots.short_cpu(md["cpu_model"]) if md.get("cpu_model") else None,
                         md.get("cpu_cores"), md.get("host"),
                         ", ".join(f"{k} {v}" for k, v in versions.items() if v),
                         ", ".join(f"{b.get('internal_api')} {b.get('version')}" for b in blas
                                   if isinstance(b, dict)) or None,
                         md.get("blas_threads_in_workers"), md.get("git_revision"), md.get("start_time")])
        head, rows = _drop_empty(["run", "CPU", "cores", "host", "versions", "BLAS", "BLAS threads",
                                  "git revision", "started"], rows)
        page.add(_table(head, rows, "wide"))

        body = "\n".join(page.parts)
        (tmp / "index.html").write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(heading)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n",
            encoding="utf-8")
    return Path(out_dir) / "index.html"


def _comparison_section(page: _Page, tmp: Path, comparison: compare_mod.Comparison, heading: str,
                        prefix: str) -> None:
    """One comparison (:mod:`leashed.analysis.compare`): verdict, one row per pair, criteria, unpaired
    files, and its figures as :func:`~leashed.analysis.compare.write_comparison` writes them, renamed
    ``figures/<prefix><name>``."""
    page.add(f"<h2>{_e(heading)}</h2>")
    css = "ok" if comparison.consistent else "bad" if comparison.overall == DIFFER else "warn"
    page.add(f'<p class="{css}"><b>Verdict: {_e(comparison.verdict)}</b></p>')
    page.add(_table(["run", "N sim / runtime", "throughput ratio [CI]", "CAS failure sim / runtime",
                     "mean τ sim / runtime", "D sim / runtime", "TV [CI]", "verdict"],
                    [_pair_cells(p) for p in comparison.pairs], "wide"))
    c = comparison.criteria
    trimmed = any(q.statistic == "trimmed" for p in comparison.pairs for q in p.quantities.values())
    paired = [f"{p.label}: {p.paired} pairs" for p in comparison.pairs if p.paired]
    page.add(f'<p class="note">Predicted / measured; [CI] = {c.confidence:.0%} '
             f"interval; each cell ends with its verdict."
             + (f" Paired (intervals of the differences over prediction/measurement pairs): "
                f"{_e('; '.join(paired))}." if paired else "")
             + (" A throughput cell that says “trimmed” is the 20 % trimmed mean of the pairs' ratios, "
                "with Yuen's interval; the pooled ratio is given beside it." if trimmed else "")
             + f" {_e(c.describe())}</p>")
    for u in comparison.unpaired:
        page.add(f'<p class="note">Unpaired: {_e(u)}</p>')
    compare_dir = tmp / "figures" / f"_{prefix}"
    compare_dir.mkdir()
    written = []
    for path in compare_mod.write_comparison(comparison, compare_dir):
        target = tmp / "figures" / f"{prefix}{path.name}"
        path.rename(target)
        written.append(target)
    compare_dir.rmdir()
    for target in written:
        if target.suffix.lower() == ".png":
            stem = target.stem.removeprefix(prefix)
            page.embed(target, _COMPARE_CAPTIONS.get(stem, stem.replace("_", " ") + " against m."))


_COMPARE_CAPTIONS = {"staleness_pairs": "Staleness histograms, predicted beside measured.",
                     "staleness_mean": "Mean staleness against m, predicted and measured.",
                     "dispersion": "Dispersion Var τ / E τ against m, predicted and measured.",
                     "throughput": "Throughput against m (sim: per simulated second), predicted and "
                                   "measured.",
                     "cas_failure": "CAS failure fraction against m, predicted and measured.",
                     "tv_distance": "Total-variation distance of the staleness against m."}
