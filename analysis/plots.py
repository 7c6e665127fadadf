"""Figures of results files (matplotlib, Agg, PNG or SVG by the file's suffix).

Every function takes results (or numbers derived from them), a path ending in ``.png`` or ``.svg``, and
returns the path written. Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg
canvas, never through ``pyplot``, so they do not touch the caller's matplotlib backend and are safe to
draw from worker threads; files are written atomically (temporary file, then rename).

* :func:`plot_training` -- training loss and test accuracy against time, one line per run.
* :func:`plot_staleness` -- staleness histogram with fitted pmfs (papers.md §4).
* :func:`plot_throughput` -- committed updates per second and speedup against m (papers.md §6.1, T5).
* :func:`plot_attempts` -- distribution of CAS attempts per update (papers.md §2.1, T6).
* :func:`plot_live_vectors` -- live parameter vectors over time with the 2m+1 bound (papers.md T8).
* :func:`plot_vs_threads` -- any quantity against m, predicted (sim) against measured (runtime).
* :func:`plot_histogram_pairs` -- side-by-side staleness histograms of paired runs.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leashed import algorithms
from leashed._files import write_atomic
from leashed.analysis._io import check_plot_path

_DPI = 110
_STYLES = ("-", "--", "-.", ":")


# ==================================================================== helpers
def _as_list(results: Any) -> list[Any]:
    if hasattr(results, "spec"):
        return [results]
    return list(results)


def _new_figure(width: float = 7.5, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def short_cpu(name: Any) -> str:
    """A CPU model name without trademarks, frequency and filler: ``Intel(R) Xeon(R) Platinum 8375C CPU
    @ 2.90GHz`` -> ``Intel Xeon Platinum 8375C``."""
    text = re.sub(r"\((R|TM|tm|r)\)", "", str(name))
    text = re.sub(r"@.*$", "", text)
    text = re.sub(r"\b(CPU|Processor|processor|\d+-Core|with Radeon.*)\b", "", text)
    return " ".join(text.split()) or str(name)


def wrap_title(text: str, width_in: float, scale: float = 1.0) -> str:
    """``text`` wrapped to lines that fit a figure (or panel) ``width_in`` inches wide at the default
    title size (about 9 characters per inch at 12 pt; ``scale`` < 1 for smaller fonts)."""
    return "\n".join(textwrap.wrap(text, max(int(width_in * 9.0 / scale), 20))) or text


def _plain_log_ticks(fig: Figure) -> None:
    """Log-scale tick labels as plain text (``0.1``, ``8``): matplotlib's default labels are mathtext
    (``$\\mathdefault{10^{-1}}$``), shown raw when the CLI turns mathtext off (leashed/schema.py)."""
    from matplotlib import ticker

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            base = float(getattr(axis.get_transform(), "base", 10.0))
            axis.set_major_formatter(ticker.LogFormatter(base=base))
            axis.set_minor_formatter(ticker.LogFormatter(base=base, labelOnlyBase=False,
                                                         minor_thresholds=(1, 0.4)))


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` atomically; the suffix (.png or .svg) selects the format."""
    path = check_plot_path(path)
    _plain_log_ticks(fig)
    return write_atomic(path, lambda fh: fig.savefig(fh, format=path.suffix.lower()[1:], dpi=_DPI))


