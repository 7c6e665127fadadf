"""Predicted (simulator) against measured (runtime) results of one setting (docs/analysis.md).

Results are told apart by their ``source`` (``sim`` = predicted, ``runtime`` = measured) and paired by
:func:`pair_key`: algorithm, threads, persistence T_p, sparsifier (with error memory) and step policy.
Several files of one key on one side are *replicates* of that side, and so are the per-seed summaries a
simulator result may carry in ``extra["replicates"]`` (keys ``seed``, ``updates_per_s``,
``cas_failure_fraction``, ``staleness_mean``, ``staleness_var``, ``staleness_hist``).

For every pair :func:`compare_pair` estimates on each side, with a confidence interval that respects the
autocorrelation of the commit sequence (batch means with a batch jackknife, replicates, a block bootstrap;
:mod:`.equivalence`):

* **throughput** X, committed updates per second over the commit instants ``t_commit`` (batch = a run of
  consecutive commits, X_b = commits / duration). Simulator time is simulated seconds: judged only when
  the simulator was *calibrated* from a runtime result (``calibrated``/``calibrated_from`` in the sim
  result's ``extra``, its ``extra["timing"]`` or its spec's ``extra``, or ``calibrated=True``);
* **CAS failure fraction** p = failed attempts / all attempts (papers.md §6.1, T6), only for algorithms
  that commit by CAS (``leashed.algorithms``, ``has_cas``);
* **mean staleness** E τ and **dispersion** D = Var τ / E τ (papers.md §1, §4);
* the **staleness distribution**: TV = ½ Σ_k |p_k − q_k| between the sides.

**Verdict per quantity** (equivalence test, TOST: the two-sided 90 % interval of the difference
predicted − measured, i.e. two one-sided 5 % tests; :class:`Criteria`): ``agree`` if the interval lies
inside the tolerance, ``differ`` if it lies entirely outside, ``inconclusive`` otherwise. Tolerances:

* throughput: the ratio predicted/measured in [1/1.1, 1.1] (``throughput_tol`` 0.10, symmetric on the
  log scale: |log ratio| ≤ log 1.1);
* CAS failure fraction: |Δ p| ≤ max(0.03, 0.30 · measured p) (``cas_tol``, ``cas_rel_tol``);
* staleness TV ≤ 0.16 (``tv_tol``), the band that repeated real runs of one setting show: the 90th
  percentile of the pairwise TV of 8 quiet runs at each of m = 2, 3, 4, 8 (2-core VM, 2026-12-01;
  docs/analysis.md);
* mean staleness: |Δ| ≤ 0.10 · max(measured mean, 1) (``mean_tol``); reported as ``identity`` and not
  judged where E τ = m − 1 holds by construction on both sides (hogwild; leashed with T_p = ∞; T1);
* dispersion: |Δ D| ≤ 0.15 · max(measured D, 1) (``dispersion_tol``); ``identity`` at one thread and
  for sync, where every τ is 0 (as is the mean); ``inconclusive`` where either side's Var τ
  rests on fewer than ``min_effective`` (30) updates' worth of squared deviations
  (:func:`effective_tail_count`): a few long stalls decide it, and no interval from those runs can say
  how much the next runs' stalls differ.

With ``paired`` and at least ``Criteria.trimmed_pairs`` (10) pairs, throughput is judged on the 20 %
trimmed mean of the per-pair log ratios with Yuen's interval (:func:`.equivalence.paired_trimmed_mean`),
the pooled paired ratio reported beside it (``Quantity.pooled``): a run that met a slower host moves it by
a kept pair's worth, not by its size.

A pair's verdict is ``differ`` if any quantity differs, ``agree`` if all judged ones agree, else
``inconclusive``; the same rule combines the pairs. The chi-square homogeneity test of the pooled counts
is reported for information only: it assumes independent samples, and staleness is autocorrelated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from leashed.algorithms import algorithm as algorithm_entry
from leashed.analysis import equivalence as eq
from leashed.analysis._io import json_safe, leashed_version
from leashed.analysis.staleness import pool_bins
from leashed.errors import LeashedError

COMPARE_FORMAT = "leashed-comparison"
COMPARE_FORMAT_VERSION = 2

#: the staleness TV band of repeated real runs (docs/analysis.md, "How much real runs differ")
TV_BAND = 0.16


@dataclass(frozen=True)
class Criteria:
    """Tolerances and settings of the verdict (module docstring; :mod:`.equivalence`)."""

    confidence: float = 0.90
    throughput_tol: float = 0.10
    cas_tol: float = 0.03
    cas_rel_tol: float = 0.30
    tv_tol: float = TV_BAND
    mean_tol: float = 0.10
    dispersion_tol: float = 0.15
    #: significance level of the (information-only) chi-square homogeneity test
    alpha: float = 0.01
    #: the dispersion is judged only where each side's Var τ rests on at least this many updates' worth
    #: of squared deviations (:func:`effective_tail_count`); below, a few long stalls decide it
    min_effective: float = 30.0
    batches: int = 30
    min_batches: int = 10
    min_batch: int = 20
    max_lag1: float = 0.3
    bootstrap: int = 400
    #: with at least this many pairs (``paired``), throughput is judged on the 20 % trimmed mean of the
    #: pair ratios and Yuen's interval (:func:`.equivalence.paired_trimmed_mean`); fewer, the pooled ratio
    trimmed_pairs: int = 10

    def describe(self) -> str:
        """One sentence stating the tolerances."""
        t = 1 + self.throughput_tol
        one_sided = (1 - self.confidence) / 2
        return (f"Equivalence at {self.confidence:.0%} (two one-sided tests at {one_sided:.0%}): "
                f"agree if the interval of the difference lies inside the tolerance, differ if outside. "
                f"Tolerances: throughput ratio in [1/{t:g}, {t:g}] (calibrated simulations only); "
                f"CAS failure fraction ±max({self.cas_tol:g}, {self.cas_rel_tol:.0%} of measured); "
                f"staleness TV ≤ {self.tv_tol:g}; mean staleness ±{self.mean_tol:.0%}·max(measured, 1) "
                f"(identity where E τ = m − 1 by construction); dispersion ±{self.dispersion_tol:.0%}"
                f"·max(measured, 1), judged where Var τ rests on ≥ {self.min_effective:g} updates.")


class HomogeneityResult(NamedTuple):
    """Result of :func:`homogeneity_test`."""

    stat: float
    dof: int
    p_value: float
    bins: int


def _counts(a: Any) -> np.ndarray:
    if hasattr(a, "staleness_histogram"):
        a = a.staleness_histogram
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


def effective_tail_count(hist: Any) -> float:
    """How many updates Var τ rests on: n_eff = (Σ w)² / Σ w² over the updates, w = (τ − E τ)².

    A staleness distribution whose variance comes from a few long stalls (a thread off its core for
    milliseconds while the others commit) has n_eff near the number of stalls, however long the run:
    then neither batch means nor replicates of that run can see how much the next run's stalls will
    differ (on the 2-core VM one run's dispersion at m = 2 ranged from 0.07 to 7.8 across 20 runs).
    Infinite for a distribution with no spread."""
    h = _counts(hist)
    n = h.sum()
    if n <= 0:
        return 0.0
    k = np.arange(len(h), dtype=np.float64)
    w = (k - (h * k).sum() / n) ** 2
    total, squares = float((h * w).sum()), float((h * w * w).sum())
    return math.inf if squares <= 0 else total * total / squares


def homogeneity_test(a: Any, b: Any, min_expected: float = 5.0) -> HomogeneityResult:
    """Chi-square test that two histograms come from one distribution (2 × B contingency table).

    Information only (it assumes independent samples). Bins are pooled left to right
    (:func:`~leashed.analysis.staleness.pool_bins`) so that both rows expect at least ``min_expected`` in
    every bin; dof = B − 1; one bin gives p = 1.
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
    expected = np.outer([na, nb], table.sum(axis=0)) / (na + nb)
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


def pair_key(result: Any) -> tuple[str, int, str, str, str]:
    """(algorithm, threads, T_p label, sparsifier[+mem], step policy) -- how predicted and measured pair."""
    s = result.spec
    sparsifier = s.sparsifier + ("+mem" if s.sparsifier != "none" and s.error_memory else "")
    return (s.algorithm, s.threads, s.persistence_label, sparsifier, s.step_policy)


# ---------------------------------------------------------------------------------------------- one side
#: quantity -> estimator of the total sums of its units (module docstring of :mod:`.equivalence`)
ESTIMATORS: dict[str, Callable[[np.ndarray], float]] = {
    "throughput": lambda t: math.log(t[0] / t[1]) if t[0] > 0 and t[1] > 0 else math.nan,  # log X
    "cas_failure": lambda t: t[0] / t[1] if t[1] > 0 else math.nan,
    "staleness_mean": lambda t: t[1] / t[0] if t[0] > 0 else math.nan,
    "dispersion": lambda t: ((t[2] / t[0] - (t[1] / t[0]) ** 2) / (t[1] / t[0])
                             if t[0] > 0 and t[1] > 0 else math.nan),
}
_BATCH_VALUE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "throughput": lambda s: s[:, 1],  # batch duration (equal commit counts)
    "cas_failure": lambda s: s[:, 0] / np.maximum(s[:, 1], 1),
    "staleness": lambda s: s[:, 1] / np.maximum(s[:, 0], 1),
}


