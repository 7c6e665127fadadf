"""The comparison as a text table and as figures (:mod:`.compare`; docs/analysis.md).

Figures: the staleness histograms of each pair side by side, and -- only when a setting was compared at
two or more thread counts -- one figure per quantity against m, predicted and measured both drawn with
their confidence intervals as error bars, offset left and right of m with distinct markers. A single
thread count gets no per-quantity figure (one point says nothing a table does not): the text table and
``comparison.json`` carry those numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from leashed.analysis import equivalence as eq

#: quantity -> (file stem, y label, log scale)
FIGURES: dict[str, tuple[str, str, bool]] = {
    "throughput": ("throughput", "throughput (committed updates / s; sim: per simulated s)", True),
    "cas_failure": ("cas_failure", "CAS failure fraction (failed / all attempts)", False),
    "staleness_mean": ("staleness_mean", "mean staleness E[τ] (updates)", False),
    "dispersion": ("dispersion", "dispersion D = Var τ / E τ", False),
    "staleness_tv": ("tv_distance", "staleness TV distance, predicted vs measured", False),
}

_MARK = {eq.AGREE: "ok", eq.DIFFER: "DIFFER", eq.INCONCLUSIVE: "?", eq.IDENTITY: "id", eq.NOT_JUDGED: "*"}


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def _cell(q: Any, both: bool, digits: int = 2) -> str:
    """``pred/meas mark`` (both) or ``value [low, high] mark`` (the difference, ``digits`` significant
    digits: 3 for a ratio near 1, where 2 print 0.986 and 1.03 as 0.99 and 1)."""
    if q is None:
        return "n/a"
    mark = _MARK.get(q.verdict, q.verdict)
    if both:
        return f"{_f(q.predicted.value)}/{_f(q.measured.value)} {mark}"
    d = q.difference
    interval = f" [{_f(d.low, digits)},{_f(d.high, digits)}]" if d.low is not None else ""
    return f"{_f(d.value, digits)}{interval} {mark}"


def _trimmed_note(pair: Any) -> str:
    """`` (throughput: trimmed mean of pair ratios)`` where a paired comparison judges throughput on it."""
    q = pair.quantities.get("throughput")
    return " (throughput: 20 % trimmed mean of pair ratios)" if q is not None and q.statistic == "trimmed" \
        else ""


def text_table(comparison: Any) -> str:
    """One row per pair, a legend, the deciding quantities of pairs that do not agree, the verdict."""
    head = ("run", "N sim/run", "X ratio [CI]", "CAS fail sim/run", "Δ CAS [CI]", "mean τ sim/run",
            "D sim/run", "TV [CI]", "verdict")
    rows = [head]
    for p in comparison.pairs:
        q = p.quantities
        rows.append((p.label, f"{p.n[0]}/{p.n[1]}", _cell(q["throughput"], False, 3),
                     _cell(q.get("cas_failure"), True), _cell(q.get("cas_failure"), False),
                     _cell(q["staleness_mean"], True), _cell(q["dispersion"], True),
                     _cell(q["staleness_tv"], False), p.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    c = comparison.criteria
    lines.append(f"(predicted/measured; X ratio = predicted/measured throughput; [CI] = {c.confidence:.0%} "
                 f"interval; ok = agree, DIFFER, ? = inconclusive, id = identity (E τ = m − 1, or τ ≡ 0 at "
                 f"m = 1), * = simulator not calibrated: throughput not judged)")
    lines.append(c.describe())
    paired = [p for p in comparison.pairs if p.paired]
    if paired:
        lines.append("paired (intervals of the differences over prediction/measurement pairs): "
                     + ", ".join(f"{p.label} {p.paired} pairs{_trimmed_note(p)}" for p in paired))
    for p in comparison.pairs:
        if p.verdict != eq.AGREE:
            lines.append(f"{p.label}: {p.detail()}")
    for u in comparison.unpaired:
        lines.append(f"unpaired: {u}")
    lines.append(f"verdict: {comparison.verdict}")
    return "\n".join(lines)


def _series_name(p: Any) -> str:
    from leashed.algorithms import algorithm

    name = algorithm(p.algorithm).label(p.persistence)
    extras = [k for k in (p.key[3], p.key[4]) if k not in ("none", "constant")]
    return " ".join([name, *extras])


def _plot_quantity(comparison: Any, name: str, path: Path) -> Path | None:
    """Predicted and measured of one quantity against m, with interval error bars; None if < 2 m."""
    from leashed.analysis import plots

    stem, ylabel, log_y = FIGURES[name]
    groups: dict[str, list[Any]] = {}
    for p in comparison.pairs:
        if name in p.quantities:
            groups.setdefault(_series_name(p), []).append(p)
    if not any(len({p.threads for p in ps}) >= 2 for ps in groups.values()):
        return None
    fig = plots._new_figure(7.0, 4.3)
    ax = fig.subplots()
    sides = [("difference", "o", "-")] if name == "staleness_tv" else [("predicted", "s", "--"),
                                                                        ("measured", "o", "-")]
    for i, (series, ps) in enumerate(groups.items()):
        ps = sorted(ps, key=lambda p: p.threads)
        for j, (side, marker, style) in enumerate(sides):
            m = np.array([p.threads for p in ps], dtype=np.float64)
            est = [getattr(p.quantities[name], side) for p in ps]
            y = np.array([np.nan if e.value is None else e.value for e in est])
            lo = np.array([np.nan if e.low is None else e.value - e.low for e in est])
            hi = np.array([np.nan if e.high is None else e.high - e.value for e in est])
            offset = 1 + 0.03 * (j - (len(sides) - 1) / 2)  # multiplicative: m is drawn on a log axis
            source = "sim" if j == 0 else "runtime"
            label = series if name == "staleness_tv" else f"{series} {side} [{source}]"
            yerr = np.clip(np.vstack([np.nan_to_num(lo), np.nan_to_num(hi)]), 0, None)
            ax.errorbar(m * offset, y, yerr=yerr, marker=marker,
                        linestyle=style, color=f"C{i % 10}", capsize=3, label=label,
                        markerfacecolor="none" if j == 0 and len(sides) == 2 else None)
    if name == "staleness_tv":
        ax.axhline(comparison.criteria.tv_tol, color="0.5", linestyle=":", label="tolerance (TV band)")
    ax.set_xscale("log", base=2)
    ms = sorted({p.threads for ps in groups.values() for p in ps})
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.minorticks_off()
    ax.set_xlabel("threads m")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    what = ylabel.split(" (")[0]
    if name != "staleness_tv":
        what += ": predicted against measured"
    ax.set_title(f"{what}, {comparison.criteria.confidence:.0%} intervals", fontsize="medium")
    return plots.save_figure(fig, path.with_name(f"{stem}{path.suffix}"))


def write_figures(comparison: Any, out: Path, fmt: str = "png") -> list[Path]:
    """``staleness_pairs`` and, where several m were compared, one figure per quantity (module docstring)."""
    from leashed.analysis import plots

    paths = [plots.plot_histogram_pairs([(p.label, np.asarray(p.hist_predicted), np.asarray(p.hist_measured))
                                         for p in comparison.pairs], out / f"staleness_pairs.{fmt}")]
    for name in FIGURES:
        path = _plot_quantity(comparison, name, out / f"{name}.{fmt}")
        if path is not None:
            paths.append(path)
    return paths
