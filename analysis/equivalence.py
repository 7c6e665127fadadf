"""Confidence intervals that respect autocorrelation, and equivalence verdicts (docs/analysis.md).

The updates of one run are not independent: a thread that failed its CAS tends to fail again, staleness
values of neighbouring commits are correlated (papers.md §4, §6.1). So no quantity is judged as if its
updates were independent draws. Instead:

* **Batch means over the commit sequence.** The updates of a run, in commit order, are cut into
  ``Criteria.batches`` (30) non-overlapping contiguous batches of at least ``Criteria.min_batch`` (20)
  updates. Each quantity is a smooth function of additive per-batch sums (e.g. failed and all CAS attempts),
  so its variance is the **delete-one-batch jackknife** over batches (the batch-means estimator of a ratio,
  by the delta method); the interval is a Student t interval with (batches − 1) degrees of freedom. If the
  lag-1 autocorrelation of the per-batch values exceeds ``Criteria.max_lag1`` (0.3) the batches are too
  short: adjacent pairs are merged (batches halved) and the check repeated, down to ``Criteria.min_batches``
  (10). Fewer than ``min_batches`` batches of ``min_batch`` updates: no interval (the quantity is
  inconclusive).
* **Replicates.** Several runs of one setting on one side (several files per pair key, or the simulator's
  ``extra["replicates"]``, one summary per seed) are groups of batches: the variance is the larger of the
  batch jackknife and the delete-one-*replicate* jackknife (between-replicate variance, df = replicates − 1),
  so a run-to-run spread the batches cannot see still widens the interval. Summary-only replicates are
  one unit each. Replicates of a calibrated prediction that each replay a resample of the calibration runs
  (``extra["replicates_resample_calibration"]``) estimate the spread of the prediction itself, which more
  replicates do not shrink: their variance is the between-replicate variance × (1 + 1/R), not / R.
* **Pairs.** With ``paired`` (``leashed compare --paired``), the k-th prediction and the k-th
  measurement of a setting were made together (a prediction calibrated from runs made just before or
  beside its measured run). Differences are then judged over pairs: the delete-one-pair jackknife of the
  difference (:func:`paired_difference`, df = pairs − 1) and, for the TV, a bootstrap that draws the same
  pairs on both sides. What a pair's members share, the machine's speed at the time, drops out; what is
  left is how far a prediction from that time's calibration misses that time's run. The pairs are
  assumed independent of each other. With at least ``Criteria.trimmed_pairs`` (10) pairs, throughput
  is judged on the **20 % trimmed mean** of the per-pair log ratios instead, with Yuen's interval
  (:func:`paired_trimmed_mean`): a run that met a slower host (on the 2-core VM, a few in 40 at
  0.55–0.80 of their round's speed) then moves it by a kept pair's worth, not by its size. The pooled
  ratio and its jackknife interval are still reported beside it.
* **Distribution.** The total-variation distance TV = ½ Σ |p_k − q_k| of the two staleness distributions,
  with a hierarchical block bootstrap (replicates, then batches within them, with replacement;
  ``Criteria.bootstrap`` resamples, seeded); the interval is the percentile interval shifted by the
  bootstrap's estimate of the upward bias of TV (an empirical TV is positive even for one distribution).

**Equivalence verdict** (TOST, two one-sided tests at level (1 − ``confidence``)/2 each, i.e. the
two-sided ``confidence`` (90 %) interval of the difference, predicted − measured): ``agree`` if the
interval lies entirely inside [−tol, +tol], ``differ`` if entirely outside, ``inconclusive`` otherwise
(TV: ``agree`` if the interval's upper end ≤ tol, ``differ`` if its lower end > tol).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

AGREE, DIFFER, INCONCLUSIVE = "agree", "differ", "inconclusive"
#: verdict words that do not count towards the overall verdict
IDENTITY, NOT_JUDGED = "identity", "not judged"


@dataclass
class Units:
    """Additive sufficient statistics of one side of one quantity: one row per unit (batch or replicate).

    ``sums[u]`` are the unit's sums (e.g. failed attempts, attempts); ``group[u]`` the replicate the unit
    belongs to; ``lag1`` the lag-1 autocorrelation of the per-batch values after merging (None for
    summary-only replicates).
    """

    sums: np.ndarray
    group: np.ndarray
    lag1: float | None = None
    batches: int = 0
    #: the variance of the estimate times this: R + 1 for R simulator replicates that each resample the
    #: calibration runs (their spread is the prediction's own uncertainty, not noise that averages away)
    variance_factor: float = 1.0

    @property
    def n_units(self) -> int:
        return int(len(self.sums))

    @property
    def n_groups(self) -> int:
        return int(len(np.unique(self.group))) if len(self.group) else 0


def batch_sums(per_update: np.ndarray, n_batches: int) -> np.ndarray:
    """Sums of contiguous non-overlapping batches of equal size (the remainder at the end is dropped)."""
    size = len(per_update) // n_batches
    used = per_update[: size * n_batches]
    return used.reshape(n_batches, size, *per_update.shape[1:]).sum(axis=1)


def lag1_autocorrelation(values: np.ndarray) -> float:
    """Lag-1 sample autocorrelation of a series (0 for a constant or too short series)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return 0.0
    d = x - x.mean()
    den = float(d @ d)
    return float(d[:-1] @ d[1:]) / den if den > 0 else 0.0