@dataclass
class Side:
    """The units of one side of a pair, per quantity (``hist`` for the distribution), and its files."""

    units: dict[str, eq.Units]
    n: int
    hist: np.ndarray
    replicates: int
    files: list[str]


def _batches_of(result: Any, c: Criteria) -> dict[str, tuple[np.ndarray, float]]:
    """Per-quantity batch sums of one run with an update log, with their lag-1 autocorrelation."""
    u = result.updates
    out: dict[str, tuple[np.ndarray, float]] = {}
    kw = {"batches": c.batches, "min_batches": c.min_batches, "min_batch": c.min_batch,
          "max_lag1": c.max_lag1}

    def put(name: str, rows: np.ndarray, value: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
        sums = eq.make_batches(rows, value, **kw)
        if sums is not None:
            out[name] = (sums, eq.lag1_autocorrelation(value(sums)))
        return sums

    committed = u.committed
    t = np.sort(u.t_commit[committed].astype(np.float64))
    if len(t) > 1:
        gaps = np.diff(t)
        put("throughput", np.column_stack([np.ones_like(gaps), gaps]), _BATCH_VALUE["throughput"])
    fails = (u.attempts - committed).astype(np.float64)
    put("cas_failure", np.column_stack([fails, u.attempts.astype(np.float64)]), _BATCH_VALUE["cas_failure"])
    tau = u.staleness[committed].astype(np.float64)
    sums = put("staleness", np.column_stack([np.ones_like(tau), tau, tau * tau]), _BATCH_VALUE["staleness"])
    if sums is not None:
        size = len(tau) // len(sums) if len(sums) else 0
        ids = np.arange(len(tau)) // max(size, 1)
        keep = ids < len(sums)
        width = int(tau.max()) + 1 if len(tau) else 1
        hist = np.bincount(ids[keep] * width + tau[keep].astype(np.int64), minlength=len(sums) * width)
        out["hist"] = (hist.reshape(len(sums), width).astype(np.float64), out["staleness"][1])
    return out


def _replicate_rows(rep: dict[str, Any]) -> dict[str, np.ndarray]:
    """One unit per quantity from a simulator replicate summary (each replicate weighs the same).

    Throughput is one commit per 1/X seconds, so that replicates pool as total commits over total time
    (the harmonic mean of their X), as a measured side's runs of equal length do. Pooling the X
    themselves (their arithmetic mean) would read a prediction whose replicates differ in speed by ±20 %
    as about 4 % faster than measured runs that differ as much."""
    rows: dict[str, np.ndarray] = {}
    x = rep.get("updates_per_s")
    if x is not None and x > 0:
        rows["throughput"] = np.array([1.0, 1.0 / float(x)])
    p = rep.get("cas_failure_fraction")
    if p is not None:
        rows["cas_failure"] = np.array([float(p), 1.0])
    mean, var = rep.get("staleness_mean"), rep.get("staleness_var")
    if mean is not None and var is not None:
        rows["staleness"] = np.array([1.0, float(mean), float(var) + float(mean) ** 2])
    if rep.get("staleness_hist"):
        rows["hist"] = np.asarray(rep["staleness_hist"], dtype=np.float64)
    return rows


def _summary_replicate(result: Any) -> dict[str, Any]:
    s = result.summary()
    return {"seed": result.spec.seed, "updates_per_s": s.get("updates_per_s"),
            "cas_failure_fraction": cas_failure_fraction(result), "staleness_mean": s.get("staleness_mean"),
            "staleness_var": s.get("staleness_var"), "staleness_hist": s.get("staleness_hist")}


def build_side(results: Sequence[Any], files: Sequence[str], c: Criteria) -> Side:
    """Units of every quantity over the replicates of one side (module docstring of :mod:`.equivalence`)."""
    parts: dict[str, list[tuple[np.ndarray, int]]] = {}
    lags: dict[str, list[float]] = {}
    group = 0
    replicates = 0
    resampled = 0  # replicates that each resample the calibration runs (equivalence.Units.variance_factor)
    hist = np.zeros(1)
    for r in results:
        h = r.staleness_histogram.astype(np.float64)
        reps = (r.extra or {}).get("replicates") if r.source == "sim" else None
        if isinstance(reps, list) and len(reps) >= 2:
            seeds = {rep.get("seed") for rep in reps if isinstance(rep, dict)}
            reps = [rep for rep in reps if isinstance(rep, dict)]
            if r.spec.seed not in seeds and len(r.updates):
                reps = [*reps, _summary_replicate(r)]
            for rep in reps:
                for name, row in _replicate_rows(rep).items():
                    parts.setdefault(name, []).append((row[None, :], group))
                group += 1
                replicates += 1
            if (r.extra or {}).get("replicates_resample_calibration") is True:
                resampled += len(reps)
            pooled = [np.asarray(rep["staleness_hist"], dtype=np.float64) for rep in reps
                      if rep.get("staleness_hist")]
            if pooled:
                h = pooled[0]
                for extra_h in pooled[1:]:
                    h = _pad_add(h, extra_h)
        else:
            for name, (sums, lag) in _batches_of(r, c).items():
                parts.setdefault(name, []).append((sums, group))
                lags.setdefault(name, []).append(lag)
            group += 1
            replicates += 1
        hist = _pad_add(hist, h)
    units: dict[str, eq.Units] = {}
    for name, blocks in parts.items():
        width = max(b.shape[1] for b, _ in blocks)
        sums = np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b, _ in blocks])
        gid = np.concatenate([np.full(len(b), g) for b, g in blocks])
        lag = max(lags[name]) if lags.get(name) else None
        factor = float(resampled + 1) if resampled and resampled == replicates else 1.0
        units[name] = eq.Units(sums, gid, lag1=lag, batches=len(sums), variance_factor=factor)
    return Side(units=units, n=int(hist.sum()), hist=hist, replicates=replicates, files=list(files))


