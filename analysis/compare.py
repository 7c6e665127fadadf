"""Predicted (simulator) against measured (runtime) results of the same spec (architecture.md).

Results are told apart by their ``source`` (``sim`` = predicted, ``runtime`` = measured) and paired by
(algorithm, threads, persistence T_p) -- algorithm and thread count, plus T_p so that leashed runs with
different bounds never pair. For every pair :func:`compare_pair` reports

* staleness histograms, mean, variance and dispersion D = Var τ / E τ (papers.md §1, §4);
* the total-variation distance TV = ½ Σ_k |p_k − q_k| of the two staleness distributions;
* a two-sample **chi-square test of homogeneity** on the 2 × B table of counts, the τ bins pooled left to
  right so that every expected count under the pooled distribution is at least 5 (:func:`homogeneity_test`);
  Kolmogorov–Smirnov is not used because its p-values are not valid for discrete data with ties;
* the throughput ratio predicted/measured of committed updates per second. Simulator time is simulated
  seconds: the ratio is meaningful only when the simulator was *calibrated* from a runtime result
  (``sim.timing.from_result``, ``leashed simulate --calibrate-from``), recognised by a truthy
  ``calibrated`` or ``calibrated_from`` in the sim result's ``extra``, its ``extra["timing"]`` or its
  spec's ``extra``, or forced with ``calibrated=True``;
* the CAS-failure fraction p = failed attempts / all attempts (papers.md §6.1, T6), its ratio and difference.

**Verdict criterion** (:class:`Criteria`; defaults in brackets). A pair *differs* if any of these holds:

1. staleness distribution: homogeneity p-value < ``alpha`` [0.01] **and** TV > ``tv_tol`` [0.05] (a
   difference both statistically detectable and large enough to matter; with 10^5 updates per side the
   test alone flags differences of no practical size);
2. mean staleness: |Δ mean| > ``mean_tol`` [0.10] · max(measured mean, 1) **and** Welch's z-test
   p < ``alpha``;
3. throughput (only if calibrated): ratio outside [1/(1 + ``throughput_tol``), 1 + ``throughput_tol``] [0.25];
4. CAS-failure fraction (leashed only): |Δ p| > ``cas_tol`` [0.10] (the accuracy of claim T6 near the knee).

Otherwise it is "consistent". The tolerances follow papers.md §6.3 (approximate claims: about 10–15 %).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from leashed.analysis._io import json_safe, leashed_version
from leashed.analysis.staleness import pool_bins
from leashed.errors import LeashedError

COMPARE_FORMAT = "leashed-comparison"
COMPARE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the verdict (module docstring)."""

    alpha: float = 0.01
    tv_tol: float = 0.05
    mean_tol: float = 0.10
    throughput_tol: float = 0.25
    cas_tol: float = 0.10


class HomogeneityResult(NamedTuple):
    """Result of :func:`homogeneity_test`."""

    stat: float
    dof: int
    p_value: float
    bins: int


def _counts(a: Any) -> np.ndarray:
    if hasattr(a, "staleness_hist"):
        a = a.staleness_hist()
    return np.asarray(a, dtype=np.float64)


