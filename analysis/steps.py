"""Staleness-adaptive step sizes (papers.md §3), exported as lookup tables over τ.

The applied step of an update with staleness τ is α_c·s(τ) (papers.md §1). The policies:

==========================  ====================================================  =====================
policy                      s(τ)                                                  source
==========================  ====================================================  =====================
``constant``                1                                                     papers.md §3.1
``inverse``                 1/(τ+1)                                               §3.1 [authors' code]
``fleet``                   exp(−β τ), β = (2/(m+1))·ln(1 + ⌊(m+1)/2⌋)             §3.1 [authors' code]
``tail``                    1 + A(1 − 2F(τ)), F(τ) = P(τ′ < τ)                    §3.1 [authors' code]
``tail-midrank``            1 + A(1 − 2F_mid(τ)), F_mid = P(τ′ < τ) + ½P(τ′ = τ)  §3.1 [derived]
``normalised``              w(τ) / E_P[w(τ)]                                      §3.2 [derived]
==========================  ====================================================  =====================

``normalised`` is the **model-normalised (MindTheStep family)** policy of papers.md §3.2:
α(τ) = α_c·w(τ)/E_P[w(τ)] with w decreasing and P a staleness model fitted to committed updates
(:mod:`leashed.analysis.staleness`), so that E_P[α(τ)] = α_c exactly (claim T11). Two weights:
``geometric`` w(τ) = γ^{−τ} (γ > 1) and ``inverse`` w(τ) = 1/(τ+1). The exact MindTheStep formula is
*unverified* (papers.md §0, §3.2); this family is what the project offers in its place.

Closed-form normalisers E_P[w(τ)] (:func:`normaliser`, papers.md §3.2 table, plus the negative
binomial, derived from its generating function G(s) = (p/(1 − (1−p)s))^r and E[1/(τ+1)] = ∫₀¹ G(s) ds):

=============  ============================  ====================================
model          w = γ^{−τ}                    w = 1/(τ+1)
=============  ============================  ====================================
poisson(λ)     exp(−λ(1 − 1/γ))              (1 − e^{−λ})/λ
geometric(q)   q / (1 − (1−q)/γ)             −q ln q / (1 − q)
cmp(λ, ν)      Z(λ/γ, ν) / Z(λ, ν)           Σ_{k≤K} P(k)/(k+1)  (truncated; error ≤ δ/(K+2))
negbin(r, p)   (p / (1 − (1−p)/γ))^r         (p − p^r) / ((r − 1)(1 − p))   (r ≠ 1)
empirical p_k  Σ p_k γ^{−k}                  Σ p_k/(k+1)
=============  ============================  ====================================

The TAIL mean factor is E[s(τ)] = 1 + A·Σ_k p_k² (claim T10), not 1; the mid-rank variant's is exactly 1.
:func:`mean_factor` evaluates E_P[s(τ)] of any table.

**Tables.** A policy is exported as factors s(0), …, s(K) (:func:`step_table`); the runtime and the
simulator apply s(min(τ, K)) per update, i.e. the last entry serves every larger τ
(``ExperimentSpec.step_table``). :func:`step_table_from_fit` builds the ``normalised`` table from a fit
file for ``leashed train --step-policy normalised --staleness-model fit.json``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from leashed import steprules
from leashed.analysis.staleness import StalenessFit, _cmp_log_terms, load_fit
from leashed.errors import LeashedError

WEIGHTS = ("geometric", "inverse")
POLICIES = ("constant", "inverse", "fleet", "tail", "tail-midrank", "normalised")
#: display name of the ``normalised`` policy (docs and output)
NORMALISED_NAME = "model-normalised (MindTheStep family)"
#: default range of table lengths (K + 1 entries)
TABLE_MIN_K = 16
TABLE_MAX_K = 4096


# ==================================================================== the authors' rules (§3.1)
def fleet_beta(m: int) -> float:
    """β = (2/(m+1))·ln(1 + ⌊(m+1)/2⌋), with the integer floor of the authors' code (papers.md §3.1, §7)."""
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise LeashedError(f"fleet needs a positive whole thread count m, not {m!r}")
    return steprules.fleet_beta(int(m))


def fleet_factor(tau: Any, m: int) -> Any:
    """FLEET's s(τ) = exp(−β τ) (papers.md §3.1)."""
    return np.exp(-fleet_beta(m) * np.asarray(tau, dtype=np.float64))


def inverse_factor(tau: Any) -> Any:
    """s(τ) = 1/(τ + 1) (papers.md §3.1)."""
    return 1.0 / (np.asarray(tau, dtype=np.float64) + 1.0)