def paired_units(results: Sequence[Any], c: Criteria) -> dict[str, eq.Units]:
    """Per-file units for a paired comparison: one unit per file (its totals) for the additive quantities,
    and every file's histogram rows as group k for the staleness distribution. A quantity that some file
    cannot estimate is left out (judged inconclusive)."""
    sides = [build_side([r], [], c) for r in results]
    out: dict[str, eq.Units] = {}
    for key in ("throughput", "cas_failure", "staleness"):
        if all(key in s.units for s in sides):
            totals = np.stack([s.units[key].sums.sum(axis=0) for s in sides])
            out[key] = eq.Units(totals, np.arange(len(sides)), batches=len(sides))
    if all("hist" in s.units for s in sides):
        blocks = [s.units["hist"].sums for s in sides]
        width = max(b.shape[1] for b in blocks)
        rows = np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in blocks])
        gid = np.concatenate([np.full(len(b), k) for k, b in enumerate(blocks)])
        out["hist"] = eq.Units(rows, gid, batches=len(rows))
    return out


def _pad_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = max(len(a), len(b))
    return np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b)))


# ---------------------------------------------------------------------------------------------- one pair
@dataclass
class Quantity:
    """One quantity of a pair: both sides' estimates, the difference, the tolerance and the verdict.

    ``scale`` is ``ratio`` (throughput: ``difference`` and ``tolerance`` are ratios predicted/measured) or
    ``difference`` (predicted − measured) or ``distance`` (TV: ``difference`` is the TV itself).
    """

    name: str
    predicted: eq.Estimate
    measured: eq.Estimate
    difference: eq.Estimate
    tolerance: tuple[float, float] | None
    verdict: str
    scale: str = "difference"
    note: str = ""
    batches: tuple[int, int] = (0, 0)
    lag1: tuple[float | None, float | None] = (None, None)
    #: the pooled paired difference, reported beside a difference that is the trimmed mean over pairs
    pooled: eq.Estimate | None = None

    @property
    def statistic(self) -> str:
        """``trimmed`` (the 20 % trimmed mean of the pair differences) or ``pooled`` (the difference of
        the pooled estimates): trimmed exactly when the pooled one is reported beside it."""
        return "pooled" if self.pooled is None else "trimmed"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "statistic": self.statistic,
                "pooled": self.pooled.to_dict() if self.pooled is not None else None,
                "se_of": "log of the value" if self.scale == "ratio" else "the value",
                "predicted": self.predicted.to_dict(),
                "measured": self.measured.to_dict(), "difference": self.difference.to_dict(),
                "tolerance": list(self.tolerance) if self.tolerance else None, "verdict": self.verdict,
                "note": self.note, "units": list(self.batches), "lag1_autocorrelation": list(self.lag1)}

    def describe(self) -> str:
        """e.g. ``throughput ratio 1.52 [1.48, 1.57] outside [0.909, 1.1]``."""
        d, tol = self.difference, self.tolerance
        what = {"ratio": "ratio", "difference": "diff", "distance": "TV"}[self.scale]
        if d.value is None:
            return f"{self.name} {self.verdict} ({self.note or 'no estimate'})"
        interval = f"[{_f(d.low)}, {_f(d.high)}]" if d.low is not None else "[no interval]"
        tol_text = f"[{_f(tol[0])}, {_f(tol[1])}]" if tol else "-"
        why = f" ({self.note})" if self.note.startswith("not judged") else ""
        if self.statistic == "trimmed":
            what = f"trimmed pair {what}"
            interval += f" (20 % trimmed mean of pairs; pooled {_f(self.pooled.value)})" \
                if self.pooled is not None else ""
        return f"{self.name} {what} {_f(d.value)} {interval}, tolerance {tol_text}: {self.verdict}{why}"


