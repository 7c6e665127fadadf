"""Staleness models and their maximum-likelihood fits (papers.md §4, Table 1b).

Models of the staleness τ ∈ {0, 1, 2, ...} of committed updates (papers.md §1, §4):

============  ===============================================  ==========================
model         P(τ = k)                                         parameters
============  ===============================================  ==========================
poisson       e^{−λ} λ^k / k!                                  λ ≥ 0
geometric     q (1 − q)^k                                      0 < q ≤ 1
cmp           λ^k / ((k!)^ν Z(λ, ν)),  Z = Σ_j λ^j / (j!)^ν    λ > 0, ν ≥ 0 (λ < 1 if ν = 0)
negbin        Γ(k + r) / (Γ(r) k!) · p^r (1 − p)^k             r > 0, 0 < p ≤ 1
empirical     h_k / N                                          the histogram itself
============  ===============================================  ==========================

Conway–Maxwell–Poisson (CMP) nests both one-parameter models (papers.md §4, "Nesting"): ν = 1 is
Poisson(λ); ν = 0 with λ < 1 is Geometric(q = 1 − λ). ``negbin`` uses scipy's ``nbinom(n=r, p)``
convention (mean r(1−p)/p) and tends to Poisson as r → ∞.

**CMP normaliser.** Z(λ, ν) is summed in log space (``logsumexp`` of j·log λ − ν·log j!) up to a
truncation index K chosen adaptively (:func:`cmp_log_normaliser`). *Error bound*: the term ratio
a_{j+1}/a_j = λ/(j+1)^ν does not increase with j (ν ≥ 0), so once ρ = λ/(K+1)^ν < 1 every later term is
at most a_K·ρ^{j−K} and the neglected tail obeys

    0 ≤ Z − Z_K ≤ a_K · ρ / (1 − ρ),    δ := a_K ρ / ((1 − ρ) Z_K),

hence log Z − log Z_K ∈ [0, log(1 + δ)] ⊂ [0, δ], every probability computed with Z_K is too large by a
factor of at most 1 + δ, and the probability mass beyond K is at most δ. K grows (starting at
max(largest observed τ, mode + 20·sd), the paper's "mean + 20 sd") until δ ≤ 1e-12; δ is stored in each
fit (``truncation_error``).

**Fitting recipe** (papers.md §4): Poisson and geometric by moment matching (these *are* the MLEs);
CMP by maximising ℓ = log λ·Σk_i − ν·Σ log k_i! − N·log Z over (log λ, log ν) from λ = mean, ν = 1 with a
Newton-type trust-region method (analytic gradient and Hessian: CMP is an exponential family in
(log λ, −ν) with sufficient statistics (k, log k!)), compared with the exact geometric limit ν = 0, so the
CMP fit is never worse than either nested model; the negative binomial by profiling p̂(r) = r/(r + mean)
and a bounded search over log r. Standard errors come from the observed Fisher information (the
analytic Hessian of −ℓ at the optimum; for CMP it equals N·Cov[(k, log k!)] in natural parameters,
mapped to (λ, ν) by the delta method). Models are ranked by AIC = 2k + 2·NLL (k fitted parameters) and
checked with a χ² goodness-of-fit test on bins pooled so that every expected count is at least 5
(:func:`chi2_gof`). With very large samples (10^6 updates) the χ² test rejects every parametric model:
read it together with the NLL per sample.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize, special, stats

from leashed.analysis._io import leashed_version
from leashed.errors import LeashedError

FIT_MODELS = ("poisson", "geometric", "cmp", "negbin", "empirical")
DEFAULT_MODELS = ("poisson", "geometric", "cmp", "negbin")
PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "poisson": ("lam",), "geometric": ("q",), "cmp": ("lam", "nu"), "negbin": ("r", "p"), "empirical": (),
}
#: target relative truncation error δ of the CMP normaliser (module docstring)
CMP_EPS = 1e-12
#: largest truncation index K the CMP normaliser may use
CMP_K_CAP = 200_000
#: the negative binomial's log r search interval; r at the upper end is the Poisson limit
_NB_LOG_R = (-12.0, 25.0)
#: CMP fits with ν̂ below this are reported at the geometric limit ν = 0
_NU_FLOOR = 1e-9

_LOGFACT = np.zeros(1)


def log_factorials(k_max: int) -> np.ndarray:
    """log k! for k = 0..k_max (cached, read-only)."""
    global _LOGFACT
    if len(_LOGFACT) <= k_max:
        size = max(k_max + 1, 2 * len(_LOGFACT), 1024)
        table = special.gammaln(np.arange(size, dtype=np.float64) + 1.0)
        table.setflags(write=False)
        _LOGFACT = table
    return _LOGFACT[: k_max + 1]


# ==================================================================== CMP normaliser
class CMPNormaliser(NamedTuple):
    """log Z(λ, ν) truncated at K, with the bound δ on the relative error (module docstring)."""

    log_z: float
    k: int
    rel_error: float


def _cmp_log_terms(log_lam: float, nu: float, *, eps: float = CMP_EPS, k_min: int = 0,
                   k_cap: int = CMP_K_CAP) -> tuple[np.ndarray, float, float]:
    """Log terms j·log λ − ν·log j! for j = 0..K, log Z_K and the relative tail bound δ."""
    if not nu >= 0:
        raise ValueError(f"CMP needs nu >= 0, got {nu}")
    if log_lam == -math.inf:  # λ = 0: all mass at 0
        return np.zeros(1), 0.0, 0.0
    if nu == 0 and log_lam >= 0:  # geometric series with ratio λ ≥ 1 diverges
        return np.zeros(1), math.inf, math.inf
    k = 64.0
    if nu > 0 and log_lam > 0:  # mode ≈ λ^{1/ν} ≥ 1, variance ≈ mode/ν: start at mode + 20 sd
        mode = math.exp(min(log_lam / nu, math.log(k_cap)))
        k = mode + 20.0 * math.sqrt(mode / nu)
    k_now = int(min(k_cap, max(k_min, 32, math.ceil(min(k, 1e9)))))
    while True:
        j = np.arange(k_now + 1, dtype=np.float64)
        terms = j * log_lam - nu * log_factorials(k_now)
        log_z = float(special.logsumexp(terms))
        log_rho = log_lam - nu * math.log(k_now + 1.0)
        if log_rho < 0:
            rho = math.exp(log_rho)
            log_rel = float(terms[-1]) - log_z + log_rho - math.log1p(-rho)
            if log_rel <= math.log(eps) or k_now >= k_cap:
                return terms, log_z, math.exp(min(log_rel, 700.0))
            k_next = 2 * k_now
        else:
            if k_now >= k_cap:
                return terms, log_z, math.inf
            # jump to where ρ ≤ 1/2: (K+1)^ν ≥ 2λ
            need = (log_lam + math.log(2.0)) / nu
            k_next = int(math.ceil(math.exp(min(need, math.log(k_cap) + 1.0))))
        k_now = int(min(k_cap, max(2 * k_now, k_next)))


def cmp_log_normaliser(lam: float, nu: float, *, log_lam: float | None = None,
                       eps: float = CMP_EPS) -> CMPNormaliser:
    """log Z(λ, ν) of the CMP distribution, summed stably in log space (papers.md §4).

    Pass ``log_lam`` instead of ``lam`` for rates beyond float range. Returns the truncation index K and
    δ, the proven bound on the relative error of Z_K (module docstring): log Z ∈ [log Z_K, log Z_K + δ].
    ``log_z`` is ``inf`` where Z diverges (ν = 0, λ ≥ 1) or the bound cannot be met below K = 200 000.
    """
    if log_lam is None:
        log_lam = math.log(lam) if lam > 0 else -math.inf
    terms, log_z, rel = _cmp_log_terms(log_lam, float(nu), eps=eps)
    return CMPNormaliser(log_z, len(terms) - 1, rel)


# ==================================================================== the fit object
def _nan() -> float:
    return math.nan


@dataclass(frozen=True)
class StalenessFit:
    """One fitted staleness model (papers.md §4). Serialises with :meth:`to_dict` / :meth:`from_dict`.

    ``params`` are in the order of ``PARAM_NAMES[model]`` (``empirical``: the pmf p_0..p_K); ``se`` their
    standard errors (observed Fisher information; NaN where undefined, e.g. at a boundary).
    ``loglik`` is the total log-likelihood of the ``n`` committed updates; ``chi2*`` the pooled-bin
    goodness-of-fit test (:func:`chi2_gof`); ``at_boundary`` marks an MLE on the edge of the parameter
    space (CMP ν̂ = 0, the geometric limit; negbin r̂ → ∞, the Poisson limit; a single observed value);
    ``truncation``/``truncation_error`` are the CMP normaliser's K and δ.
    """

    model: str
    params: tuple[float, ...]
    se: tuple[float, ...]
    n: int
    loglik: float
    n_params: int
    chi2: float = field(default_factory=_nan)
    chi2_dof: int = 0
    chi2_p: float = field(default_factory=_nan)
    chi2_bins: int = 0
    at_boundary: bool = False
    truncation: int | None = None
    truncation_error: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.model not in FIT_MODELS:
            raise ValueError(f"unknown staleness model {self.model!r}; choose from {', '.join(FIT_MODELS)}")
        object.__setattr__(self, "params", tuple(float(v) for v in self.params))
        object.__setattr__(self, "se", tuple(float(v) for v in self.se))
        names = PARAM_NAMES[self.model]
        if names and len(self.params) != len(names):
            raise ValueError(f"{self.model} takes parameters {names}, got {self.params}")

    # ------------------------------------------------------------ derived numbers
    @property
    def param_names(self) -> tuple[str, ...]:
        return PARAM_NAMES[self.model] or tuple(f"p{k}" for k in range(len(self.params)))

    @property
    def param_dict(self) -> dict[str, float]:
        return dict(zip(self.param_names, self.params, strict=True))

    @property
    def aic(self) -> float:
        """AIC = 2k + 2·NLL (papers.md §4, recipe step 3)."""
        return 2.0 * self.n_params - 2.0 * self.loglik

    @property
    def nll_per_sample(self) -> float:
        """Mean negative log-likelihood per committed update (papers.md Table 1b)."""
        return -self.loglik / self.n if self.n else math.nan

    @cached_property
    def _cmp(self) -> tuple[float, float, float, int, float]:
        """(log λ, ν, log Z, K, δ) of a CMP fit."""
        lam, nu = self.params
        log_lam = math.log(lam) if lam > 0 else -math.inf
        terms, log_z, rel = _cmp_log_terms(log_lam, nu)
        return log_lam, nu, log_z, len(terms) - 1, rel

    def logpmf(self, k: Any) -> Any:
        """log P(τ = k) for integer k ≥ 0 (array or scalar); -inf outside the support."""
        karr = np.asarray(k)
        kf = karr.astype(np.float64)
        valid = (kf >= 0) & (kf == np.floor(kf))
        kk = np.where(valid, kf, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.model == "poisson":
                out = stats.poisson.logpmf(kk, self.params[0])
            elif self.model == "geometric":
                q = self.params[0]
                out = math.log(q) + kk * (math.log1p(-q) if q < 1 else -math.inf)
                out = np.where(kk == 0, math.log(q), out)
            elif self.model == "negbin":
                out = stats.nbinom.logpmf(kk, self.params[0], self.params[1])
            elif self.model == "cmp":
                log_lam, nu, log_z, _, _ = self._cmp
                if log_lam == -math.inf:
                    out = np.where(kk == 0, 0.0, -math.inf)
                else:
                    out = kk * log_lam - nu * special.gammaln(kk + 1.0) - log_z
            else:
                pmf = np.asarray(self.params)
                idx = kk.astype(np.int64)
                inside = idx < len(pmf)
                out = np.where(inside, np.log(pmf[np.minimum(idx, len(pmf) - 1)]), -math.inf)
        out = np.where(valid, out, -math.inf)
        return float(out) if np.ndim(out) == 0 else out

    def pmf(self, k: Any) -> Any:
        """P(τ = k) (array or scalar)."""
        out = np.exp(self.logpmf(k))
        return float(out) if np.ndim(out) == 0 else out

    def support_bound(self, tail: float = 1e-12, k_cap: int = CMP_K_CAP) -> int:
        """Smallest K with P(τ > K) ≤ ``tail`` (at most ``k_cap``)."""
        if self.model == "empirical":
            return len(self.params) - 1
        if self.model == "poisson":
            return int(min(k_cap, stats.poisson.isf(tail, self.params[0]) if self.params[0] > 0 else 0))
        if self.model == "geometric":
            q = self.params[0]
            return 0 if q >= 1 else int(min(k_cap, math.ceil(math.log(tail) / math.log1p(-q))))
        if self.model == "negbin":
            return int(min(k_cap, stats.nbinom.isf(tail, self.params[0], self.params[1])))
        _, _, _, k, _ = self._cmp
        p = self.pmf(np.arange(k + 1))
        above = 1.0 - np.cumsum(p)
        hit = np.nonzero(above <= tail)[0]
        return int(hit[0]) if len(hit) else k

    def pmf_array(self, k_max: int | None = None) -> np.ndarray:
        """P(τ = k) for k = 0..k_max (default: :meth:`support_bound`)."""
        k_max = self.support_bound() if k_max is None else int(k_max)
        return np.asarray(self.pmf(np.arange(k_max + 1)), dtype=np.float64)

    @cached_property
    def _moments(self) -> tuple[float, float]:
        lam = self.params[0] if self.params else math.nan
        if self.model == "poisson":
            return lam, lam
        if self.model == "geometric":
            q = self.params[0]
            return (1 - q) / q, (1 - q) / q**2
        if self.model == "negbin":
            r, p = self.params
            return r * (1 - p) / p, r * (1 - p) / p**2
        k_max = len(self.params) - 1 if self.model == "empirical" else self._cmp[3]
        p = self.pmf_array(k_max)
        k = np.arange(len(p), dtype=np.float64)
        p = p / p.sum()
        mean = float(p @ k)
        return mean, float(p @ (k - mean) ** 2)

    @property
    def mean(self) -> float:
        """E[τ] under the fitted model."""
        return self._moments[0]

    @property
    def var(self) -> float:
        """Var τ under the fitted model."""
        return self._moments[1]

    def sample(self, size: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Draw ``size`` values of τ (inverse CDF on the support up to P(τ > K) ≤ 1e-13)."""
        rng = np.random.default_rng(rng)
        p = self.pmf_array(self.support_bound(1e-13))
        return rng.choice(len(p), size=size, p=p / p.sum()).astype(np.int64)

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN/inf become None); inverse of :meth:`from_dict`."""
        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        if self.model == "empirical":
            params: dict[str, Any] = {"pmf": [float(v) for v in self.params]}
            se: dict[str, Any] = {"pmf": [num(v) for v in self.se]}
        else:
            params = {k: num(v) for k, v in zip(self.param_names, self.params, strict=True)}
            se = {k: num(v) for k, v in zip(self.param_names, self.se, strict=True)}
        return {
            "model": self.model, "params": params, "se": se, "n": self.n, "loglik": num(self.loglik),
            "n_params": self.n_params, "nll_per_sample": num(self.nll_per_sample), "aic": num(self.aic),
            "mean": num(self.mean), "var": num(self.var),
            "chi2": num(self.chi2), "chi2_dof": self.chi2_dof, "chi2_p": num(self.chi2_p),
            "chi2_bins": self.chi2_bins, "at_boundary": self.at_boundary, "truncation": self.truncation,
            "truncation_error": num(self.truncation_error), "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StalenessFit:
        """Rebuild a fit from :meth:`to_dict` output (derived keys such as ``aic`` are recomputed)."""
        def num(x: Any) -> float:
            return math.nan if x is None else float(x)

        try:
            model = data["model"]
            if model == "empirical":
                params = tuple(num(v) for v in data["params"]["pmf"])
                se = tuple(num(v) for v in data["se"]["pmf"])
            else:
                names = PARAM_NAMES[model]
                params = tuple(num(data["params"][k]) for k in names)
                se = tuple(num((data.get("se") or {}).get(k)) for k in names)
            return cls(model=model, params=params, se=se, n=int(data["n"]), loglik=num(data["loglik"]),
                       n_params=int(data["n_params"]), chi2=num(data.get("chi2")),
                       chi2_dof=int(data.get("chi2_dof") or 0), chi2_p=num(data.get("chi2_p")),
                       chi2_bins=int(data.get("chi2_bins") or 0),
                       at_boundary=bool(data.get("at_boundary", False)), truncation=data.get("truncation"),
                       truncation_error=data.get("truncation_error"), note=str(data.get("note", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise LeashedError(f"not a staleness fit record ({type(exc).__name__}: {exc})") from None

    def describe(self) -> str:
        """``lam=3.02±0.01, nu=0.98±0.02``."""
        if self.model == "empirical":
            return f"pmf over 0..{len(self.params) - 1}"
        parts = []
        for name, value, err in zip(self.param_names, self.params, self.se, strict=True):
            parts.append(f"{name}={_fmt(value)}" + (f"±{_fmt(err)}" if math.isfinite(err) else ""))
        return ", ".join(parts)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


# ==================================================================== data handling
def as_histogram(data: Any) -> np.ndarray:
    """Counts indexed by τ from a histogram (1-d counts), a RunResult, or a mapping τ → count."""
    if hasattr(data, "staleness_histogram"):
        data = data.staleness_histogram
    if isinstance(data, Mapping):
        keys = [int(k) for k in data]
        counts = np.zeros(max(keys) + 1 if keys else 0, dtype=np.int64)
        for k, v in data.items():
            counts[int(k)] += int(v)
        data = counts
    counts = np.asarray(data)
    if counts.ndim != 1:
        raise LeashedError(f"a staleness histogram is a 1-d list of counts, got shape {counts.shape}")
    if len(counts) and (np.any(counts < 0) or np.any(counts != np.round(counts))):
        raise LeashedError("a staleness histogram holds non-negative whole counts")
    counts = counts.astype(np.int64)
    nz = np.nonzero(counts)[0]
    return counts[: nz[-1] + 1] if len(nz) else counts[:0]


def histogram_from_samples(tau: Iterable[int]) -> np.ndarray:
    """Counts indexed by τ from raw staleness values."""
    arr = np.asarray(list(tau) if not isinstance(tau, np.ndarray) else tau, dtype=np.int64)
    if len(arr) and arr.min() < 0:
        raise LeashedError("staleness values must be non-negative")
    return np.bincount(arr) if len(arr) else np.zeros(0, np.int64)


class _Data(NamedTuple):
    counts: np.ndarray
    k: np.ndarray
    n: int
    sum_k: float
    mean: float
    var: float
    sum_lf: float


def _prepare(counts: Any) -> _Data:
    h = as_histogram(counts)
    n = int(h.sum())
    if n == 0:
        raise LeashedError("no committed updates to fit a staleness model to")
    k = np.arange(len(h), dtype=np.float64)
    sum_k = float(h @ k)
    mean = sum_k / n
    if mean == 0:
        raise LeashedError("every committed update has staleness 0 (sequential or synchronous run?): "
                           "there is no staleness distribution to fit")
    var = float(h @ (k - mean) ** 2) / n
    return _Data(h, k, n, sum_k, mean, var, float(h @ log_factorials(len(h) - 1)))


# ==================================================================== goodness of fit
class Chi2Result(NamedTuple):
    stat: float
    dof: int
    p_value: float
    bins: int


def pool_bins(expected: np.ndarray, tail_expected: float, min_expected: float = 5.0) -> list[tuple[int, int]]:
    """Contiguous bins [lo, hi] over 0..K whose expected counts are all ≥ ``min_expected``.

    A bin closes once it expects ``min_expected`` and everything after it (the tail beyond K included)
    still does; the last bin takes the rest and the tail; if even that falls short it joins its neighbour.
    """
    k_max = len(expected) - 1
    rest = np.concatenate([np.cumsum(expected[::-1])[::-1], [0.0]]) + tail_expected
    bins: list[tuple[int, int]] = []
    lo, acc = 0, 0.0
    for k in range(k_max + 1):
        acc += expected[k]
        if acc >= min_expected and rest[k + 1] >= min_expected and k < k_max:
            bins.append((lo, k))
            lo, acc = k + 1, 0.0
    bins.append((lo, k_max))
    if len(bins) > 1 and acc + tail_expected < min_expected:
        last = bins.pop()
        bins[-1] = (bins[-1][0], last[1])
    return bins


def chi2_gof(counts: Any, pmf: np.ndarray, n_fitted: int, min_expected: float = 5.0) -> Chi2Result:
    """Pearson χ² goodness of fit of ``counts`` to the model probabilities ``pmf`` (papers.md §4, step 3).

    ``pmf[k]`` = P(τ = k) for k = 0..len(counts)−1; the model's remaining mass P(τ ≥ len(counts)) forms
    the upper tail of the last bin (observed 0 there). Bins are pooled by :func:`pool_bins`; the degrees
    of freedom are bins − 1 − ``n_fitted``, and the p-value is NaN when they are not positive.
    """
    h = as_histogram(counts)
    n = int(h.sum())
    p = np.asarray(pmf, dtype=np.float64)[: len(h)]
    if len(p) < len(h):
        p = np.concatenate([p, np.zeros(len(h) - len(p))])
    expected = n * p
    tail = max(0.0, n * (1.0 - float(p.sum())))
    bins = pool_bins(expected, tail, min_expected)
    stat = 0.0
    for i, (lo, hi) in enumerate(bins):
        o = float(h[lo: hi + 1].sum())
        e = float(expected[lo: hi + 1].sum()) + (tail if i == len(bins) - 1 else 0.0)
        if e > 0:
            stat += (o - e) ** 2 / e
        elif o > 0:
            stat = math.inf
    dof = len(bins) - 1 - n_fitted
    pval = float(stats.chi2.sf(stat, dof)) if dof > 0 else math.nan
    return Chi2Result(float(stat), int(dof), pval, len(bins))


def _finish(model: str, params: Sequence[float], se: Sequence[float], data: _Data, loglik: float,
            n_params: int, **extra: Any) -> StalenessFit:
    fit = StalenessFit(model=model, params=tuple(params), se=tuple(se), n=data.n, loglik=float(loglik),
                       n_params=n_params, **extra)
    pmf = fit.pmf_array(len(data.counts) - 1)
    gof = chi2_gof(data.counts, pmf, n_params if model != "empirical" else len(data.counts) - 1)
    return StalenessFit(model=model, params=fit.params, se=fit.se, n=data.n, loglik=float(loglik),
                        n_params=n_params, chi2=gof.stat, chi2_dof=gof.dof, chi2_p=gof.p_value,
                        chi2_bins=gof.bins, **extra)


# ==================================================================== the fits
def _fit_poisson(d: _Data) -> StalenessFit:
    lam = d.mean
    ll = d.sum_k * math.log(lam) - d.n * lam - d.sum_lf
    return _finish("poisson", [lam], [math.sqrt(lam / d.n)], d, ll, 1)


def _fit_geometric(d: _Data) -> StalenessFit:
    q = 1.0 / (1.0 + d.mean)
    ll = d.n * math.log(q) + d.sum_k * math.log1p(-q)
    info = d.n / q**2 + d.sum_k / (1.0 - q) ** 2  # −ℓ''(q)
    return _finish("geometric", [q], [1.0 / math.sqrt(info)], d, ll, 1)


def _fit_empirical(d: _Data) -> StalenessFit:
    p = d.counts / d.n
    with np.errstate(divide="ignore"):
        ll = float(d.counts[d.counts > 0] @ np.log(p[d.counts > 0]))
    se = np.sqrt(p * (1 - p) / d.n)
    return _finish("empirical", p, se, d, ll, max(len(p) - 1, 0),
                   note="saturated model: one parameter per bin; chi2 is 0 by construction")


class _CMPObjective:
    """NLL/N of CMP in x = (log λ, log ν) with analytic gradient and Hessian (module docstring)."""

    def __init__(self, d: _Data) -> None:
        self.d = d
        self.kbar = d.mean
        self.lbar = d.sum_lf / d.n
        self.k_min = len(d.counts) - 1
        self._key: tuple[float, float] | None = None
        self._val: tuple[float, np.ndarray, np.ndarray] = (math.inf, np.zeros(2), np.eye(2))

    def moments(self, log_lam: float, nu: float) -> tuple[float, float, float, float, float, float, float]:
        """(log Z, E k, E lf, Var k, Var lf, Cov, δ) at (log λ, ν)."""
        terms, log_z, rel = _cmp_log_terms(log_lam, nu, k_min=self.k_min)
        if not math.isfinite(log_z) or rel > 1e-8:
            return math.inf, math.nan, math.nan, math.nan, math.nan, math.nan, rel
        p = np.exp(terms - log_z)
        p /= p.sum()
        j = np.arange(len(p), dtype=np.float64)
        lf = log_factorials(len(p) - 1)
        ek, el = float(p @ j), float(p @ lf)
        dk, dl = j - ek, lf - el
        return log_z, ek, el, float(p @ (dk * dk)), float(p @ (dl * dl)), float(p @ (dk * dl)), rel

    def _eval(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        key = (float(x[0]), float(x[1]))
        if key != self._key:
            log_lam, u = key
            nu = math.exp(min(u, 700.0))
            log_z, ek, el, vk, vl, c, _ = self.moments(log_lam, nu)
            if not math.isfinite(log_z):
                self._val = (math.inf, np.full(2, np.nan), np.full((2, 2), np.nan))
            else:
                f = -log_lam * self.kbar + nu * self.lbar + log_z
                g = np.array([ek - self.kbar, nu * (self.lbar - el)])
                h = np.array([[vk, -nu * c], [-nu * c, nu * nu * vl + nu * (self.lbar - el)]])
                self._val = (f, g, h)
            self._key = key
        return self._val

    def fun(self, x: np.ndarray) -> float:
        return self._eval(x)[0]

    def jac(self, x: np.ndarray) -> np.ndarray:
        return self._eval(x)[1]

    def hess(self, x: np.ndarray) -> np.ndarray:
        return self._eval(x)[2]


def _fit_cmp(d: _Data) -> StalenessFit:
    obj = _CMPObjective(d)
    x0 = np.array([math.log(d.mean), 0.0])  # λ = mean, ν = 1: the Poisson MLE
    candidates: list[tuple[float, float, float, str]] = []  # (NLL/N, log λ, ν, how)
    try:
        res = optimize.minimize(obj.fun, x0, jac=obj.jac, hess=obj.hess, method="trust-exact",
                                options={"gtol": 1e-10, "maxiter": 400})
        if math.isfinite(res.fun):
            candidates.append((float(res.fun), float(res.x[0]), math.exp(min(res.x[1], 700.0)), "newton"))
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        pass
    if not candidates:
        res = optimize.minimize(obj.fun, x0, method="Nelder-Mead",
                                options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
        if math.isfinite(res.fun):
            candidates.append((float(res.fun), float(res.x[0]), math.exp(min(res.x[1], 700.0)), "simplex"))
    # The geometric limit ν = 0, λ = 1 − q̂ (papers.md §4, "Nesting"), exactly
    lam_g = d.mean / (1.0 + d.mean)
    f_g = -(math.log1p(-lam_g) + d.mean * math.log(lam_g))
    candidates.append((f_g, math.log(lam_g), 0.0, "geometric limit"))
    f, log_lam, nu, _ = min(candidates, key=lambda c: c[0])
    if 0 < nu < _NU_FLOOR and log_lam < 0 and f_g <= f + 1e-12:
        f, log_lam, nu = f_g, math.log(lam_g), 0.0
    log_z, _, _, vk, vl, c, rel = obj.moments(log_lam, nu)
    # observed information in natural parameters (log λ, ν) = N·Cov[(k, −log k!)]
    info = d.n * np.array([[vk, -c], [-c, vl]])
    try:
        cov = np.linalg.inv(info)
        se_eta = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        if not np.all(np.isfinite(se_eta)):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        se_eta = np.array([math.nan, math.nan])
    lam = math.exp(log_lam)
    notes = []
    boundary = False
    if nu == 0.0:
        boundary = True
        notes.append("nu at 0: geometric limit (papers.md §4)")
    if np.count_nonzero(d.counts) <= 2:
        boundary = True
        notes.append("at most two observed values: nu grows without bound")
    k_trunc = len(_cmp_log_terms(log_lam, nu, k_min=obj.k_min)[0]) - 1
    return _finish("cmp", [lam, nu], [lam * se_eta[0], se_eta[1]], d, -f * d.n, 2, at_boundary=boundary,
                   truncation=k_trunc, truncation_error=rel, note="; ".join(notes))


def _nb_loglik(d: _Data, r: float) -> float:
    """Profile log-likelihood ℓ(r, p̂(r)) of the negative binomial, p̂ = r/(r + mean)."""
    k_max = len(d.counts) - 1
    log_poch = np.concatenate([[0.0], np.cumsum(np.log(r + np.arange(k_max, dtype=np.float64)))])
    # N·r·log p with log p = −log1p(mean/r): accurate as r → ∞ (Poisson limit)
    return (float(d.counts @ log_poch) - d.sum_lf - d.n * r * math.log1p(d.mean / r)
            + d.sum_k * (math.log(d.mean) - math.log(r + d.mean)))


def _fit_negbin(d: _Data) -> StalenessFit:
    lo, hi = _NB_LOG_R
    grid = np.linspace(lo, hi, 75)
    values = np.array([_nb_loglik(d, math.exp(g)) for g in grid])
    i = int(np.argmax(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(lambda g: -_nb_loglik(d, math.exp(g)), bounds=(a, b), method="bounded",
                                   options={"xatol": 1e-10})
    log_r, ll = (float(res.x), -float(res.fun)) if -res.fun >= values[i] else (float(grid[i]), values[i])
    r = math.exp(log_r)
    p = r / (r + d.mean)
    # the MLE of r is infinite when the sample variance does not exceed the mean
    boundary = d.var <= d.mean or log_r > hi - 1.0
    # observed information at (r, p) (analytic second derivatives of −ℓ)
    j = np.arange(len(d.counts) - 1, dtype=np.float64)
    inv_sq = np.concatenate([[0.0], np.cumsum(1.0 / (r + j) ** 2)])
    i_rr = float(d.counts @ inv_sq)  # −Σ h_k [ψ1(k+r) − ψ1(r)]
    i_rp = -d.n / p
    i_pp = d.n * r / p**2 + d.sum_k / (1 - p) ** 2
    try:
        cov = np.linalg.inv(np.array([[i_rr, i_rp], [i_rp, i_pp]]))
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        if boundary or not np.all(np.isfinite(se)):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        se = np.array([math.nan, math.nan])
    note = "r at its upper bound: Poisson limit (variance <= mean)" if boundary else ""
    return _finish("negbin", [r, p], se, d, ll, 2, at_boundary=boundary, note=note)


_FITTERS = {"poisson": _fit_poisson, "geometric": _fit_geometric, "cmp": _fit_cmp, "negbin": _fit_negbin,
            "empirical": _fit_empirical}


def parse_models(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"poisson,cmp"`` → ("poisson", "cmp"); validated against :data:`FIT_MODELS`."""
    if text is None:
        return DEFAULT_MODELS
    items = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text)]
    items = [m for m in items if m]
    aliases = {"nb": "negbin", "negative-binomial": "negbin", "geom": "geometric", "com-poisson": "cmp"}
    items = [aliases.get(m, m) for m in items]
    bad = [m for m in items if m not in FIT_MODELS]
    if bad or not items:
        raise LeashedError(f"unknown staleness model(s) {', '.join(bad) or '(none)'}; "
                           f"choose from {','.join(FIT_MODELS)}")
    return tuple(dict.fromkeys(items))