def _aligned(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _counts(a), _counts(b)
    size = max(len(a), len(b), 1)
    return (np.concatenate([a, np.zeros(size - len(a))]), np.concatenate([b, np.zeros(size - len(b))]))


def total_variation(a: Any, b: Any) -> float:
    """TV = ½ Σ_k |p_k − q_k| of two histograms (counts indexed by τ), in [0, 1]."""
    a, b = _aligned(a, b)
    if a.sum() == 0 or b.sum() == 0:
        return math.nan
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def homogeneity_test(a: Any, b: Any, min_expected: float = 5.0) -> HomogeneityResult:
    """Chi-square test that two histograms come from one distribution (2 × B contingency table).

    Bins are pooled left to right (:func:`~leashed.analysis.staleness.pool_bins` on the pooled counts) so
    that both rows expect at least ``min_expected`` in every bin; dof = B − 1; one bin gives p = 1.
    """
    a, b = _aligned(a, b)
    na, nb = a.sum(), b.sum()
    if na == 0 or nb == 0:
        return HomogeneityResult(math.nan, 0, math.nan, 0)
    share = min(na, nb) / (na + nb)
    bins = pool_bins(a + b, 0.0, min_expected / share)
    if len(bins) < 2:
        return HomogeneityResult(0.0, 0, 1.0, len(bins))
    table = np.array([[a[lo: hi + 1].sum() for lo, hi in bins], [b[lo: hi + 1].sum() for lo, hi in bins]])
    col = table.sum(axis=0)
    expected = np.outer([na, nb], col) / (na + nb)
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = len(bins) - 1
    return HomogeneityResult(stat, dof, float(stats.chi2.sf(stat, dof)), len(bins))


def cas_failure_fraction(result: Any) -> float | None:
    """Failed CAS attempts / all attempts over every computed gradient (dropped ones included)."""
    att = result.updates.attempts
    if len(att) == 0:
        return None
    total = float(att.sum())
    committed = float(result.updates.committed.sum())
    return (total - committed) / total if total > 0 else None


def is_calibrated(result: Any) -> bool:
    """Whether a simulator result says its timing model was calibrated from a runtime result."""
    extra = result.extra or {}
    places = [extra, extra.get("timing") if isinstance(extra.get("timing"), dict) else {},
              getattr(result.spec, "extra", None) or {}]
    return any(bool(p.get("calibrated")) or bool(p.get("calibrated_from")) for p in places)


def _moments(h: np.ndarray) -> tuple[int, float | None, float | None, float | None]:
    n = int(h.sum())
    if n == 0:
        return 0, None, None, None
    k = np.arange(len(h))
    mean = float(h @ k) / n
    var = float(h @ (k - mean) ** 2) / n
    return n, mean, var, (var / mean if mean > 0 else None)


def pair_key(result: Any) -> tuple[str, int, str]:
    """(algorithm, threads, persistence label) -- how predicted and measured runs are paired."""
    return (result.spec.algorithm, result.spec.threads, result.spec.persistence_label)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


@dataclass
class PairComparison:
    """Predicted (sim) against measured (runtime) for one (algorithm, threads, T_p)."""

    label: str
    algorithm: str
    threads: int
    persistence: str
    predicted_file: str | None
    measured_file: str | None
    hist_predicted: list[int]
    hist_measured: list[int]
    n: tuple[int, int]
    mean: tuple[float | None, float | None]
    var: tuple[float | None, float | None]
    dispersion: tuple[float | None, float | None]
    tv: float
    test: HomogeneityResult
    mean_test_p: float | None
    throughput: tuple[float | None, float | None]
    throughput_ratio: float | None
    calibrated: bool
    cas_failure: tuple[float | None, float | None]
    cas_ratio: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.reasons

    @property
    def verdict(self) -> str:
        """``consistent`` or ``differ: <what>; <what>`` (criteria in the module docstring)."""
        return "consistent" if self.consistent else "differ: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "label": self.label, "algorithm": self.algorithm, "threads": self.threads,
            "persistence": self.persistence, "predicted_file": self.predicted_file,
            "measured_file": self.measured_file,
            "predicted": {"n": self.n[0], "staleness_mean": self.mean[0], "staleness_var": self.var[0],
                          "dispersion": self.dispersion[0], "updates_per_s": self.throughput[0],
                          "cas_failure_fraction": self.cas_failure[0], "staleness_hist": self.hist_predicted},
            "measured": {"n": self.n[1], "staleness_mean": self.mean[1], "staleness_var": self.var[1],
                         "dispersion": self.dispersion[1], "updates_per_s": self.throughput[1],
                         "cas_failure_fraction": self.cas_failure[1], "staleness_hist": self.hist_measured},
            "tv_distance": self.tv,
            "homogeneity_test": {"name": "chi-square homogeneity, pooled bins (expected >= 5)",
                                 "stat": self.test.stat, "dof": self.test.dof, "p_value": self.test.p_value,
                                 "bins": self.test.bins},
            "mean_test_p": self.mean_test_p, "throughput_ratio": self.throughput_ratio,
            "calibrated": self.calibrated, "cas_failure_ratio": self.cas_ratio,
            "verdict": self.verdict, "consistent": self.consistent,
        })