def _estimate(side: Side, name: str, key: str, c: Criteria) -> eq.Estimate:
    units = side.units.get(key)
    if units is None:
        return eq.Estimate(None, math.inf, 0, None, None)
    est, se, df = eq.jackknife(units, ESTIMATORS[name])
    return eq.Estimate.make(est if math.isfinite(est) else None, se, df, c.confidence)


def _exp(e: eq.Estimate) -> eq.Estimate:
    f = lambda v: None if v is None else math.exp(v)  # noqa: E731
    return eq.Estimate(f(e.value), e.se, e.df, f(e.low), f(e.high))


Pairs = tuple[dict[str, eq.Units], dict[str, eq.Units]]


def _quantity(name: str, pred: Side, meas: Side, c: Criteria, *, judged: str | None = None,
              pairs: Pairs | None = None) -> Quantity:
    key = "staleness" if name in ("staleness_mean", "dispersion") else name
    a, b = _estimate(pred, name, key, c), _estimate(meas, name, key, c)
    pooled = None  # the pooled paired ratio, reported beside a trimmed one
    if pairs is None:
        diff = eq.difference(a, b, c.confidence)
    elif key in pairs[0] and key in pairs[1]:
        diff = eq.paired_difference(pairs[0][key], pairs[1][key], ESTIMATORS[name], c.confidence)
        if name == "throughput" and len(pairs[0][key].sums) >= c.trimmed_pairs:
            pooled = _exp(diff)
            diff = eq.paired_trimmed_mean(pairs[0][key], pairs[1][key], ESTIMATORS[name], c.confidence)
    else:
        diff = eq.Estimate(None, math.inf, 0, None, None)
    units = tuple(s.units[key].batches if key in s.units else 0 for s in (pred, meas))
    lags = tuple(s.units[key].lag1 if key in s.units else None for s in (pred, meas))
    scale = "difference"
    if name == "throughput":
        a, b, diff, scale = _exp(a), _exp(b), _exp(diff), "ratio"
        tol = (1 / (1 + c.throughput_tol), 1 + c.throughput_tol)
    elif name == "cas_failure":
        half = max(c.cas_tol, c.cas_rel_tol * (b.value or 0.0))
        tol = (-half, half)
    elif name == "staleness_mean":
        half = c.mean_tol * max(b.value or 0.0, 1.0)
        tol = (-half, half)
    else:
        half = c.dispersion_tol * max(b.value or 0.0, 1.0)
        tol = (-half, half)
    verdict = judged or eq.equivalence(diff.low, diff.high, *tol)
    note = f"over {len(pairs[0][key].sums)} pairs" if pairs and key in pairs[0] else ""
    if pooled is not None:
        note = (f"20 % trimmed mean of {len(pairs[0][key].sums)} pair ratios (Yuen's interval); pooled "
                f"ratio {_f(pooled.value)} [{_f(pooled.low)}, {_f(pooled.high)}]")
    if diff.low is None and judged is None:
        note = (f"too few updates for an interval (at least {c.min_batches} batches of {c.min_batch} "
                f"per side, or 2 replicates{', in every file of a pair' if pairs else ''})")
    return Quantity(name, a, b, diff, tol, verdict, scale, note, units, lags, pooled)