def fit(counts: Any, model: str) -> StalenessFit:
    """Maximum-likelihood fit of one model to a staleness histogram (counts indexed by τ)."""
    (model,) = parse_models([model])
    return _FITTERS[model](_prepare(counts))


def fit_all(counts: Any, models: str | Sequence[str] | None = None) -> list[StalenessFit]:
    """Fit every requested model (default :data:`DEFAULT_MODELS`); ranked by AIC, best first."""
    d = _prepare(counts)
    fits = [_FITTERS[m](d) for m in parse_models(models)]
    return sorted(fits, key=lambda f: (f.aic if math.isfinite(f.aic) else math.inf))


def fit_result(result: Any, models: str | Sequence[str] | None = None) -> list[StalenessFit]:
    """Fit the committed staleness of a :class:`~leashed.results.RunResult` (see :func:`fit_all`)."""
    return fit_all(result.staleness_histogram, models)


# ==================================================================== fit files (``leashed fit --out``)
#: the ``format`` field of a fit file
FIT_FORMAT = "leashed-staleness-fit"
#: the newest fit-file version this leashed writes and reads
FIT_FORMAT_VERSION = 1


def fit_entry(result: Any, fits: Sequence[StalenessFit], file: str | None = None) -> dict[str, Any]:
    """One ``results`` entry of a fit file: the run, its histogram and its fits ranked by AIC."""
    hist = as_histogram(result.staleness_histogram)
    n = int(hist.sum())
    k = np.arange(len(hist), dtype=np.float64)
    mean = float(hist @ k) / n if n else math.nan
    var = float(hist @ (k - mean) ** 2) / n if n else math.nan
    ranked = sorted(fits, key=lambda f: (f.aic if math.isfinite(f.aic) else math.inf))
    return {
        "file": file, "source": result.source, "label": result.spec.label(), "spec": result.spec.to_dict(),
        "n": n, "mean": mean, "var": var, "dispersion": var / mean if mean else None,
        "histogram": [int(c) for c in hist], "best": ranked[0].model if ranked else None,
        "fits": [f.to_dict() for f in ranked],
    }