def make_batches(per_update: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], *, batches: int = 30,
                 min_batches: int = 10, min_batch: int = 20, max_lag1: float = 0.3) -> np.ndarray | None:
    """Per-batch sums of ``per_update`` rows (commit order), merged while batch values are autocorrelated.

    ``statistic`` maps an array of batch sums to the per-batch value whose lag-1 autocorrelation is
    checked. Returns None when fewer than ``min_batches`` batches of ``min_batch`` updates fit.
    """
    n = len(per_update)
    b = min(batches, n // min_batch)
    if b < min_batches:
        return None
    sums = batch_sums(per_update, b)
    while len(sums) >= 2 * min_batches and lag1_autocorrelation(statistic(sums)) > max_lag1:
        half = len(sums) // 2
        sums = sums[: 2 * half].reshape(half, 2, *sums.shape[1:]).sum(axis=1)
    return sums


def jackknife(units: Units, estimator: Callable[[np.ndarray], float]) -> tuple[float, float, int]:
    """(estimate, standard error, degrees of freedom) of ``estimator(total sums)`` (module docstring).

    Delete-one-unit jackknife; with several groups also delete-one-group, and the larger variance wins.
    """
    total = units.sums.sum(axis=0)
    est = float(estimator(total))
    k = units.n_units
    if k < 2 or not math.isfinite(est):
        return est, math.inf, 0

    def jack(parts: list[np.ndarray]) -> float:
        vals = np.array([estimator(total - p) for p in parts], dtype=np.float64)
        if not np.all(np.isfinite(vals)):
            return math.inf
        g = len(vals)
        return float((g - 1) / g * ((vals - vals.mean()) ** 2).sum())

    var, df = jack(list(units.sums)), k - 1
    groups = np.unique(units.group)
    if 2 <= len(groups) < k:
        var_g = jack([units.sums[units.group == g].sum(axis=0) for g in groups])
        if var_g > var:
            var, df = var_g, len(groups) - 1
    return est, math.sqrt(var * units.variance_factor), df


@dataclass
class Estimate:
    """A point estimate with its standard error, degrees of freedom and ``confidence`` interval."""

    value: float | None
    se: float
    df: int
    low: float | None
    high: float | None

    @classmethod
    def make(cls, value: float | None, se: float, df: int, confidence: float) -> Estimate:
        if value is None or not math.isfinite(value):
            return cls(None, math.inf, 0, None, None)
        if df < 1 or not math.isfinite(se):
            return cls(value, math.inf, df, None, None)
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
        return cls(value, se, df, value - half, value + half)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "se": self.se if math.isfinite(self.se) else None, "df": self.df,
                "interval": [self.low, self.high]}