def _tv_quantity(pred: Side, meas: Side, c: Criteria, pairs: Pairs | None = None) -> Quantity:
    a, b = (pred.units.get("hist"), meas.units.get("hist")) if pairs is None else \
        (pairs[0].get("hist"), pairs[1].get("hist"))
    raw = total_variation(pred.hist, meas.hist)
    none = eq.Estimate(None, math.inf, 0, None, None)
    if a is None or b is None:
        value = None if not math.isfinite(raw) else raw
        return Quantity("staleness_tv", none, none, eq.Estimate(value, math.inf, 0, None, None),
                        (0.0, c.tv_tol), eq.INCONCLUSIVE, "distance", "too few updates for an interval")
    tv = eq.tv_bootstrap(a, b, confidence=c.confidence, reps=c.bootstrap, paired=pairs is not None)
    verdict = eq.INCONCLUSIVE
    if tv.high is not None and tv.high <= c.tv_tol:
        verdict = eq.AGREE
    elif tv.low is not None and tv.low > c.tv_tol:
        verdict = eq.DIFFER
    est = eq.Estimate(tv.value, math.inf, 0, tv.low, tv.high)
    paired = f", over {a.n_groups} pairs" if pairs is not None else ""
    return Quantity("staleness_tv", none, none, est, (0.0, c.tv_tol), verdict, "distance",
                    f"raw TV {raw:.4g}, bootstrap bias {tv.extra.get('bias', 0.0):.3g}{paired}",
                    (a.batches, b.batches), (a.lag1, b.lag1))