def run_labels(results: Sequence[Any]) -> list[str]:
    """Legend labels: the spec's label, made unique with the source, seed, then a counter."""
    labels = [r.spec.label() for r in results]
    for extra in (lambda r: r.source, lambda r: f"seed={r.spec.seed}"):
        dup = {lab for lab in labels if labels.count(lab) > 1}
        labels = [f"{lab} [{extra(r)}]" if lab in dup else lab
                  for lab, r in zip(labels, results, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if labels.count(lab) == 1 else f"{lab} #{seen[lab]}")
    return out


def spec_caption(results: Sequence[Any]) -> str:
    """What the runs share: model, data set, batch size, step, step policy; engines and machine."""
    if not results:
        return ""
    specs = [r.spec for r in results]
    parts = []
    for name, fmt in (("model", "{}"), ("dataset", "on {}"), ("batch_size", "batch {}"), ("lr", "lr {:g}"),
                      ("step_policy", "step {}")):
        values = {getattr(s, name) for s in specs}
        if len(values) == 1:
            value = values.pop()
            if name == "dataset" and value in ("none", "synthetic"):
                continue
            if name == "model" and specs[0].model in ("mlp",):
                value = "mlp " + "-".join(str(h) for h in specs[0].hidden)
            if name == "step_policy" and value == "normalised":
                value = "model-normalised (MindTheStep family)"
            parts.append(fmt.format(value))
    sources = sorted({r.source for r in results})
    parts.append("+".join(sources))
    cpus = {short_cpu(r.metadata.get("cpu_model")) for r in results if r.metadata.get("cpu_model")}
    if len(cpus) == 1:
        parts.append(cpus.pop())
    return ", ".join(parts)


def _time_label(results: Sequence[Any]) -> str:
    sources = {r.source for r in results}
    if sources == {"sim"}:
        return "time (simulated s)"
    if sources == {"runtime"}:
        return "wall time (s)"
    return "time (s; simulated s for sim runs)"


def _suffix(result: Any) -> str:
    diverged = result.totals.get("diverged_at")
    if diverged is not None and not isinstance(diverged, bool) and diverged >= 0:
        return " (diverged)"
    return ""


def _empty_note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


# ==================================================================== training curves
def plot_training(results: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Training loss and test accuracy against time, two panels, one line per run.

    ``results`` is one :class:`~leashed.results.RunResult` or several; samples whose loss (accuracy) is
    NaN are left out of that panel. The legend uses each run's spec label; the title names what the runs
    share (:func:`spec_caption`). Time is wall-clock seconds for runtime results, simulated seconds for
    simulator results.
    """
    runs = _as_list(results)
    fig = _new_figure(11.0, 4.5)
    ax_loss, ax_acc = fig.subplots(1, 2)
    labels = run_labels(runs)
    positive = True
    span = [math.inf, -math.inf]
    drawn = [0, 0]
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        s = run.samples
        style = dict(marker="o", markersize=3, linestyle=_STYLES[(i // 10) % len(_STYLES)],
                     color=f"C{i % 10}", label=label + _suffix(run))
        ok = np.isfinite(s.loss) & np.isfinite(s.time)
        if ok.any():
            ax_loss.plot(s.time[ok], s.loss[ok], **style)
            positive &= bool(np.all(s.loss[ok] > 0))
            span = [min(span[0], float(s.loss[ok].min())), max(span[1], float(s.loss[ok].max()))]
            drawn[0] += 1
        ok = np.isfinite(s.accuracy) & np.isfinite(s.time)
        if ok.any():
            ax_acc.plot(s.time[ok], 100.0 * s.accuracy[ok], **style)
            drawn[1] += 1
    if drawn[0] and positive and span[1] > 20 * span[0]:
        ax_loss.set_yscale("log")
    for ax, n, what in ((ax_loss, drawn[0], "training loss"), (ax_acc, drawn[1], "test accuracy")):
        ax.set_xlabel(_time_label(runs))
        ax.grid(True, alpha=0.3)
        if n:
            ax.legend(fontsize="small")
        else:
            _empty_note(ax, f"no {what} samples")
    ax_loss.set_ylabel("training loss (mean mini-batch loss)")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_loss.set_title("training loss")
    ax_acc.set_title("test accuracy")
    fig.suptitle(wrap_title(title or f"Training: {spec_caption(runs)}", 11.0))
    return save_figure(fig, path)


# ==================================================================== staleness
#: staleness panels show τ up to this quantile of the committed updates; the tail beyond is noted
STALENESS_QUANTILE = 0.995


def staleness_clip(hist: np.ndarray, quantile: float = STALENESS_QUANTILE) -> tuple[int, float, int]:
    """(k_hi, tail fraction, max τ) of a staleness histogram: k_hi is the ``quantile`` of τ (at least
    m-ish bins: never below 5 unless the support is smaller), the tail is the fraction of updates with
    τ > k_hi."""
    h = np.asarray(hist, dtype=np.float64)
    total = h.sum()
    if total <= 0 or len(h) == 0:
        return 0, 0.0, 0
    nz = np.nonzero(h)[0]
    tau_max = int(nz[-1])
    k_hi = int(np.searchsorted(np.cumsum(h) / total, quantile))
    k_hi = min(max(k_hi, min(5, tau_max)), tau_max)
    return k_hi, float(h[k_hi + 1:].sum() / total), tau_max


def plot_staleness(results: Any, path: str | os.PathLike[str], *, fits: Sequence[Sequence[Any]] | None = None,
                   labels: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Staleness histograms (relative frequency of τ) with fitted pmfs, one panel per run (papers.md §4).

    ``results``: RunResults, or 1-d histograms (counts indexed by τ). ``fits``: per run, a list of
    :class:`~leashed.analysis.staleness.StalenessFit` to overlay (default: none). Each panel's τ axis
    ends at the 99.5th percentile (:func:`staleness_clip`); the tail beyond is written in the panel.
    The measured bars are drawn solid and the fitted pmfs as thin lines with hollow markers on top.
    """
    items = _as_list(results) if not isinstance(results, np.ndarray) or results.ndim != 1 else [results]
    hists = [np.asarray(r.staleness_histogram if hasattr(r, "staleness_histogram") else r, dtype=np.float64)
             for r in items]
    if labels is None:
        labels = (run_labels(items) if all(hasattr(r, "spec") for r in items)
                  else [f"run {i + 1}" for i in range(len(items))])
    # one colour per model name in every panel (C0 is the bars' hue family; models start at C1)
    model_names = sorted({f.model for fl in (fits or []) for f in (fl or [])})
    n = max(len(items), 1)
    cols = min(n, 2)  # two panels a row: their legends stay readable in a 1,200 px page
    rows = math.ceil(n / cols)
    width = 5.4 * cols + 0.6
    fig = _new_figure(width, 3.6 * rows + 0.7)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for i, ax in enumerate(axes):
        if i >= len(items):
            ax.set_axis_off()
            continue
        h = hists[i]
        total = h.sum()
        ax.set_title(wrap_title(labels[i], 5.2, 0.85), fontsize="medium")
        ax.set_xlabel("staleness τ (updates)")
        ax.set_ylabel("fraction of committed updates")
        ax.grid(True, alpha=0.3)
        ax.set_axisbelow(True)
        if total <= 0:
            _empty_note(ax, "no committed updates")
            continue
        freq = h / total
        k_hi, tail, tau_max = staleness_clip(h)
        k = np.arange(k_hi + 1)
        ax.bar(k, freq[: k_hi + 1], width=0.85, color="#7fa7d1", edgecolor="#2f5d8a", linewidth=0.6,
               label=f"measured (N={int(total)})", zorder=2)
        for f in (fits[i] if fits is not None else []) or []:
            pmf = f.pmf_array(k_hi)
            ax.plot(k, pmf, marker="o", markersize=3.5, markerfacecolor="none", linewidth=1.1,
                    color=f"C{(model_names.index(f.model) + 1) % 10}",
                    label=f"{f.model} (NLL/N {f.nll_per_sample:.3f})", zorder=3)
        ax.set_xlim(-0.6, k_hi + 0.6)
        if tail > 0:  # the tail beyond the 99.5th percentile, in words under the axis
            ax.set_xlabel(f"staleness τ (updates)\nnot shown: τ > {k_hi}, {100 * tail:.2g} % of updates "
                          f"(max τ = {tau_max})")
        ax.legend(fontsize="small", framealpha=0.85)
    caption = spec_caption(items) if items and all(hasattr(r, "spec") for r in items) else ""
    fig.suptitle(wrap_title(title or f"Staleness of committed updates{': ' + caption if caption else ''}",
                            width))
    return save_figure(fig, path)


# ==================================================================== throughput
def _throughput(result: Any) -> float | None:
    value = result.summary().get("updates_per_s")
    return float(value) if value else None


def plot_throughput(results: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Committed updates per second and speedup against the thread count m (papers.md §6.1, T5).

    One line per (algorithm, source). Speedup is over the speedup-baseline run (``seq``) of the same
    source where one is given (linear speedup: m), otherwise over the same algorithm's smallest m (linear:
    m / m0); a series with neither a baseline nor two thread counts has no speedup and is left out of that
    panel (said in the panel). Each baseline is named once, in the legend of its series.
    """
    runs = _as_list(results)
    fig = _new_figure(11.0, 4.6)
    ax_x, ax_s = fig.subplots(1, 2)
    groups: dict[tuple[str, str], list[tuple[int, float]]] = {}
    seq: dict[str, tuple[str, int, float]] = {}  # source -> (baseline algorithm, its m, throughput)
    for r in runs:
        x = _throughput(r)
        if x is None:
            continue
        if algorithms.algorithm(r.spec.algorithm).speedup_baseline:
            seq[r.source] = (r.spec.algorithm, int(r.spec.threads), x)
        groups.setdefault((r.spec.algorithm, r.source), []).append((r.spec.threads, x))
    max_m = 1
    linear: set[int] = set()  # the m0 of each drawn linear-speedup reference m / m0
    left_out = []
    for i, ((alg, source), pts) in enumerate(sorted(groups.items())):
        pts.sort()
        m = np.array([p[0] for p in pts])
        x = np.array([p[1] for p in pts])
        max_m = max(max_m, int(m.max()))
        style = dict(marker="o", color=f"C{i % 10}", linestyle="--" if source == "sim" else "-")
        ax_x.plot(m, x, label=f"{alg} [{source}]", **style)
        if algorithms.algorithm(alg).speedup_baseline:
            continue  # the baseline's own speedup is 1 by definition
        if source in seq:
            base_alg, base_m, base = seq[source]
            label = f"{alg} [{source}] over {base_alg} m={base_m}"
            linear.add(base_m)
        elif len(m) >= 2:
            base, base_m = float(x[0]), int(m[0])
            label = f"{alg} [{source}] over its m={base_m}"
            linear.add(base_m)
        else:
            left_out.append(f"{alg} [{source}]")
            continue
        ax_s.plot(m, x / base, label=label, **style)
    if groups:
        for m0 in sorted(linear):
            ax_s.plot([m0, max_m], [1, max_m / m0], color="0.5", linestyle=":",
                      label="linear speedup" + (f" (from m={m0})" if len(linear) > 1 else ""))
        ax_x.legend(fontsize="small")
        if linear:
            ax_s.legend(fontsize="small")
        if left_out:  # said in the panel: upper left beside curves, centred in an empty panel
            note = wrap_title("no speedup (one thread count, no seq run): " + ", ".join(left_out), 5.0, 0.85)
            where = (0.02, 0.98, "left", "top") if linear else (0.5, 0.5, "center", "center")
            ax_s.text(where[0], where[1], note, transform=ax_s.transAxes, ha=where[2], va=where[3],
                      fontsize="small", color="0.35")
    else:
        _empty_note(ax_x, "no throughput data")
        _empty_note(ax_s, "no throughput data")
    ax_x.set_xlabel("threads m")
    ax_x.set_ylabel("throughput (committed updates / s)")
    ax_s.set_xlabel("threads m")
    ax_s.set_ylabel("speedup")
    for ax in (ax_x, ax_s):
        ax.grid(True, alpha=0.3)
    ax_x.set_title("throughput")
    ax_s.set_title("speedup over the baseline named in the legend", fontsize="medium")
    fig.suptitle(wrap_title(title or f"Throughput and speedup: {spec_caption(runs)}", 11.0))
    return save_figure(fig, path)


# ==================================================================== CAS attempts
def plot_attempts(results: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Distribution of CAS attempts per computed gradient (1 = first try), dropped ones included."""
    runs = _as_list(results)
    labels = run_labels(runs)
    fig = _new_figure(7.5, 4.5)
    ax = fig.subplots()
    width = 0.8 / max(len(runs), 1)
    drawn = 0
    for i, (r, label) in enumerate(zip(runs, labels, strict=True)):
        att = r.updates.attempts
        if len(att) == 0:
            continue
        counts = np.bincount(att)[1:]
        frac = counts / len(att)
        k = np.arange(1, len(counts) + 1)
        dropped = float(r.updates.dropped.mean())
        ax.bar(k + (i - (len(runs) - 1) / 2) * width, frac, width=width, color=f"C{i % 10}",
               label=f"{label} (dropped {100 * dropped:.2g}%)")
        drawn += 1
    ax.set_xlabel("CAS attempts per gradient")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("fraction of gradients")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize="small")
    else:
        _empty_note(ax, "no updates recorded")
    ax.set_title(wrap_title(title or f"CAS attempts: {spec_caption(runs)}", 7.5, 0.85), fontsize="medium")
    return save_figure(fig, path)


# ==================================================================== live vectors
def plot_live_vectors(results: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Live parameter vectors at each sample instant, with the 2m+1 bound for leashed runs (papers.md T8)."""
    runs = _as_list(results)
    labels = run_labels(runs)
    fig = _new_figure(9.5, 4.5)
    ax = fig.subplots()
    drawn = 0
    bounds: set[int] = set()
    for i, (r, label) in enumerate(zip(runs, labels, strict=True)):
        s = r.samples
        if len(s) == 0:
            continue
        ax.step(s.time, s.live_vectors, where="post", color=f"C{i % 10}", label=label)
        bound = 2 * r.spec.threads + 1
        if algorithms.algorithm(r.spec.algorithm).uses_pool and bound not in bounds:  # papers.md T8
            bounds.add(bound)  # one dotted line per distinct bound, however many runs share it
            ax.axhline(bound, color=f"C{i % 10}", linestyle=":", linewidth=1, label=f"2m+1 = {bound}")
        drawn += 1
    ax.set_xlabel(_time_label(runs))
    ax.set_ylabel("live parameter vectors")
    ax.grid(True, alpha=0.3)
    if drawn:  # beside the axes: the steps stay visible
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        _empty_note(ax, "no samples")
    ax.set_title(wrap_title(title or f"Live vectors: {spec_caption(runs)}", 7.0, 0.85), fontsize="medium")
    return save_figure(fig, path)


# ==================================================================== predicted vs measured
def plot_vs_threads(series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                    path: str | os.PathLike[str], *, ylabel: str, title: str,
                    log_y: bool = False, reference: tuple[str, Any] | None = None) -> Path:
    """One quantity against m; ``series`` maps a label to (m values, quantity values).

    Labels containing ``predicted`` or ``[sim]`` are drawn dashed, the others solid. ``reference`` is an
    optional (label, function of m) drawn dotted in grey, e.g. ("m − 1 (claim T1)", lambda m: m - 1).
    """
    fig = _new_figure(7.0, 4.3)
    ax = fig.subplots()
    drawn = 0
    for i, (label, (m, y)) in enumerate(series.items()):
        m_arr = np.asarray(m, dtype=np.float64)
        y_arr = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
        ok = np.isfinite(m_arr) & np.isfinite(y_arr)
        if not ok.any():
            continue
        order = np.argsort(m_arr[ok])
        dashed = "predicted" in label or "[sim]" in label
        ax.plot(m_arr[ok][order], y_arr[ok][order], marker="s" if dashed else "o",
                linestyle="--" if dashed else "-", color=f"C{(i // 2) % 10}", label=label)
        drawn += 1
    if reference is not None and drawn:
        all_m = np.concatenate([np.asarray(m, dtype=np.float64) for m, _ in series.values()])
        grid = np.linspace(all_m.min(), all_m.max(), 50)
        ax.plot(grid, reference[1](grid), color="0.5", linestyle=":", label=reference[0])
        ax.legend(fontsize="small")
    ax.set_xlabel("threads m")
    ax.set_ylabel(ylabel)
    if log_y and drawn:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize="small")
    else:
        _empty_note(ax, "no data")
    ax.set_title(title, fontsize="medium")
    return save_figure(fig, path)


def plot_histogram_pairs(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike[str],
                         *, names: tuple[str, str] = ("predicted (sim)", "measured (runtime)"),
                         title: str = "Staleness: predicted against measured") -> Path:
    """Side-by-side staleness histograms, one panel per (label, predicted counts, measured counts)."""
    n = max(len(pairs), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _new_figure(4.2 * cols + 0.8, 3.4 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= len(pairs):
            ax.set_axis_off()
            continue
        label, a, b = pairs[i]
        size = max(len(a), len(b), 1)
        fa = np.zeros(size)
        fb = np.zeros(size)
        if np.sum(a) > 0:
            fa[: len(a)] = np.asarray(a) / np.sum(a)
        if np.sum(b) > 0:
            fb[: len(b)] = np.asarray(b) / np.sum(b)
        cum = np.cumsum((fa + fb) / 2)
        k_hi = int(min(size - 1, np.searchsorted(cum, 0.999) + 2))
        k = np.arange(k_hi + 1)
        ax.bar(k - 0.2, fa[: k_hi + 1], width=0.4, color="C0", label=f"{names[0]} N={int(np.sum(a))}")
        ax.bar(k + 0.2, fb[: k_hi + 1], width=0.4, color="C1", label=f"{names[1]} N={int(np.sum(b))}")
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("staleness τ (updates)")
        ax.set_ylabel("fraction of committed updates")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title)
    return save_figure(fig, path)