def compare_pair(predicted: Any, measured: Any, *, criteria: Criteria | None = None,
                 calibrated: bool | None = None, files: tuple[str | None, str | None] = (None, None)
                 ) -> PairComparison:
    """Compare two RunResults of the same spec (module docstring); either source is accepted."""
    c = criteria or Criteria()
    hp, hm = _aligned(predicted, measured)
    n_p, mean_p, var_p, d_p = _moments(hp)
    n_m, mean_m, var_m, d_m = _moments(hm)
    tv = total_variation(hp, hm)
    test = homogeneity_test(hp, hm)
    reasons: list[str] = []
    if n_p == 0 or n_m == 0:
        reasons.append("no committed updates on one side")
    if math.isfinite(test.p_value) and test.p_value < c.alpha and tv > c.tv_tol:
        reasons.append(f"staleness distribution (TV {tv:.3f} > {c.tv_tol}, "
                       f"chi2 p={test.p_value:.2g} < {c.alpha})")
    mean_p_value = None
    if mean_p is not None and mean_m is not None:
        se = math.sqrt((var_p or 0.0) / max(n_p, 1) + (var_m or 0.0) / max(n_m, 1))
        diff = mean_p - mean_m
        mean_p_value = (float(2 * stats.norm.sf(abs(diff) / se)) if se > 0
                        else (1.0 if diff == 0 else 0.0))
        if abs(diff) > c.mean_tol * max(mean_m, 1.0) and mean_p_value < c.alpha:
            reasons.append(f"mean staleness ({mean_p:.3g} vs {mean_m:.3g}, z-test p={mean_p_value:.2g})")
    x_p = predicted.summary().get("updates_per_s")
    x_m = measured.summary().get("updates_per_s")
    ratio = _ratio(x_p, x_m)
    if calibrated is None:
        calibrated = is_calibrated(predicted) if predicted.source == "sim" else True
    cal = calibrated
    if cal and ratio is not None and not (1 / (1 + c.throughput_tol) <= ratio <= 1 + c.throughput_tol):
        reasons.append(f"throughput (ratio {ratio:.3g} outside [{1 / (1 + c.throughput_tol):.2f}, "
                       f"{1 + c.throughput_tol:.2f}])")
    p_p, p_m = cas_failure_fraction(predicted), cas_failure_fraction(measured)
    if (predicted.spec.algorithm == "leashed" and p_p is not None and p_m is not None
            and abs(p_p - p_m) > c.cas_tol):
        reasons.append(f"CAS failure fraction ({p_p:.3f} vs {p_m:.3f}, |diff| > {c.cas_tol})")
    algorithm, threads, tp = pair_key(measured)
    return PairComparison(
        label=measured.spec.label(), algorithm=algorithm, threads=threads, persistence=tp,
        predicted_file=files[0], measured_file=files[1],
        hist_predicted=[int(v) for v in hp], hist_measured=[int(v) for v in hm], n=(n_p, n_m),
        mean=(mean_p, mean_m), var=(var_p, var_m), dispersion=(d_p, d_m), tv=tv, test=test,
        mean_test_p=mean_p_value, throughput=(x_p, x_m), throughput_ratio=ratio, calibrated=cal,
        cas_failure=(p_p, p_m), cas_ratio=_ratio(p_p, p_m), reasons=reasons)


