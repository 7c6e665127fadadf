"""Staleness models and fits (papers.md §4, Table 1b)."""

import json
import math

import numpy as np
import pytest
from scipy import special

from leashed.analysis import staleness as S
from leashed.errors import LeashedError


def hist(tau):
    return np.bincount(np.asarray(tau, dtype=np.int64))


def cmp_sample(lam, nu, n, seed):
    model = S.StalenessFit("cmp", (lam, nu), (0.0, 0.0), 1, 0.0, 2)
    return model.sample(n, np.random.default_rng(seed))


def within(fit, truth, k=3.0):
    for name, value, se, true in zip(fit.param_names, fit.params, fit.se, truth, strict=True):
        assert math.isfinite(se) and se > 0, (name, se)
        assert abs(value - true) <= k * se, f"{fit.model} {name}: {value} vs {true} (se {se})"


# ------------------------------------------------------------------ recovery of known parameters
def test_poisson_recovers_lambda():
    fit = S.fit(hist(np.random.default_rng(1).poisson(3.5, 40_000)), "poisson")
    within(fit, (3.5,))
    assert fit.se[0] == pytest.approx(math.sqrt(fit.params[0] / fit.n))


def test_geometric_recovers_q():
    tau = np.random.default_rng(2).geometric(0.2, 40_000) - 1  # numpy's geometric starts at 1
    within(S.fit(hist(tau), "geometric"), (0.2,))


def test_negbin_recovers_r_and_p():
    tau = np.random.default_rng(3).negative_binomial(2.5, 0.3, 40_000)
    fit = S.fit(hist(tau), "negbin")
    within(fit, (2.5, 0.3))
    assert not fit.at_boundary


@pytest.mark.parametrize("lam, nu, seed", [(3.0, 0.6, 4), (20.0, 2.0, 5), (1.76, 0.22, 6)])
def test_cmp_recovers_lambda_and_nu(lam, nu, seed):
    fit = S.fit(hist(cmp_sample(lam, nu, 40_000, seed)), "cmp")
    within(fit, (lam, nu))
    assert fit.truncation_error <= 1e-12


def test_cmp_extreme_underdispersion_of_table_1b():
    """gamma c=0.05, m=16 in Table 1b: λ̂ ≈ 6.5e12, ν̂ ≈ 10.8 -- log-space normaliser must cope."""
    fit = S.fit(hist(cmp_sample(6.5e12, 10.8, 40_000, 7)), "cmp")
    lam, nu = fit.params
    assert abs(nu - 10.8) <= 3 * fit.se[1]
    assert abs(math.log(lam) - math.log(6.5e12)) <= 3 * fit.se[0] / lam  # delta method on log λ
    assert fit.nll_per_sample < S.fit(hist(cmp_sample(6.5e12, 10.8, 40_000, 7)), "poisson").nll_per_sample


def test_cmp_geometric_limit_exp_compute():
    """Table 1b, exp compute m=4: ν̂ → 0, λ̂ = 1 − 1/m = 0.75, CMP NLL = geometric NLL."""
    tau = np.random.default_rng(8).geometric(0.25, 40_000) - 1
    h = hist(tau)
    cmp, geo = S.fit(h, "cmp"), S.fit(h, "geometric")
    assert cmp.params[1] < 0.02
    assert abs(cmp.params[0] - 0.75) <= 3 * cmp.se[0]
    assert cmp.nll_per_sample == pytest.approx(geo.nll_per_sample, abs=1e-4)
    assert cmp.loglik >= geo.loglik - 1e-6


def test_cmp_standard_errors_match_numerical_hessian():
    h = hist(cmp_sample(3.0, 0.6, 20_000, 9))
    fit = S.fit(h, "cmp")
    k = np.arange(len(h))

    def loglik(lam, nu):
        log_z = S.cmp_log_normaliser(lam, nu).log_z
        return float(h @ (k * math.log(lam) - nu * special.gammaln(k + 1.0))) - h.sum() * log_z

    lam, nu = fit.params
    e = (lam * 1e-4, nu * 1e-4)
    hess = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            def f(a, b, i=i, j=j):
                return loglik(lam + a * (i == 0) * e[0] + b * (j == 0) * e[0],
                              nu + a * (i == 1) * e[1] + b * (j == 1) * e[1])
            hess[i, j] = (f(1, 1) - f(1, -1) - f(-1, 1) + f(-1, -1)) / (4 * e[i] * e[j])
    se = np.sqrt(np.diag(np.linalg.inv(-hess)))
    np.testing.assert_allclose(fit.se, se, rtol=2e-2)


# ------------------------------------------------------------------ nesting: CMP never worse
@pytest.mark.parametrize("name, draw", [
    ("poisson", lambda r: r.poisson(4.0, 20_000)),
    ("geometric", lambda r: r.geometric(1 / 16, 20_000) - 1),
    ("under", lambda r: np.round(r.gamma(25.0, 0.2, 20_000)).astype(int)),
    ("over", lambda r: r.negative_binomial(1.5, 0.2, 20_000)),
    ("m2-like", lambda r: r.choice(3, 20_000, p=[0.01, 0.98, 0.01])),
])
def test_cmp_never_worse_than_nested_models(name, draw):
    h = hist(draw(np.random.default_rng(10)))
    fits = {f.model: f for f in S.fit_all(h, S.DEFAULT_MODELS)}
    assert fits["cmp"].loglik >= fits["poisson"].loglik - 1e-6, name
    assert fits["cmp"].loglik >= fits["geometric"].loglik - 1e-6, name
    assert fits["negbin"].loglik >= fits["geometric"].loglik - 1e-6, name  # r = 1 is geometric
    assert fits["negbin"].loglik >= fits["poisson"].loglik - 1e-3, name  # r → ∞ is Poisson
    aics = [f.aic for f in S.fit_all(h, S.DEFAULT_MODELS)]
    assert aics == sorted(aics)