@dataclass
class PairComparison:
    """Predicted (sim) against measured (runtime) for one :func:`pair_key`."""

    label: str
    algorithm: str
    threads: int
    persistence: str
    key: tuple[str, int, str, str, str]
    predicted_files: list[str]
    measured_files: list[str]
    replicates: tuple[int, int]
    hist_predicted: list[int]
    hist_measured: list[int]
    n: tuple[int, int]
    quantities: dict[str, Quantity]
    test: HomogeneityResult
    calibrated: bool
    criteria: Criteria = field(default_factory=Criteria)
    #: number of prediction/measurement pairs the differences were judged over; 0 = independent sides
    paired: int = 0

    def _values(self, name: str) -> tuple[float | None, float | None]:
        q = self.quantities.get(name)
        return (q.predicted.value, q.measured.value) if q else (None, None)

    @property
    def mean(self) -> tuple[float | None, float | None]:
        return self._values("staleness_mean")

    @property
    def dispersion(self) -> tuple[float | None, float | None]:
        return self._values("dispersion")

    @property
    def throughput(self) -> tuple[float | None, float | None]:
        return self._values("throughput")

    @property
    def cas_failure(self) -> tuple[float | None, float | None]:
        return self._values("cas_failure")

    @property
    def throughput_ratio(self) -> float | None:
        return self.quantities["throughput"].difference.value

    @property
    def tv(self) -> float:
        v = self.quantities["staleness_tv"].difference.value
        return math.nan if v is None else v

    @property
    def predicted_file(self) -> str | None:
        return ", ".join(self.predicted_files) or None

    @property
    def measured_file(self) -> str | None:
        return ", ".join(self.measured_files) or None

    @property
    def verdict(self) -> str:
        """``agree``, ``differ`` or ``inconclusive`` (module docstring)."""
        return eq.overall([q.verdict for q in self.quantities.values()])

    @property
    def consistent(self) -> bool:
        return self.verdict == eq.AGREE

    def detail(self) -> str:
        """The verdict with the quantities that decided it, e.g. ``differ: throughput ratio 1.5 ...``."""
        v = self.verdict
        if v == eq.AGREE:
            return v
        which = [q for q in self.quantities.values() if q.verdict == v]
        return f"{v}: " + "; ".join(q.describe() for q in which)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "label": self.label, "algorithm": self.algorithm, "threads": self.threads,
            "persistence": self.persistence, "sparsifier": self.key[3], "step_policy": self.key[4],
            "predicted_files": self.predicted_files, "measured_files": self.measured_files,
            "replicates": {"predicted": self.replicates[0], "measured": self.replicates[1]},
            "n": {"predicted": self.n[0], "measured": self.n[1]},
            "staleness_hist": {"predicted": self.hist_predicted, "measured": self.hist_measured},
            "calibrated": self.calibrated, "paired": self.paired,
            "quantities": {name: q.to_dict() for name, q in self.quantities.items()},
            "homogeneity_test": {"name": "chi-square homogeneity, pooled bins (expected >= 5); information "
                                         "only: assumes independent samples",
                                 "stat": self.test.stat, "dof": self.test.dof, "p_value": self.test.p_value,
                                 "bins": self.test.bins},
            "verdict": self.verdict, "detail": self.detail(),
        })