def welch_df(se_a: float, df_a: int, se_b: float, df_b: int) -> int:
    """Welch–Satterthwaite degrees of freedom of a difference of two independent estimates."""
    va, vb = se_a ** 2, se_b ** 2
    den = (va ** 2 / df_a if df_a > 0 else 0.0) + (vb ** 2 / df_b if df_b > 0 else 0.0)
    if den <= 0:
        return max(min(df_a, df_b), 1)
    return max(int((va + vb) ** 2 / den), 1)


def difference(a: Estimate, b: Estimate, confidence: float) -> Estimate:
    """The ``confidence`` interval of a − b (independent sides, Welch df)."""
    if a.value is None or b.value is None:
        return Estimate(None, math.inf, 0, None, None)
    if not (math.isfinite(a.se) and math.isfinite(b.se)) or a.df < 1 or b.df < 1:
        return Estimate(a.value - b.value, math.inf, 0, None, None)
    se = math.hypot(a.se, b.se)
    return Estimate.make(a.value - b.value, se, welch_df(a.se, a.df, b.se, b.df), confidence)


def paired_difference(a: Units, b: Units, estimator: Callable[[np.ndarray], float],
                      confidence: float) -> Estimate:
    """The ``confidence`` interval of ``estimator(Σ a) − estimator(Σ b)`` over *paired* units.

    ``a.sums[i]`` and ``b.sums[i]`` are the totals of pair i (a prediction and the measured run it was made
    beside, e.g. calibrated from runs made just before it). Delete-one-*pair* jackknife: removing pair i
    from both sides at once keeps what the two members share (the machine's state at that time) out of the
    variance, which is then that of the paired differences; Student t with (pairs − 1) degrees of freedom.
    """
    n = len(a.sums)
    if n != len(b.sums):
        raise ValueError(f"paired units need as many pairs on each side, not {n} and {len(b.sums)}")
    ta, tb = a.sums.sum(axis=0), b.sums.sum(axis=0)
    est = float(estimator(ta)) - float(estimator(tb))
    if n < 2 or not math.isfinite(est):
        return Estimate(est if math.isfinite(est) else None, math.inf, 0, None, None)
    vals = np.array([float(estimator(ta - pa)) - float(estimator(tb - pb))
                     for pa, pb in zip(a.sums, b.sums, strict=True)])
    if not np.all(np.isfinite(vals)):
        return Estimate(est, math.inf, 0, None, None)
    var = float((n - 1) / n * ((vals - vals.mean()) ** 2).sum())
    return Estimate.make(est, math.sqrt(var), n - 1, confidence)


def paired_trimmed_mean(a: Units, b: Units, estimator: Callable[[np.ndarray], float], confidence: float,
                        trim: float = 0.2) -> Estimate:
    """The ``trim``-trimmed mean over pairs of ``estimator(a_i) − estimator(b_i)``, with Yuen's interval.

    Pair i's difference d_i is computed from that pair's own totals. The ⌊trim·n⌋ smallest and largest
    d_i are set aside and the rest averaged; the standard error comes from the winsorized variance
    (Tukey and McLaughlin 1963, Yuen 1974): se = sqrt(Σ (w_i − w̄)² / (h (h − 1))), w the d_i with the
    trimmed ones replaced by the nearest kept value, h = n − 2⌊trim·n⌋ kept pairs, and the interval is
    Student t with h − 1 degrees of freedom. It assumes the pairs are independent and the bulk of the
    d_i roughly symmetric; up to ``trim`` of the pairs on either side (a run that met a slower host) move
    it by a kept value's worth, not by their size."""
    n = len(a.sums)
    if n != len(b.sums):
        raise ValueError(f"paired units need as many pairs on each side, not {n} and {len(b.sums)}")
    d = np.sort([float(estimator(pa)) - float(estimator(pb)) for pa, pb in zip(a.sums, b.sums, strict=True)])
    if n == 0 or not np.all(np.isfinite(d)):
        return Estimate(None, math.inf, 0, None, None)
    g = int(math.floor(trim * n))
    kept = n - 2 * g
    est = float(d[g:n - g].mean())
    if kept < 2:
        return Estimate(est, math.inf, 0, None, None)
    w = np.clip(d, d[g], d[n - g - 1])
    se = math.sqrt(float(((w - w.mean()) ** 2).sum()) / (kept * (kept - 1)))
    return Estimate.make(est, se, kept - 1, confidence)