@dataclass
class Comparison:
    """All pairs of a set of results, plus what could not be paired."""

    pairs: list[PairComparison]
    unpaired: list[str]
    criteria: Criteria

    @property
    def consistent(self) -> bool:
        return all(p.consistent for p in self.pairs)

    @property
    def verdict(self) -> str:
        bad = [p for p in self.pairs if not p.consistent]
        if not bad:
            return f"consistent ({len(self.pairs)} pair{'s' * (len(self.pairs) != 1)})"
        return f"differ: {len(bad)} of {len(self.pairs)} pairs ({', '.join(p.label for p in bad)})"

    def table(self) -> str:
        """A plain-text table, one row per pair, then the verdict lines."""
        head = ("run", "N sim/run", "mean τ", "D", "TV", "chi2 p", "X ratio", "CAS fail", "verdict")
        rows = [head]
        for p in self.pairs:
            rows.append((
                p.label, f"{p.n[0]}/{p.n[1]}", f"{_f(p.mean[0])}/{_f(p.mean[1])}",
                f"{_f(p.dispersion[0])}/{_f(p.dispersion[1])}", _f(p.tv), _f(p.test.p_value, 2),
                _f(p.throughput_ratio) + ("" if p.calibrated else "*"),
                f"{_f(p.cas_failure[0])}/{_f(p.cas_failure[1])}", "consistent" if p.consistent else "differ"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.append("(values are predicted/measured; X ratio = predicted/measured updates per second, "
                     "* = simulator not calibrated: not judged)")
        for p in self.pairs:
            lines.append(f"{p.label}: {p.verdict}")
        for u in self.unpaired:
            lines.append(f"unpaired: {u}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "format": COMPARE_FORMAT, "format_version": COMPARE_FORMAT_VERSION,
            "leashed_version": leashed_version(),
            "criteria": {"alpha": self.criteria.alpha, "tv_tol": self.criteria.tv_tol,
                         "mean_tol": self.criteria.mean_tol, "throughput_tol": self.criteria.throughput_tol,
                         "cas_tol": self.criteria.cas_tol},
            "verdict": self.verdict, "consistent": self.consistent,
            "pairs": [p.to_dict() for p in self.pairs], "unpaired": self.unpaired,
        })


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def compare_results(results: Sequence[Any], files: Sequence[str | None] | None = None, *,
                    criteria: Criteria | None = None, calibrated: bool | None = None) -> Comparison:
    """Pair simulator with runtime results by (algorithm, threads, T_p) and compare every pair."""
    files = list(files) if files is not None else [None] * len(results)
    sims: dict[tuple[str, int, str], list[int]] = {}
    runs: dict[tuple[str, int, str], list[int]] = {}
    for i, r in enumerate(results):
        (sims if r.source == "sim" else runs).setdefault(pair_key(r), []).append(i)
    if not sims or not runs:
        have = "simulator" if sims else "runtime" if runs else "no"
        raise LeashedError(f"compare needs simulator (predicted) and runtime (measured) results; "
                           f"only {have} results were given")
    for side, table in (("simulator", sims), ("runtime", runs)):
        for key, idx in table.items():
            if len(idx) > 1:
                names = ", ".join(str(files[i] or f"#{i}") for i in idx)
                raise LeashedError(f"{len(idx)} {side} results for {key[0]} m={key[1]} Tp={key[2]} "
                                   f"({names}); give one per algorithm and thread count")
    pairs = []
    for key in sorted(set(sims) & set(runs), key=lambda k: (k[0], k[1], k[2])):
        i, j = sims[key][0], runs[key][0]
        pairs.append(compare_pair(results[i], results[j], criteria=criteria, calibrated=calibrated,
                                  files=(files[i], files[j])))
    if not pairs:
        raise LeashedError("no simulator result has a runtime result with the same algorithm, threads and "
                           "persistence; simulate the specs that were run")
    unpaired = [f"{results[i].source} {results[i].spec.label()} ({files[i] or '#' + str(i)})"
                for table in (sims, runs) for key, idx in table.items() if key not in set(sims) & set(runs)
                for i in idx]
    return Comparison(pairs=pairs, unpaired=unpaired, criteria=criteria or Criteria())


#: quantity -> (file stem, y label, accessor (predicted, measured), log scale)
QUANTITIES: dict[str, tuple[str, str, Any, bool]] = {
    "staleness_mean": ("staleness_mean", "mean staleness E[τ] (updates)", lambda p: p.mean, False),
    "dispersion": ("dispersion", "dispersion D = Var τ / E τ", lambda p: p.dispersion, False),
    "throughput": ("throughput", "throughput (committed updates / s; sim: per simulated s)",
                   lambda p: p.throughput, True),
    "cas_failure": ("cas_failure", "CAS failure fraction (failed / all attempts)", lambda p: p.cas_failure,
                    False),
    "tv": ("tv_distance", "total-variation distance of staleness", lambda p: (None, p.tv), False),
}


def write_comparison(comparison: Comparison, out_dir: str | os.PathLike[str], fmt: str = "png") -> list[Path]:
    """Figures (side-by-side histograms; one plot per quantity against m) into an existing folder."""
    from leashed.analysis import plots  # matplotlib only when drawing

    out = Path(out_dir)
    paths = [plots.plot_histogram_pairs([(p.label, np.asarray(p.hist_predicted), np.asarray(p.hist_measured))
                                         for p in comparison.pairs], out / f"staleness_pairs.{fmt}")]
    for _, (stem, ylabel, get, log_y) in QUANTITIES.items():
        series: dict[str, tuple[list[float], list[float | None]]] = {}
        for p in comparison.pairs:
            pred, meas = get(p)
            name = p.algorithm + (f" Tp={p.persistence}" if p.algorithm == "leashed" else "")
            if stem != "tv_distance":
                series.setdefault(f"{name} predicted [sim]", ([], []))
                series[f"{name} predicted [sim]"][0].append(p.threads)
                series[f"{name} predicted [sim]"][1].append(pred)
            key = name if stem == "tv_distance" else f"{name} measured [runtime]"
            series.setdefault(key, ([], []))
            series[key][0].append(p.threads)
            series[key][1].append(meas)
        title = f"{ylabel.split(' (')[0]}: predicted against measured"
        if stem == "tv_distance":
            title = "staleness TV distance between predicted and measured"
        reference = None
        if stem == "staleness_mean" and all(p.algorithm == "hogwild" or (p.algorithm == "leashed"
                                                                         and p.persistence == "inf")
                                            for p in comparison.pairs):
            reference = ("m − 1 (claim T1)", lambda m: m - 1)
        paths.append(plots.plot_vs_threads(series, out / f"{stem}.{fmt}", ylabel=ylabel, title=title,
                                           log_y=log_y, reference=reference))
    return paths
