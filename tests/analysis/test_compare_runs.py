"""Predicted (sim) against measured (runtime) comparison: pairing, verdict words, table, JSON, figures."""

import importlib
import json

import numpy as np
import pytest
from analysis_synth import make_run

from leashed.analysis import compare as C
from leashed.errors import LeashedError
from leashed.results import RunResult


def geometric_tau(m, n, seed):
    return np.random.default_rng(seed).geometric(1.0 / m, n) - 1


def test_same_distribution_different_draws_agrees(tmp_path):
    sim = make_run(geometric_tau(4, 5000, 1), threads=4, source="sim", seed=1)
    run = make_run(geometric_tau(4, 5000, 2), threads=4, source="runtime", seed=2)
    # through files, as the command line sees them
    sim, run = (RunResult.load(r.save(tmp_path / f"{r.source}.npz")) for r in (sim, run))
    pair = C.compare_pair(sim, run)
    assert pair.verdict == "agree", pair.detail()
    q = pair.quantities
    assert q["throughput"].verdict == "not judged"  # not calibrated
    assert q["staleness_mean"].verdict == "identity"  # leashed Tp=inf: E τ = m − 1 on both sides
    assert q["staleness_tv"].verdict == "agree" and q["staleness_tv"].difference.high <= C.TV_BAND
    assert pair.tv < 0.05 and pair.test.p_value > 0.01
    assert pair.mean[0] == pytest.approx(3.0, rel=0.1)
    lo, hi = q["cas_failure"].difference.low, q["cas_failure"].difference.high
    assert lo < 0 < hi and hi - lo < 0.05


def test_m2_like_against_m8_like_differs():
    sim = make_run(geometric_tau(2, 5000, 3), algorithm="lock", threads=4, source="sim", seed=3)
    run = make_run(geometric_tau(8, 5000, 4), algorithm="lock", threads=4, source="runtime", seed=4)
    pair = C.compare_pair(sim, run)
    assert pair.verdict == "differ"
    assert pair.quantities["staleness_tv"].verdict == "differ"
    assert pair.quantities["staleness_mean"].verdict == "differ"  # lock: no identity, the mean is judged
    assert "cas_failure" not in pair.quantities  # lock has no CAS
    assert pair.detail().startswith("differ: staleness_mean")


def test_homogeneity_test_is_calibrated_and_tv_bounds():
    rng = np.random.default_rng(5)
    pvals = []
    for _ in range(300):
        a = np.bincount(rng.geometric(0.3, 500) - 1)
        b = np.bincount(rng.geometric(0.3, 800) - 1)
        pvals.append(C.homogeneity_test(a, b).p_value)
    assert 0.02 <= np.mean(np.array(pvals) < 0.05) <= 0.09
    assert C.total_variation([5, 5], [10, 10]) == 0.0
    assert C.total_variation([5, 0], [0, 7]) == 1.0
    assert C.homogeneity_test([0, 50], [0, 70]).p_value == 1.0  # one bin: nothing to reject


def test_cas_and_throughput_criteria():
    tau = geometric_tau(4, 4000, 6)
    few = np.ones(4000, int)
    many = np.random.default_rng(7).integers(1, 5, 4000)
    pair = C.compare_pair(make_run(tau, source="sim", attempts=few), make_run(tau, attempts=many))
    assert pair.verdict == "differ" and pair.quantities["cas_failure"].verdict == "differ"
    assert pair.cas_failure[0] == 0.0 and pair.cas_failure[1] > 0.5
    slow = make_run(tau, wall=4.0, attempts=few)
    fast_uncal = make_run(tau, source="sim", wall=1.0, attempts=few)
    assert C.compare_pair(fast_uncal, slow).verdict == "agree"  # not calibrated: throughput not judged
    fast_cal = make_run(tau, source="sim", wall=1.0, attempts=few, extra={"calibrated_from": "run.npz"})
    pair = C.compare_pair(fast_cal, slow)
    assert pair.calibrated and pair.throughput_ratio == pytest.approx(4.0, rel=0.05)
    assert pair.detail().startswith("differ: throughput")
    q = pair.quantities["throughput"]
    assert q.difference.low > 1.1 and q.tolerance == pytest.approx((1 / 1.1, 1.1))


