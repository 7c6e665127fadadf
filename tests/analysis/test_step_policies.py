"""Step policies (papers.md §3): closed-form normalisers (T11), TAIL mean factor (T10), tables."""

import math
import zlib

import numpy as np
import pytest

from leashed.analysis import staleness as S
from leashed.analysis import steps
from leashed.analysis._io import write_json_atomic
from leashed.errors import LeashedError
from leashed.spec import ExperimentSpec


def model(name, *params):
    return S.StalenessFit(name, params, (0.0,) * len(params), 1, 0.0, len(params))


MODELS = [
    model("poisson", 3.2), model("geometric", 0.2), model("cmp", 3.0, 0.6), model("cmp", 0.9, 0.0),
    model("cmp", 6.5e12, 10.8), model("cmp", 20.0, 2.0), model("negbin", 2.5, 0.3), model("negbin", 1.0, 0.3),
    model("empirical", 0.1, 0.5, 0.0, 0.4),
]
WEIGHTS = [("geometric", 1.3), ("geometric", 2.0), ("inverse", None)]


@pytest.mark.parametrize("m", MODELS, ids=lambda m: f"{m.model}{m.params[:2]}")
@pytest.mark.parametrize("weight, gamma", WEIGHTS)
def test_closed_form_normaliser_matches_monte_carlo(m, weight, gamma):
    """T11: the closed forms of papers.md §3.2 are E_P[w(τ)]; checked by sampling τ ~ P."""
    closed = steps.normaliser(m, weight, gamma)
    tau = m.sample(200_000, np.random.default_rng(zlib.crc32(repr((m.model, m.params, weight)).encode())))
    w = steps.weight_values(tau, weight, gamma)
    se = w.std() / math.sqrt(len(w))
    assert abs(w.mean() - closed) <= 4.5 * se + 1e-12, (closed, w.mean(), se)
    assert closed == pytest.approx(steps.normaliser_series(m, weight, gamma), rel=1e-9)


@pytest.mark.parametrize("m", MODELS, ids=lambda m: f"{m.model}{m.params[:2]}")
@pytest.mark.parametrize("weight, gamma", WEIGHTS)
def test_normalised_table_has_mean_factor_one(m, weight, gamma):
    """E_P[α(τ)] = α_c (papers.md §3.2, T11), also for the exported table (last entry for larger τ)."""
    table = steps.step_table("normalised", model=m, weight=weight, gamma=gamma)
    assert steps.mean_factor(table, m, k_max=m.support_bound(1e-14)) == pytest.approx(1.0, abs=1e-6)
    assert all(a >= b for a, b in zip(table, table[1:], strict=False)), "s(τ) must not increase"


def test_normaliser_of_a_plain_pmf_is_the_empirical_one():
    p = np.array([0.2, 0.3, 0.5])
    assert steps.normaliser(p, "geometric", 2.0) == pytest.approx(0.2 + 0.3 / 2 + 0.5 / 4)
    assert steps.normaliser(p, "inverse") == pytest.approx(0.2 + 0.3 / 2 + 0.5 / 3)


def test_poisson_and_geometric_closed_forms_by_hand():
    assert steps.normaliser(model("poisson", 2.0), "geometric", 2.0) == pytest.approx(math.exp(-1.0))
    assert steps.normaliser(model("poisson", 2.0), "inverse") == pytest.approx((1 - math.exp(-2)) / 2)
    assert steps.normaliser(model("geometric", 0.5), "geometric", 2.0) == pytest.approx(0.5 / 0.75)
    assert steps.normaliser(model("geometric", 0.5), "inverse") == pytest.approx(math.log(2))


