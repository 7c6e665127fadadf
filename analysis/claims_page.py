"""The page of ``leashed claims`` (docs/claims.md): one table row per claim, then each claim's rows.

:func:`write_page` writes into the output folder ``index.html`` (the style and helpers of
:mod:`leashed.analysis.report`: one file, figures embedded as ``data:`` URIs, also written to
``figures/``), ``claims.md`` (the same tables in Markdown, figures as links) and ``claims.json`` (every
row with its interval, verdict and rule, the per-claim verdicts, the rules, the raw records and the run's
facts). Each claim's row gives the claim in the paper's words (docs/papers.md), what was measured, the
headline interval, the verdict, whether its rows are hardware or simulated, and a figure.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leashed._files import write_atomic
from leashed.analysis import plots
from leashed.analysis.report import _CSS, _e, _Html, _Page, _table

_CSS_VERDICT = (".v-reproduced { color: #176117; font-weight: 600; } "
                ".v-not { color: #a11; font-weight: 600; } "
                ".v-inconclusive { color: #8a4b00; font-weight: 600; }")


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        return f"{x:.3g}"
    return str(x)


def interval_text(row: dict[str, Any]) -> str:
    """``1.43 [1.21, 1.70] (n = 6)``: the estimate, its interval and the number of units."""
    ci = "" if row["low"] is None else f" [{_fmt(row['low'])}, {_fmt(row['high'])}]"
    return f"{_fmt(row['estimate'])}{ci} (n = {row['n']})"


def _verdict_html(v: str) -> _Html:
    css = {"reproduced": "v-reproduced", "not reproduced": "v-not"}.get(v, "v-inconclusive")
    return _Html(f'<span class="{css}">{html.escape(v)}</span>')


def _engines(rows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(sorted({r["engine"] for r in rows})) or "–"


# ------------------------------------------------------------------------------------------- figures
def _interval_figure(rows: Sequence[dict[str, Any]], path: Path, title: str, lines: Sequence[float],
                     log: bool) -> Path:
    """One horizontal interval per row (estimate, 90 % interval), threshold lines, verdict colours."""
    fig = plots._new_figure(7.5, max(2.2, 0.32 * len(rows) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    colours = {"reproduced": "#176117", "not reproduced": "#a11111", "inconclusive": "#b36b00"}
    finite = [v for r in rows for v in (r["estimate"], r["low"], r["high"])
              if v is not None and math.isfinite(v) and (v > 0 or not log)]
    lo_all, hi_all = (min(finite), max(finite)) if finite else (0.5, 2.0)
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        c = colours.get(r["verdict"], "#555")
        est = r["estimate"]
        if r["low"] is not None:
            low = r["low"] if math.isfinite(r["low"]) and (r["low"] > 0 or not log) else lo_all
            high = r["high"] if math.isfinite(r["high"]) else hi_all
            ax.plot([low, high], [y, y], color=c, lw=2)
        if est is not None and math.isfinite(est) and (est > 0 or not log):
            ax.plot([est], [y], "o", color=c)
    for v in lines:
        ax.axvline(v, color="#777", ls="--", lw=1)
    ax.set_yticks(range(len(rows)))
    short = {"hardware": "hw", "simulated": "sim"}
    ax.set_yticklabels([f"{r['comparison']} ({short.get(r['engine'], r['engine'])})" for r in reversed(rows)],
                       fontsize=7)
    ax.set_xlabel(f"{rows[0]['statistic'].replace('_', ' ')}" + (" (log scale)" if log and finite else ""))
    if log and finite:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return plots.save_figure(fig, path)


def _sweep_figure(sweep: Sequence[dict[str, Any]], path: Path, memory: bool) -> Path:
    """Claim 3 (live vectors mean and max against m, with m + 1 and 2m + 1) or claim 4 (E[τ], CAS
    failures, dropped against m), per T_p, means over seeds."""
    keys = (("live_mean", "live vectors, time average"), ("live_max", "live vectors, maximum")) if memory \
        else (("tau_mean", "mean staleness E[τ]"), ("cas_failure_frac", "CAS failure fraction"),
              ("dropped_frac", "dropped gradients (share)"))
    fig = plots._new_figure(4.0 * len(keys), 3.4)
    ms = sorted({r["m"] for r in sweep})
    for j, (key, label) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), j + 1)
        for tp in ("inf", "1", "0"):
            ys = [np.mean([r[key] for r in sweep if r["m"] == m and r["persistence"] == tp
                           and r[key] is not None] or [np.nan]) for m in ms]
            ax.plot(ms, ys, "o-", label=f"T_p = {tp}")
        if memory:
            ax.plot(ms, [m + 1 for m in ms], "k--", lw=1, label="lock / hogwild: m + 1")
            ax.plot(ms, [2 * m + 1 for m in ms], "k:", lw=1, label="bound 2m + 1")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("threads m")
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return plots.save_figure(fig, path)


#: per claim: (threshold lines, log scale) of its interval figure
_FIGURE_AXES = {"time_to_target": ((1.0, 1.2), True), "stability": ((0.0,), False),
                "adaptive_steps": ((1.0, 0.0), False), "sparsification": ((1.0, 1.1), True)}


def _draw_claim(key: str, rows: Sequence[dict[str, Any]], records: dict[str, Any], path: Path) -> Path | None:
    if key in ("memory", "contention"):
        sweep = records.get("sweep") or []
        return _sweep_figure(sweep, path, key == "memory") if sweep else None
    if not rows:
        return None
    lines, log = _FIGURE_AXES.get(key, ((1.0,), True))
    if key == "adaptive_steps":  # two statistics: the speedup (log) and the reach difference
        rows = [r for r in rows if r["statistic"] == "policy_speedup"]
        lines = (1.0,)
    return _interval_figure(rows, path, f"{key.replace('_', ' ')}: estimate and 90 % interval per row",
                            lines, log)


# ------------------------------------------------------------------------------------------- page
def _summary_rows(result: Any, script: Any) -> list[list[Any]]:
    overall = result.overall()
    out = []
    for c in script.CLAIMS:
        rows = [r for r in result.rows if r["claim"] == c.key]
        heads = [r for r in rows if script.headline(c, r)]
        counts = {v: sum(r["verdict"] == v for r in heads) for v in script.VERDICTS}
        spread = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        out.append([f"{c.number}. {c.title}", f"{c.quote} ({c.source})", c.measured,
                    f"{len(heads)} headline rows of {len(rows)}: {spread or 'none'}",
                    _verdict_html(overall[c.key]), _engines(rows)])
    return out


def _detail_rows(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [[r["comparison"], r["statistic"], r["engine"], interval_text(r), r["measured"],
             _verdict_html(r["verdict"])] for r in rows]


def _markdown(result: Any, script: Any, figures: dict[str, str]) -> str:
    f = result.facts
    overall = result.overall()
    out = ["# The papers' claims, measured (`leashed claims`)", "",
           f"Run: **{f['run']}**, {f['date']}, {f['host']} ({f['cores']} usable cores), load average "
           f"{f['load_start'][0]:.2f} at the start and {f['load_end'][0]:.2f} at the end (1 min), "
           f"{f['seconds']:.0f} s. Intervals: two-sided {f['confidence']:.0%} Student-t over the units named "
           f"in each row (seeds or (lr, seed) pairs; ratios on the log scale). Target: {f['target']:.0%} of "
           "the initial training loss.", "", script.AGGREGATION, "",
           "| claim | the paper's words | measured | headline rows | verdict | engine |",
           "|---|---|---|---|---|---|"]
    for c, row in zip(script.CLAIMS, _summary_rows(result, script), strict=True):
        cells = [str(v) for v in row[:4]] + [f"**{overall[c.key]}**", str(row[5])]
        out.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
    out.append("")
    for c in script.CLAIMS:
        rows = [r for r in result.rows if r["claim"] == c.key]
        out += [f"## {c.number}. {c.title}: {overall[c.key]}", "", f"> {c.quote} ({c.source})", "",
                f"Measured: {c.measured}.", ""]
        out += [f"- rule ({r.statistic}): {r.text}" for r in c.rules] + [""]
        out += ["| comparison | statistic | engine | estimate [90 % interval] (n) | measured | verdict |",
                "|---|---|---|---|---|---|"]
        out += ["| " + " | ".join([r["comparison"], r["statistic"], r["engine"], interval_text(r),
                                   r["measured"], r["verdict"]]) + " |" for r in rows]
        if c.key in figures:
            out += ["", f"![{c.title}]({figures[c.key]})"]
        out.append("")
    caveats = [*getattr(script, "CAVEATS", ()), *f.get("notes", [])]
    if caveats:
        out += ["## Limits of this evidence", ""] + [f"- {n}" for n in caveats]
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_page(result: Any, script: Any, out: str | Path) -> Path:
    """Write index.html, claims.md, claims.json and figures/ into ``out``; returns index.html's path."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    page = _Page(out)
    hidden = "-".join(str(h) for h in result.config.hidden)
    f = result.facts
    overall = result.overall()
    page.add("<h1>The papers' claims, measured</h1>")
    page.add(f'<p class="note">Run <b>{_e(f["run"])}</b>, {_e(f["date"])}, {_e(f["host"])} '
             f'({f["cores"]} usable cores), load average {f["load_start"][0]:.2f} → {f["load_end"][0]:.2f} '
             f'(1 min), {f["seconds"]:.0f} s. Intervals: two-sided {f["confidence"]:.0%} Student-t over the '
             "units each row names (seeds or (lr, seed) pairs; ratios on the log scale, back-transformed). "
             f"Target: {f['target']:.0%} of the initial training loss. <b>hardware</b> rows ran on this "
             "machine's threads (m ≤ its cores); <b>simulated</b> rows ran in the simulator on m cores as "
             "fast as this machine's, calibrated from its runtime runs at m = 1 and 2; claims 1, 2, 5, 6 "
             f"with real gradients (MLP 784-{hidden}-10 on MNIST, {result.config.sim_updates} updates per "
             "run: that mode computes one real gradient per simulated one), claims 3, 4 timing-only.</p>")
    page.add(f"<p>{_e(script.AGGREGATION)}</p>")
    page.add(_table(("claim", "the paper's words", "measured", "headline rows", "verdict", "engine"),
                    _summary_rows(result, script), "wide glance"))
    figures: dict[str, str] = {}
    for c in script.CLAIMS:
        rows = [r for r in result.rows if r["claim"] == c.key]
        page.add(f'<h2 id="{c.key}">{c.number}. {_e(c.title)}: {_verdict_html(overall[c.key]).text}</h2>')
        page.add(f"<p><i>“{_e(c.quote.strip('“”'))}”</i> — {_e(c.source)}. Measured: {_e(c.measured)}.</p>")
        page.add("<ul>" + "".join(f"<li>rule ({_e(r.statistic)}): {_e(r.text)}</li>" for r in c.rules)
                 + "</ul>")
        page.add(_table(("comparison", "statistic", "engine", "estimate [90 % interval] (n)", "measured",
                         "verdict"), _detail_rows(rows), "wide"))
        path = out / "figures" / f"{c.key}.png"
        if _draw_claim(c.key, rows, result.records, path) is not None:
            page.embed(path, f"claim {c.number}: {c.title}")
            figures[c.key] = f"figures/{c.key}.png"
    caveats = [*getattr(script, "CAVEATS", ()), *f.get("notes", [])]
    if caveats:
        page.add("<h2>Limits of this evidence</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in caveats)
                 + "</ul>")
    doc = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>leashed claims</title><style>"
           + _CSS + _CSS_VERDICT + "</style></head><body>\n" + "\n".join(page.parts) + "\n</body></html>\n")
    index = write_atomic(out / "index.html", lambda fh: fh.write(doc.encode("utf-8")))
    md = _markdown(result, script, figures)
    write_atomic(out / "claims.md", lambda fh: fh.write(md.encode("utf-8")))
    data = {"format": "leashed-claims", "version": 1, "facts": result.facts, "config": vars(result.config),
            "overall": overall, "aggregation": script.AGGREGATION,
            "claims": [{"key": c.key, "number": c.number, "title": c.title, "source": c.source,
                        "quote": c.quote, "measured": c.measured, "headline": c.headline,
                        "rules": [vars(r) for r in c.rules]} for c in script.CLAIMS],
            "rows": result.rows, "records": result.records}
    text = json.dumps(_plain(data), indent=1, ensure_ascii=False) + "\n"
    write_atomic(out / "claims.json", lambda fh: fh.write(text.encode("utf-8")))
    return index


def _floats(value: Any) -> Any:
    """Undo :func:`_plain`'s strings for non-finite floats."""
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def result_from_json(path: str | Path, script: Any) -> Any:
    """The ``ClaimsResult`` of a ``claims.json`` (to draw a run's page again with :func:`write_page`)."""
    data = _floats(json.loads(Path(path).read_text(encoding="utf-8")))
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data["config"].items()}
    return script.ClaimsResult(script.ClaimsConfig(**fields), data["rows"], data["records"], data["facts"])