def equivalence(low: float | None, high: float | None, tol_low: float, tol_high: float) -> str:
    """``agree`` if [low, high] ⊂ [tol_low, tol_high], ``differ`` if disjoint, else ``inconclusive``."""
    if low is None or high is None:
        return INCONCLUSIVE
    if tol_low <= low and high <= tol_high:
        return AGREE
    if low > tol_high or high < tol_low:
        return DIFFER
    return INCONCLUSIVE


def overall(verdicts: Sequence[str]) -> str:
    """``differ`` if any differs, ``agree`` if all judged ones agree, else ``inconclusive``."""
    judged = [v for v in verdicts if v in (AGREE, DIFFER, INCONCLUSIVE)]
    if DIFFER in judged:
        return DIFFER
    if judged and all(v == AGREE for v in judged):
        return AGREE
    return INCONCLUSIVE


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a.sum(), b.sum()
    if sa <= 0 or sb <= 0:
        return math.nan
    return float(0.5 * np.abs(a / sa - b / sb).sum())


def _resample(units: Units, rng: np.random.Generator, reps: int,
              draws: np.ndarray | None = None) -> np.ndarray:
    """``reps`` hierarchical bootstrap totals (groups, then units within each group) of ``units.sums``;
    ``draws[r]``, if given, are the groups of resample r (shared with the other side of a paired design)."""
    groups = [units.sums[units.group == g] for g in np.unique(units.group)]
    out = np.zeros((reps, units.sums.shape[1]))
    for r in range(reps):
        chosen = draws[r] if draws is not None else rng.integers(0, len(groups), len(groups))
        for gi in chosen:
            g = groups[gi]
            out[r] += g[rng.integers(0, len(g), len(g))].sum(axis=0)
    return out


@dataclass
class TVEstimate:
    """TV of two staleness histograms: the raw value, bias-corrected value and bootstrap interval."""

    raw: float
    value: float | None
    low: float | None
    high: float | None
    reps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"raw": self.raw, "value": self.value, "interval": [self.low, self.high],
                "bootstrap_resamples": self.reps}


def tv_bootstrap(a: Units, b: Units, *, confidence: float, reps: int, seed: int = 0,
                 min_units: int = 2, paired: bool = False) -> TVEstimate:
    """TV of the pooled histograms of two sides with its bias-shifted percentile bootstrap interval.

    ``paired``: group g of ``a`` and group g of ``b`` are one pair (:func:`paired_difference`); each
    resample draws pairs, the same ones on both sides, then units within each member.
    """
    width = max(a.sums.shape[1], b.sums.shape[1])
    pa = np.pad(a.sums, ((0, 0), (0, width - a.sums.shape[1])))
    pb = np.pad(b.sums, ((0, 0), (0, width - b.sums.shape[1])))
    raw = _tv(pa.sum(axis=0), pb.sum(axis=0))
    if not math.isfinite(raw) or a.n_units < min_units or b.n_units < min_units:
        return TVEstimate(raw, None if not math.isfinite(raw) else raw, None, None)
    rng = np.random.default_rng(seed)
    draws = None
    if paired:
        n = a.n_groups
        if n != b.n_groups:
            raise ValueError(f"paired units need as many pairs on each side, not {n} and {b.n_groups}")
        draws = rng.integers(0, n, (reps, n))
    ta = _resample(Units(pa, a.group), rng, reps, draws)
    tb = _resample(Units(pb, b.group), rng, reps, draws)
    boot = np.array([_tv(x, y) for x, y in zip(ta, tb, strict=True)])
    boot = boot[np.isfinite(boot)]
    bias = float(boot.mean() - raw)
    lo, hi = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    clip = lambda v: float(min(max(v, 0.0), 1.0))  # noqa: E731
    value = clip(raw - bias)
    return TVEstimate(raw, value, min(clip(lo - bias), value), max(clip(hi - bias), value), reps=len(boot),
                      extra={"bias": bias})