def _pmf_of(model: StalenessFit | Sequence[float] | np.ndarray, k_max: int | None = None) -> np.ndarray:
    if isinstance(model, StalenessFit):
        return model.pmf_array(k_max)
    p = np.asarray(model, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0 or np.any(p < 0) or not np.isfinite(p).all():
        raise LeashedError("a staleness pmf is a non-empty 1-d list of non-negative probabilities")
    p = p / p.sum()
    if k_max is not None:
        p = np.concatenate([p, np.zeros(max(0, k_max + 1 - len(p)))])[: k_max + 1]
    return p


def tail_factor(tau: Any, pmf: StalenessFit | Sequence[float] | np.ndarray, A: float = 1.0,
                midrank: bool = False) -> Any:
    """TAIL-τ's s(τ) = 1 + A(1 − 2F(τ)) with F(τ) = P(τ′ < τ) under ``pmf`` (papers.md §3.1).

    ``midrank=True`` uses F(τ) = P(τ′ < τ) + ½P(τ′ = τ), whose mean factor is exactly 1 [derived].
    The authors estimate F from about 5m samples; here F is the given (fitted or empirical) pmf's.
    """
    t = np.asarray(tau)
    k_max = int(max(np.max(t), 0)) if t.size else 0
    p = _pmf_of(pmf, k_max)
    if len(p) <= k_max:
        p = np.concatenate([p, np.zeros(k_max + 1 - len(p))])
    below = np.concatenate([[0.0], np.cumsum(p)[:-1]])  # P(τ' < k)
    f = below + (0.5 * p if midrank else 0.0)
    out = 1.0 + A * (1.0 - 2.0 * f[np.clip(t.astype(np.int64), 0, len(f) - 1)])
    return float(out) if np.ndim(out) == 0 else out


# ==================================================================== model-normalised (§3.2)
def _weight(weight: str, gamma: float | None) -> str:
    if weight not in WEIGHTS:
        raise LeashedError(f"unknown weight {weight!r}; choose geometric (gamma^-tau) or inverse (1/(tau+1))")
    if weight == "geometric" and (gamma is None or not math.isfinite(gamma) or gamma <= 1):
        raise LeashedError(f"the geometric weight gamma^-tau needs gamma > 1, not {gamma!r}")
    return weight


def weight_values(tau: Any, weight: str, gamma: float | None = None) -> Any:
    """w(τ): γ^{−τ} (``geometric``) or 1/(τ+1) (``inverse``)."""
    weight = _weight(weight, gamma)
    t = np.asarray(tau, dtype=np.float64)
    out = np.exp(-t * math.log(gamma)) if weight == "geometric" else 1.0 / (t + 1.0)  # type: ignore[arg-type]
    return float(out) if np.ndim(out) == 0 else out


def normaliser_series(model: StalenessFit | Sequence[float] | np.ndarray, weight: str,
                      gamma: float | None = None, k_max: int | None = None) -> float:
    """E_P[w(τ)] as the series Σ_k P(k)·w(k) over the model's support (up to P(τ > K) ≤ 1e-12)."""
    p = _pmf_of(model, k_max)
    return float(p @ weight_values(np.arange(len(p)), weight, gamma))


def normaliser(model: StalenessFit | Sequence[float] | np.ndarray, weight: str = "geometric",
               gamma: float | None = None) -> float:
    """E_P[w(τ)] in closed form (module docstring; papers.md §3.2). A plain pmf is the empirical model."""
    weight = _weight(weight, gamma)
    if not isinstance(model, StalenessFit):
        return normaliser_series(model, weight, gamma)
    name, par = model.model, model.params
    geo = weight == "geometric"
    if name == "poisson":
        lam = par[0]
        if geo:
            return math.exp(-lam * (1.0 - 1.0 / gamma))  # type: ignore[operator]
        return 1.0 if lam == 0 else -math.expm1(-lam) / lam
    if name == "geometric":
        q = par[0]
        if geo:
            return q / (1.0 - (1.0 - q) / gamma)  # type: ignore[operator]
        return 1.0 if q >= 1 else -q * math.log(q) / (1.0 - q)
    if name == "negbin":
        r, p = par
        if geo:
            return math.exp(r * (math.log(p) - math.log1p(-(1.0 - p) / gamma)))  # type: ignore[operator]
        if p >= 1:
            return 1.0
        if abs(r - 1.0) > 1e-6 and 1.0 - p > 1e-6:
            return (p - p**r) / ((r - 1.0) * (1.0 - p))
        return normaliser_series(model, weight, gamma)  # near r = 1 or the Poisson limit: the series
    if name == "cmp":
        lam, nu = par
        log_lam = math.log(lam)
        terms, log_z, _ = _cmp_log_terms(log_lam, nu)
        if geo:
            _, log_zg, _ = _cmp_log_terms(log_lam - math.log(gamma), nu)  # type: ignore[arg-type]
            return math.exp(log_zg - log_z)
        p = np.exp(terms - log_z)
        return float(p @ (1.0 / (np.arange(len(p)) + 1.0)))
    return normaliser_series(np.asarray(par), weight, gamma)  # empirical


def default_gamma(model: StalenessFit | Sequence[float] | np.ndarray) -> float:
    """Default γ of the geometric weight: γ = e^β with FLEET's β at m̂ = round(E_P[τ]) + 1.

    Our choice, not the paper's (papers.md §3.2: the paper's γ is unverified): E[τ] = m − 1 for consistent
    algorithms that drop nothing (claim T1), so this is FLEET's decay, normalised to mean factor 1.
    """
    if isinstance(model, StalenessFit):
        mean = model.mean
    else:
        p = _pmf_of(model)
        mean = float(p @ np.arange(len(p)))
    m_hat = max(1, int(round(mean)) + 1)
    return math.exp(fleet_beta(m_hat))


def normalised_factor(tau: Any, model: StalenessFit | Sequence[float] | np.ndarray,
                      weight: str = "geometric", gamma: float | None = None) -> Any:
    """s(τ) = w(τ)/E_P[w(τ)] of the model-normalised (MindTheStep family) policy (papers.md §3.2)."""
    if weight == "geometric" and gamma is None:
        gamma = default_gamma(model)
    return weight_values(tau, weight, gamma) / normaliser(model, weight, gamma)


# ==================================================================== tables
def mean_factor(table: Sequence[float] | np.ndarray, model: StalenessFit | Sequence[float] | np.ndarray,
                k_max: int | None = None) -> float:
    """E_P[s(τ)] of a step table (last entry for τ beyond it) under a model or pmf."""
    s = np.asarray(table, dtype=np.float64)
    p = _pmf_of(model, k_max)
    idx = np.minimum(np.arange(len(p)), len(s) - 1)
    return float(p @ s[idx])


def table_length(model: StalenessFit | Sequence[float] | np.ndarray | None, tail: float = 1e-9) -> int:
    """Default K: the smallest with P(τ > K) ≤ ``tail``, clipped to [16, 4096]."""
    if model is None:
        return TABLE_MIN_K
    if isinstance(model, StalenessFit):
        k = model.support_bound(tail)
    else:
        p = _pmf_of(model)
        above = 1.0 - np.cumsum(p)
        hit = np.nonzero(above <= tail)[0]
        k = int(hit[0]) if len(hit) else len(p) - 1
    return int(min(TABLE_MAX_K, max(TABLE_MIN_K, k)))


def step_table(policy: str, *, model: StalenessFit | Sequence[float] | np.ndarray | None = None,
               m: int | None = None, weight: str = "geometric", gamma: float | None = None, A: float = 1.0,
               k_max: int | None = None) -> tuple[float, ...]:
    """Factors s(0), …, s(K) of a policy (:data:`POLICIES`); the last entry serves every larger τ.

    ``fleet`` needs ``m``; ``tail``, ``tail-midrank`` and ``normalised`` need a staleness ``model`` (a
    :class:`~leashed.analysis.staleness.StalenessFit` or a pmf). ``gamma`` defaults to
    :func:`default_gamma`. K defaults to :func:`table_length`.
    """
    if policy not in POLICIES:
        raise LeashedError(f"unknown step policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "constant":
        return (1.0,)
    if policy in ("tail", "tail-midrank", "normalised") and model is None:
        raise LeashedError(f"step policy {policy} needs a fitted staleness model (`leashed fit`)")
    k_max = table_length(model) if k_max is None else int(k_max)
    if k_max < 0:
        raise LeashedError(f"a step table needs K >= 0, not {k_max}")
    tau = np.arange(k_max + 1)
    if policy == "inverse":
        values = inverse_factor(tau)
    elif policy == "fleet":
        if m is None:
            raise LeashedError("step policy fleet needs the thread count m")
        values = fleet_factor(tau, m)
    elif policy in ("tail", "tail-midrank"):
        values = tail_factor(tau, model, A=A, midrank=policy == "tail-midrank")  # type: ignore[arg-type]
    else:
        if weight == "geometric" and gamma is None:
            gamma = default_gamma(model)  # type: ignore[arg-type]
        values = normalised_factor(tau, model, weight, gamma)  # type: ignore[arg-type]
    out = tuple(float(v) for v in np.atleast_1d(values))
    if not all(math.isfinite(v) and v >= 0 for v in out):
        raise LeashedError(f"step policy {policy} gave non-finite factors; check the staleness model")
    return out


def step_table_from_fit(fit_json_path: str | os.PathLike[str], weight: str = "geometric",
                        gamma: float | None = None, *, model: str | None = None,
                        result: int | str | None = None, k_max: int | None = None) -> tuple[float, ...]:
    """The model-normalised (MindTheStep family) table s(0..K) from a ``leashed fit --out`` file.

    Uses the best-AIC model of the file's only run unless ``model``/``result`` choose (see
    :func:`~leashed.analysis.staleness.load_fit`). ``weight`` is ``geometric`` (γ^{−τ}, ``gamma``
    defaulting to :func:`default_gamma`) or ``inverse`` (1/(τ+1)). Every problem is a one-line
    :class:`~leashed.errors.LeashedError`. The result goes into ``ExperimentSpec.step_table``.
    """
    _weight(weight, 2.0 if gamma is None else gamma)
    from leashed.schema import check_fit_document, read_fit_json

    check_fit_document(read_fit_json(fit_json_path), fit_json_path)  # types and ranges (λ > 0, ...) first
    fit = load_fit(fit_json_path, model=model, result=result)
    return step_table("normalised", model=fit, weight=weight, gamma=gamma, k_max=k_max)


def describe_policy(policy: str) -> str:
    """Display name of a policy (``normalised`` → "model-normalised (MindTheStep family)")."""
    return NORMALISED_NAME if policy == "normalised" else policy