def fit_document(entries: Sequence[Mapping[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """The whole fit file (format documented in docs/analysis.md, "Fit files")."""
    return {"format": FIT_FORMAT, "format_version": FIT_FORMAT_VERSION,
            "leashed_version": leashed_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": list(models),
            "results": list(entries)}


def read_fit_document(path: Any) -> dict[str, Any]:
    """Read a fit file written by ``leashed fit --out`` (or one bare :meth:`StalenessFit.to_dict`)."""
    path = Path(path)
    if not path.exists():
        raise LeashedError(f"staleness model file {path} does not exist; write it with `leashed fit RESULT "
                           f"--out {path.name}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LeashedError(f"cannot read staleness model file {path}: not valid JSON "
                           f"({type(exc).__name__})") from None
    if isinstance(data, dict) and "model" in data and "params" in data:  # a bare fit
        return {"format": FIT_FORMAT, "format_version": FIT_FORMAT_VERSION,
                "results": [{"file": str(path), "label": str(path), "fits": [data], "best": data["model"]}]}
    if not isinstance(data, dict) or data.get("format") != FIT_FORMAT:
        raise LeashedError(f"{path} is not a leashed staleness fit file (write one with `leashed fit`)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FIT_FORMAT_VERSION:
        raise LeashedError(f"{path} has fit format version {version}; this leashed reads up to version "
                           f"{FIT_FORMAT_VERSION}: upgrade leashed")
    if not isinstance(data.get("results"), list) or not data["results"]:
        raise LeashedError(f"{path} holds no fitted results")
    return data


def load_fit(path: Any, model: str | None = None, result: int | str | None = None) -> StalenessFit:
    """One fit from a fit file: the best-AIC model (or ``model``) of its only run (or run ``result``).

    ``result`` selects a run when the file holds several: an index, or text found in its file name or
    label (``"m=8"``).
    """
    data = read_fit_document(path)
    runs = data["results"]
    if result is None:
        if len(runs) > 1:
            names = "; ".join(f"{i}: {r.get('label')} ({r.get('file')})" for i, r in enumerate(runs))
            raise LeashedError(f"{path} holds fits of {len(runs)} runs ({names}); choose one with "
                               f"--staleness-model {path}#N (N the run's index)")
        entry = runs[0]
    elif isinstance(result, int) and not isinstance(result, bool):
        if not 0 <= result < len(runs):
            raise LeashedError(f"{path} holds {len(runs)} runs; run index {result} is out of range")
        entry = runs[result]
    else:
        hits = [r for r in runs if str(result) in str(r.get("file")) or str(result) in str(r.get("label"))]
        if len(hits) != 1:
            raise LeashedError(f"{path}: {len(hits)} runs match {result!r}; give a unique part of a file "
                               f"name or label")
        entry = hits[0]
    fits = entry.get("fits") or []
    if not fits:
        raise LeashedError(f"{path}: run {entry.get('label')} has no fitted models")
    if model is None:
        chosen = next((f for f in fits if f.get("model") == entry.get("best")), fits[0])
    else:
        (model,) = parse_models([model])
        chosen = next((f for f in fits if f.get("model") == model), None)
        if chosen is None:
            have = ", ".join(str(f.get("model")) for f in fits)
            raise LeashedError(f"{path} has no {model} fit (it has {have}); refit with --models {model}")
    return StalenessFit.from_dict(chosen)