def compare_pair(predicted: Any | Sequence[Any], measured: Any | Sequence[Any], *,
                 criteria: Criteria | None = None, calibrated: bool | None = None,
                 files: tuple[Any, Any] = (None, None), paired: bool = False) -> PairComparison:
    """Compare the predicted and measured results of one setting (module docstring).

    Either side may be one RunResult or a list of replicates; ``files`` names them (a name or a list).
    ``paired``: ``predicted[k]`` was made together with ``measured[k]`` (same length, at least 2), and the
    differences are judged over the pairs (:func:`.equivalence.paired_difference`).
    """
    c = criteria or Criteria()
    preds = list(predicted) if isinstance(predicted, (list, tuple)) else [predicted]
    meas = list(measured) if isinstance(measured, (list, tuple)) else [measured]
    names = [f if isinstance(f, (list, tuple)) else ([] if f is None else [f]) for f in files]
    p_side, m_side = build_side(preds, names[0], c), build_side(meas, names[1], c)
    pairs: Pairs | None = None
    if paired:
        if len(preds) != len(meas) or len(preds) < 2:
            raise LeashedError(f"--paired needs as many predictions as measured runs of a setting, at "
                               f"least 2 of each; {preds[0].spec.label()} has {len(preds)} predicted and "
                               f"{len(meas)} measured")
        pairs = (paired_units(preds, c), paired_units(meas, c))
    if calibrated is None:
        calibrated = all(is_calibrated(r) for r in preds if r.source == "sim")
    first = meas[0]
    alg = algorithm_entry(first.spec.algorithm)
    quantities = {"throughput": _quantity("throughput", p_side, m_side, c, pairs=pairs,
                                          judged=None if calibrated else eq.NOT_JUDGED)}
    if alg.has_cas:
        quantities["cas_failure"] = _quantity("cas_failure", p_side, m_side, c, pairs=pairs)
    # τ ≡ 0: nothing else commits between a read and its commit (one thread), or by construction (sync:
    # Algorithm.zero_staleness)
    zero = first.spec.threads == 1 or alg.zero_staleness
    identity = alg.identity_holds(first.spec.persistence) or zero
    quantities["staleness_mean"] = _quantity("staleness_mean", p_side, m_side, c, pairs=pairs,
                                             judged=eq.IDENTITY if identity else None)
    quantities["dispersion"] = _quantity("dispersion", p_side, m_side, c, pairs=pairs,
                                         judged=eq.IDENTITY if zero else None)
    dispersion = quantities["dispersion"]
    if dispersion.verdict in (eq.AGREE, eq.DIFFER, eq.INCONCLUSIVE):
        n_eff = min(effective_tail_count(p_side.hist), effective_tail_count(m_side.hist))
        if n_eff < c.min_effective:
            dispersion.verdict = eq.INCONCLUSIVE
            dispersion.note = (f"not judged: Var τ rests on {n_eff:.0f} updates' worth of squared deviations "
                               f"(< {c.min_effective:g}), a few long stalls; give more or longer runs")
    quantities["staleness_tv"] = _tv_quantity(p_side, m_side, c, pairs)
    if p_side.n == 0 or m_side.n == 0:
        for q in quantities.values():
            if q.verdict not in (eq.IDENTITY, eq.NOT_JUDGED):
                q.verdict, q.note = eq.INCONCLUSIVE, "no committed updates on one side"
    hp, hm = _aligned(p_side.hist, m_side.hist)
    key = pair_key(first)
    return PairComparison(
        label=first.spec.label(), algorithm=key[0], threads=key[1], persistence=key[2], key=key,
        predicted_files=names[0], measured_files=names[1], replicates=(p_side.replicates, m_side.replicates),
        hist_predicted=[int(v) for v in hp], hist_measured=[int(v) for v in hm], n=(p_side.n, m_side.n),
        quantities=quantities, test=homogeneity_test(hp, hm), calibrated=bool(calibrated), criteria=c,
        paired=len(preds) if paired else 0)