@pytest.mark.parametrize("A", [1.0, 0.5])
def test_tail_mean_factor_is_one_plus_a_sum_p_squared(A):
    """T10: E[s(τ)] = 1 + A·Σ p_k² for TAIL-τ; the mid-rank variant has mean factor exactly 1."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.dirichlet(np.ones(rng.integers(1, 30)))
        tail = steps.step_table("tail", model=p, A=A, k_max=len(p) - 1)
        assert steps.mean_factor(tail, p) == pytest.approx(1 + A * np.sum(p**2), rel=1e-12)
        mid = steps.step_table("tail-midrank", model=p, A=A, k_max=len(p) - 1)
        assert steps.mean_factor(mid, p) == pytest.approx(1.0, abs=1e-12)


def test_tail_m2_doubles_the_step():
    """papers.md §3.1: with 98 % of τ at 1 (m=2) E[s] ≈ 1.96; also by sampling τ."""
    p = np.array([0.01, 0.98, 0.01])
    tau = np.random.default_rng(4).choice(3, 100_000, p=p)
    s = steps.tail_factor(tau, p)
    assert s.mean() == pytest.approx(1.9606, abs=0.01)
    assert steps.tail_factor(np.arange(3), p).tolist() == pytest.approx([2.0, 1.98, 0.02])


def test_fleet_uses_the_integer_floor():
    assert steps.fleet_beta(2) == pytest.approx((2 / 3) * math.log(2))  # ⌊3/2⌋ = 1, not 1.5
    assert steps.fleet_factor(1, 2) == pytest.approx(0.63, abs=0.005)
    assert steps.fleet_beta(3) == pytest.approx(0.5 * math.log(3))
    assert steps.step_table("fleet", m=2, k_max=3)[1] == pytest.approx(steps.fleet_factor(1, 2))
    assert steps.step_table("inverse", k_max=3) == (1.0, 0.5, 1 / 3, 0.25)
    assert steps.step_table("constant") == (1.0,)
    with pytest.raises(LeashedError):
        steps.fleet_beta(0)


def write_fit_file(path, histograms):
    from analysis_synth import make_run

    entries = []
    for i, h in enumerate(histograms):
        run = make_run(np.repeat(np.arange(len(h)), h), threads=2 + i, seed=i)
        entries.append(S.fit_entry(run, S.fit_result(run), file=f"m{2 + i}.npz"))
    return write_json_atomic(path, S.fit_document(entries, S.DEFAULT_MODELS))


def test_step_table_from_fit_file(tmp_path):
    h = np.bincount(np.random.default_rng(5).geometric(0.25, 5000) - 1)
    path = write_fit_file(tmp_path / "fit.json", [h])
    best = S.load_fit(path)
    table = steps.step_table_from_fit(path)
    assert table == steps.step_table("normalised", model=best)
    assert table[0] > 1 > table[-1]
    gamma = steps.default_gamma(best)
    assert table[3] / table[0] == pytest.approx(gamma**-3)
    inv = steps.step_table_from_fit(path, weight="inverse", model="poisson")
    assert inv[1] / inv[0] == pytest.approx(0.5)
    assert steps.mean_factor(inv, S.load_fit(path, model="poisson")) == pytest.approx(1.0, abs=1e-6)
    spec = ExperimentSpec(step_policy="normalised", step_table=table)
    assert spec.step_table == table


def test_step_table_from_fit_errors(tmp_path):
    h = np.bincount(np.random.default_rng(6).geometric(0.5, 2000) - 1)
    path = write_fit_file(tmp_path / "two.json", [h, h])
    with pytest.raises(LeashedError, match="holds fits of 2 runs"):
        steps.step_table_from_fit(path)
    assert steps.step_table_from_fit(path, result="m3") == steps.step_table_from_fit(path, result=1)
    with pytest.raises(LeashedError, match="gamma > 1"):
        steps.step_table_from_fit(path, gamma=0.9, result=0)
    with pytest.raises(LeashedError, match="does not exist"):
        steps.step_table_from_fit(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LeashedError, match="not valid JSON"):
        steps.step_table_from_fit(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(LeashedError, match="not a leashed staleness fit"):
        steps.step_table_from_fit(tmp_path / "other.json")
    write_fit_file(tmp_path / "one.json", [h])
    doc = S.read_fit_document(tmp_path / "one.json")
    doc["results"][0]["fits"] = [f for f in doc["results"][0]["fits"] if f["model"] != "negbin"]
    write_json_atomic(tmp_path / "one.json", doc)
    with pytest.raises(LeashedError, match="has no negbin fit"):
        S.load_fit(tmp_path / "one.json", model="negbin")


def test_describe_policy_names_the_family():
    assert steps.describe_policy("normalised") == "model-normalised (MindTheStep family)"