def test_several_thread_counts_pair_and_plot(tmp_path):
    results = []
    for m in (2, 4, 8):
        results.append(make_run(geometric_tau(m, 3000, m), threads=m, source="sim", seed=m))
        results.append(make_run(geometric_tau(m, 3000, 10 + m), threads=m, seed=10 + m))
    results.append(make_run(geometric_tau(16, 3000, 99), threads=16, seed=99))  # no prediction
    comparison = C.compare_results(results, [f"f{i}.npz" for i in range(len(results))])
    assert [p.threads for p in comparison.pairs] == [2, 4, 8]
    assert comparison.consistent and comparison.verdict == "agree (3 pairs)", comparison.table()
    assert len(comparison.unpaired) == 1 and "m=16" in comparison.unpaired[0]
    text = comparison.table()
    assert "verdict: agree (3 pairs)" in text and "consistent" not in text
    assert max(len(line) for line in text.splitlines()[:4]) < 160  # compact rows
    paths = C.write_comparison(comparison, tmp_path)
    # CAS only for leashed (all pairs here); throughput not calibrated, still drawn with its intervals
    assert {p.name for p in paths} == {"staleness_pairs.png", "staleness_mean.png", "dispersion.png",
                                       "throughput.png", "cas_failure.png", "tv_distance.png"}
    data = json.loads(json.dumps(comparison.to_dict()))
    assert data["format"] == "leashed-comparison" and data["format_version"] == 2
    assert data["verdict"] == "agree" and len(data["pairs"]) == 3
    q = data["pairs"][0]["quantities"]
    assert set(q) == {"throughput", "cas_failure", "staleness_mean", "dispersion", "staleness_tv"}
    assert q["cas_failure"]["verdict"] == "agree" and len(q["cas_failure"]["difference"]["interval"]) == 2
    assert data["criteria"]["tv_tol"] == C.TV_BAND and data["criteria"]["confidence"] == 0.9


def test_one_thread_count_draws_no_single_point_figures(tmp_path):
    results = [make_run(geometric_tau(4, 3000, 1), source="sim", seed=1), make_run(geometric_tau(4, 3000, 2))]
    paths = C.write_comparison(C.compare_results(results), tmp_path)
    assert [p.name for p in paths] == ["staleness_pairs.png"]


def test_compare_needs_both_sources_and_accepts_replicates():
    run = make_run(threads=4)
    with pytest.raises(LeashedError, match="only runtime"):
        C.compare_results([run, make_run(threads=8)])
    comparison = C.compare_results([run, make_run(threads=4, seed=5), make_run(threads=4, source="sim")],
                                   ["a.npz", "b.npz", "s.npz"])
    (pair,) = comparison.pairs
    assert pair.replicates == (1, 2) and pair.measured_files == ["a.npz", "b.npz"]
    assert pair.n == (4000, 8000)
    with pytest.raises(LeashedError, match="no simulator result has a runtime"):
        C.compare_results([run, make_run(threads=8, source="sim")])


def test_pair_key_separates_sparsifier_and_step_policy():
    """Issue 18: a top-k simulation must not pair with a dense run (nor normalised with constant)."""
    dense = make_run(threads=4)
    topk = make_run(threads=4, source="sim")
    topk = topk.replace(spec=topk.spec.replace(sparsifier="topk:1"))
    assert C.pair_key(dense) != C.pair_key(topk)
    with pytest.raises(LeashedError, match="sparsifier and step policy"):
        C.compare_results([dense, topk])
    mem = topk.replace(spec=topk.spec.replace(error_memory=True))
    assert C.pair_key(mem) != C.pair_key(topk)
    normalised = make_run(threads=4, source="sim", step_policy="normalised")
    assert C.pair_key(normalised) != C.pair_key(dense)
    comparison = C.compare_results([dense, topk, normalised, make_run(threads=4, source="sim", seed=3)])
    assert len(comparison.pairs) == 1 and len(comparison.unpaired) == 2


def _simulator():
    try:
        return importlib.import_module("leashed.sim.simulate").simulate
    except (ImportError, AttributeError):
        pytest.skip("leashed.sim.simulate is not available")


def test_against_the_simulator_if_it_exists():
    """Simulations of one spec under two seeds agree; m=2 against m=8 differ (T1, T2)."""
    simulate = _simulator()
    from leashed.analysis import staleness as S
    from leashed.spec import ExperimentSpec

    spec = ExperimentSpec(algorithm="leashed", threads=4, model="counter", dataset="none", updates=6000,
                          compute_time="exp:mean=1ms", update_time="const:1us")
    a = simulate(spec)
    b = simulate(spec.replace(seed=1)).replace(source="runtime")
    pair = C.compare_pair(a, b, calibrated=True)
    assert pair.verdict in ("agree", "inconclusive"), pair.detail()
    assert pair.quantities["throughput"].verdict == "agree"
    c = simulate(spec.replace(threads=2, seed=2)).replace(source="runtime")
    assert C.compare_pair(a, c).verdict == "differ"
    # T2: exponential compute, (near) zero-time updates: Geometric(1/m), CMP ν̂ → 0, λ̂ = 1 − 1/m
    cmp = S.fit(a.staleness_histogram, "cmp")
    assert cmp.params[1] < 0.05
    assert abs(cmp.params[0] - 0.75) <= 3 * cmp.se[0] + 0.01