# ---------------------------------------------------------------------------------------------- all pairs
@dataclass
class Comparison:
    """All pairs of a set of results, plus what could not be paired."""

    pairs: list[PairComparison]
    unpaired: list[str]
    criteria: Criteria

    @property
    def overall(self) -> str:
        """``agree``, ``differ`` or ``inconclusive`` over all pairs."""
        return eq.overall([p.verdict for p in self.pairs])

    @property
    def consistent(self) -> bool:
        return self.overall == eq.AGREE

    @property
    def verdict(self) -> str:
        v, n = self.overall, len(self.pairs)
        if v == eq.AGREE:
            return f"agree ({n} pair{'s' * (n != 1)})"
        which = [p for p in self.pairs if p.verdict == v]
        return f"{v}: {len(which)} of {n} pairs ({', '.join(p.label for p in which)})"

    def table(self) -> str:
        """A compact plain-text table, one row per pair, then the deciding quantities and the verdict."""
        from leashed.analysis.compare_plots import text_table

        return text_table(self)

    def to_dict(self) -> dict[str, Any]:
        c = self.criteria
        return json_safe({
            "format": COMPARE_FORMAT, "format_version": COMPARE_FORMAT_VERSION,
            "leashed_version": leashed_version(),
            "criteria": {**{k: getattr(c, k) for k in c.__dataclass_fields__}, "text": c.describe()},
            "verdict": self.overall, "detail": self.verdict,
            "pairs": [p.to_dict() for p in self.pairs], "unpaired": self.unpaired,
        })


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def compare_results(results: Sequence[Any], files: Sequence[str | None] | None = None, *,
                    criteria: Criteria | None = None, calibrated: bool | None = None,
                    paired: bool = False) -> Comparison:
    """Pair simulator with runtime results by :func:`pair_key` and compare every pair (replicates pooled;
    with ``paired``, the k-th simulator and the k-th runtime result of a key, in the given order, are a
    pair: :func:`compare_pair`)."""
    files = list(files) if files is not None else [None] * len(results)
    names = [str(f) if f is not None else f"#{i}" for i, f in enumerate(files)]
    sims: dict[tuple[str, int, str, str, str], list[int]] = {}
    runs: dict[tuple[str, int, str, str, str], list[int]] = {}
    for i, r in enumerate(results):
        (sims if r.source == "sim" else runs).setdefault(pair_key(r), []).append(i)
    if not sims or not runs:
        have = "simulator" if sims else "runtime" if runs else "no"
        raise LeashedError(f"compare needs simulator (predicted) and runtime (measured) results; "
                           f"only {have} results were given")
    both = set(sims) & set(runs)
    if not both:
        raise LeashedError("no simulator result has a runtime result with the same algorithm, threads, "
                           "persistence, sparsifier and step policy; simulate the specs that were run")
    pairs = []
    for key in sorted(both):
        i, j = sims[key], runs[key]
        pairs.append(compare_pair([results[k] for k in i], [results[k] for k in j], criteria=criteria,
                                  calibrated=calibrated, paired=paired,
                                  files=([names[k] for k in i], [names[k] for k in j])))
    unpaired = [f"{results[i].source} {results[i].spec.label()} ({names[i]})"
                for table in (sims, runs) for key, idx in table.items() if key not in both for i in idx]
    return Comparison(pairs=pairs, unpaired=unpaired, criteria=criteria or Criteria())


def write_comparison(comparison: Comparison, out_dir: str | os.PathLike[str], fmt: str = "png") -> list[Path]:
    """Figures of the comparison into an existing folder (:func:`.compare_plots.write_figures`)."""
    from leashed.interrupts import protected_import

    protected_import("leashed.analysis.plots")  # matplotlib only when drawing
    from leashed.analysis.compare_plots import write_figures

    return write_figures(comparison, Path(out_dir), fmt)