# ------------------------------------------------------------------ normaliser and its bound
def test_cmp_normaliser_bound_against_closed_and_long_sums():
    # ν = 0, λ < 1: Z = 1/(1 − λ) exactly
    z = S.cmp_log_normaliser(0.999, 0.0)
    assert 0 <= -math.log1p(-0.999) - z.log_z <= z.rel_error + 1e-15
    assert z.rel_error <= 1e-12 and z.k > 20_000
    # ν = 1: Z = e^λ
    z = S.cmp_log_normaliser(50.0, 1.0)
    assert abs(z.log_z - 50.0) <= z.rel_error + 1e-12
    # the truncation error bound holds against a much longer sum
    for lam, nu in ((6.5e12, 10.8), (3.0, 0.6), (0.9, 0.01)):
        z = S.cmp_log_normaliser(lam, nu, eps=1e-3)
        j = np.arange(20 * z.k + 200)
        exact = special.logsumexp(j * math.log(lam) - nu * special.gammaln(j + 1.0))
        assert 0 <= exact - z.log_z <= math.log1p(z.rel_error) + 1e-12, (lam, nu)
        assert z.rel_error <= 1e-3


def test_cmp_divergent_normaliser_does_not_crash():
    assert S.cmp_log_normaliser(1.5, 0.0).log_z == math.inf
    z = S.cmp_log_normaliser(1.5, 1e-4)  # the terms decrease only beyond j ≈ 1.5^10000: no bound
    assert z.rel_error == math.inf and z.k == S.CMP_K_CAP
    z = S.cmp_log_normaliser(0.5, 1e-12)  # ν → 0 with λ < 1: the geometric limit, bounded
    assert abs(z.log_z + math.log1p(-0.5)) < 1e-9 and z.rel_error <= 1e-12


# ------------------------------------------------------------------ goodness of fit
def test_chi2_pooling_and_dof():
    rng = np.random.default_rng(11)
    for _ in range(200):
        expected = rng.exponential(rng.uniform(0.1, 20), rng.integers(1, 40))
        tail = float(rng.exponential(3))
        bins = S.pool_bins(expected, tail)
        assert bins[0][0] == 0 and bins[-1][1] == len(expected) - 1
        assert all(b[0] == a[1] + 1 for a, b in zip(bins, bins[1:], strict=False))
        if expected.sum() + tail >= 5:
            sums = [expected[lo: hi + 1].sum() for lo, hi in bins]
            sums[-1] += tail
            assert min(sums) >= 5 - 1e-9
    h = hist(rng.poisson(5.0, 20_000))
    fit = S.fit(h, "poisson")
    assert fit.chi2_dof == fit.chi2_bins - 1 - 1
    assert fit.chi2_p > 1e-3
    assert S.fit(hist(rng.geometric(0.2, 20_000) - 1), "poisson").chi2_p < 1e-6


def test_chi2_p_value_is_calibrated_under_the_null():
    rng = np.random.default_rng(12)
    p = [S.fit(hist(rng.poisson(3.0, 2000)), "poisson").chi2_p for _ in range(200)]
    assert 0.01 <= np.mean(np.array(p) < 0.05) <= 0.10


# ------------------------------------------------------------------ the fit object
def test_fit_round_trips_through_json():
    h = hist(cmp_sample(3.0, 0.6, 5000, 13))
    for fit in S.fit_all(h, S.FIT_MODELS):
        again = S.StalenessFit.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))
        assert again.model == fit.model
        np.testing.assert_allclose(again.params, fit.params)
        np.testing.assert_allclose(again.pmf(np.arange(30)), fit.pmf(np.arange(30)))
        assert again.aic == pytest.approx(fit.aic)
        assert again.mean == pytest.approx(fit.mean) and again.var == pytest.approx(fit.var)


def test_pmf_mean_var_of_each_model():
    for model, params in (("poisson", (2.5,)), ("geometric", (0.3,)), ("cmp", (2.5, 1.0)),
                          ("cmp", (0.7, 0.0)), ("negbin", (2.0, 0.4))):
        f = S.StalenessFit(model, params, (0.0,) * len(params), 1, 0.0, len(params))
        p = f.pmf_array(2000)
        k = np.arange(len(p))
        assert p.sum() == pytest.approx(1.0, abs=1e-10)
        assert f.mean == pytest.approx(p @ k, rel=1e-8)
        assert f.var == pytest.approx(p @ (k - f.mean) ** 2, rel=1e-8)
    cmp1 = S.StalenessFit("cmp", (2.5, 1.0), (0, 0), 1, 0.0, 2)
    np.testing.assert_allclose(cmp1.pmf(np.arange(20)), S.StalenessFit("poisson", (2.5,), (0,), 1, 0.0, 1)
                               .pmf(np.arange(20)), rtol=1e-10)


def test_degenerate_histograms():
    fits = {f.model: f for f in S.fit_all(np.array([0, 0, 0, 0, 0, 500]))}  # τ ≡ 5
    assert fits["cmp"].at_boundary and fits["negbin"].at_boundary
    assert fits["poisson"].params[0] == 5.0
    with pytest.raises(LeashedError, match="staleness 0"):
        S.fit_all(np.array([100]))
    with pytest.raises(LeashedError, match="no committed"):
        S.fit_all(np.array([], dtype=int))
    with pytest.raises(LeashedError, match="unknown staleness model"):
        S.parse_models("poisson,weibull")
