"""Sparsification kernels (papers.md §5): top-k, rand-k, error memory, sparse application.

The compiled kernels of ``leashed.runtime._sparse`` are held against numpy statements of the same
semantics (``leashed.sim.gradients``: stable argsort for top-k with ties to the lower index, a bit-exact
Python splitmix64 / Fisher–Yates for rand-k) and against the properties papers.md §5 names: exactly the K
largest magnitudes, the contraction ‖Φ(g) − g‖² ≤ (1 − K/d)‖g‖², K = d is dense SGD, scaled rand-k is
unbiased, error memory conserves the gradient mass.
"""

from __future__ import annotations

import numpy as np
import pytest

from leashed.runtime import _sparse as sp
from leashed.sim.gradients import NumpySparsifier, randk_python, sparse_seeds, sparsify_numpy, topk_numpy

RNG = np.random.default_rng(20240607)


def tied_vector(d: int, rng: np.random.Generator) -> np.ndarray:
    """Small integers (many exact ties in magnitude, both signs, many zeros) plus some normal values."""
    a = rng.integers(-3, 4, d).astype(np.float32)
    normal = rng.random(d) < 0.3
    a[normal] = rng.standard_normal(int(normal.sum())).astype(np.float32)
    return a


SIZES = [(1, 1), (5, 1), (5, 5), (17, 3), (64, 16), (1000, 1), (1000, 10), (1000, 999), (4099, 410),
         (20_000, 200)]


# ---------------------------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("d, k", SIZES)
def test_topk_is_the_k_largest_with_lower_index_ties(d, k):
    for _ in range(5):
        a = tied_vector(d, RNG)
        idx, val = sp.topk(a, k)
        expected = np.sort(np.argsort(-np.abs(a), kind="stable")[:k])  # ties: lower index first
        assert idx.dtype == np.int64 and val.dtype == np.float32
        assert np.array_equal(idx, expected)
        assert np.array_equal(val, a[expected])
        # the k largest magnitudes: nothing left out is larger than anything kept
        rest = np.setdiff1d(np.arange(d), idx)
        if len(rest):
            assert np.abs(a[rest]).max() <= np.abs(val).min()


def test_topk_tie_rule_explicit():
    a = np.array([1, -2, 2, 0, -2, 2, 1], np.float32)
    assert sp.topk(a, 2)[0].tolist() == [1, 2]      # four |2|: the two lowest indices
    assert sp.topk(a, 5)[0].tolist() == [0, 1, 2, 4, 5]
    assert sp.topk(np.zeros(6, np.float32), 3)[0].tolist() == [0, 1, 2]
    z = np.array([0.0, -0.0, 0.0, -0.0], np.float32)  # -0 and +0 are equal magnitudes
    assert sp.topk(z, 2)[0].tolist() == [0, 1]


def test_topk_nan_is_taken_last_like_argsort():
    a = np.array([np.nan, 1, -3, np.nan, 0, 2], np.float32)
    for k in range(1, 7):
        assert np.array_equal(sp.topk(a, k)[0], topk_numpy(a, k)), k
    inf = np.array([1, np.inf, -np.inf, 5], np.float32)
    assert sp.topk(inf, 2)[0].tolist() == [1, 2]


@pytest.mark.parametrize("pattern", ["sorted", "reversed", "equal", "organ", "sawtooth", "two-values"])
def test_selection_and_sort_survive_adversarial_inputs(pattern):
    """Introselect / introsort fallbacks: structured inputs still give exact answers."""
    d = 5000
    base = {"sorted": np.arange(d), "reversed": np.arange(d)[::-1], "equal": np.ones(d),
            "organ": np.concatenate([np.arange(d // 2), np.arange(d // 2)[::-1]]),
            "sawtooth": np.arange(d) % 17, "two-values": np.arange(d) % 2}[pattern]
    a = base.astype(np.float32)
    for k in (1, 7, d // 2, d - 1, d):
        assert sp.kth_magnitude(a, k) == np.sort(np.abs(a))[d - k]
        assert np.array_equal(sp.topk(a, k)[0], topk_numpy(a, k))
    ints = base.astype(np.int64)
    assert np.array_equal(sp.sort_i64(ints), np.sort(ints))


def test_sort_i64_random():
    for n in (0, 1, 2, 15, 16, 17, 1000, 33_333):
        x = RNG.integers(-50, 50, n)
        assert np.array_equal(sp.sort_i64(x), np.sort(x))


@pytest.mark.parametrize("d, k", [(10, 1), (10, 3), (100, 10), (1000, 10), (1000, 500)])
def test_topk_contraction(d, k):
    """‖Φ_k(g) − g‖² ≤ (1 − k/d)‖g‖² (papers.md §5, standard)."""
    for _ in range(20):
        g = RNG.standard_normal(d).astype(np.float32) * RNG.exponential(1, d).astype(np.float32)
        idx, val = sp.topk(g, k)
        err = g.astype(np.float64)
        err[idx] -= val
        lhs = float(np.sum(err**2))
        rhs = (1 - k / d) * float(np.sum(g.astype(np.float64) ** 2))
        assert lhs <= rhs * (1 + 1e-9) + 1e-30


def test_k_equal_d_is_the_dense_gradient_and_update():
    d = 777
    g = RNG.standard_normal(d).astype(np.float32)
    theta = RNG.standard_normal(d).astype(np.float32)
    alpha = np.float32(0.0123)
    dense = theta - alpha * g
    for kind in ("topk", "randk"):
        for memory in (False, True):
            s = sp.Sparsifier(kind, d, d, memory=memory, seed=3)
            idx, val = s(g)
            assert np.array_equal(idx, np.arange(d)) and np.array_equal(val, g)
            if memory:
                assert not s.memory.any()
            assert np.array_equal(sp.copy_apply(np.empty_like(theta), theta, idx, val, alpha), dense)
            assert np.array_equal(sp.apply(theta.copy(), idx, val, alpha), dense)
            assert np.array_equal(sp.apply(theta.copy(), idx, val, alpha, relaxed=True), dense)


def test_sparse_apply_touches_only_the_kept_coordinates():
    d, k = 300, 30
    g = RNG.standard_normal(d).astype(np.float32)
    theta = RNG.standard_normal(d).astype(np.float32)
    idx, val = sp.topk(g, k)
    alpha = np.float32(0.5)
    expected = theta.copy()
    expected[idx] = theta[idx] - alpha * val
    for out in (sp.apply(theta.copy(), idx, val, alpha), sp.apply(theta.copy(), idx, val, alpha, True),
                sp.copy_apply(np.full(d, np.nan, np.float32), theta, idx, val, alpha)):
        assert np.array_equal(out, expected)
    # the simulator's dense form (zeros outside the kept set) is the same update, bit for bit
    assert np.array_equal(theta - alpha * sp.densify(idx, val, d), expected)


# ---------------------------------------------------------------------------------------------- rand-k
def test_randk_selects_k_distinct_sorted_coordinates():
    d = 1000
    perm = np.arange(d, dtype=np.int64)
    state = 12345
    seen = set()
    for k in (1, 2, 10, 500, 999, 1000):
        for _ in range(10):
            idx, state, perm = sp.randk(d, k, state, perm)
            assert len(idx) == k and len(np.unique(idx)) == k
            assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < d
            assert np.array_equal(np.sort(perm), np.arange(d))  # the scratch stays a permutation
            seen.update(idx.tolist())
    assert len(seen) == d


def test_randk_matches_the_python_mirror_bit_for_bit():
    d, k = 257, 19
    perm_c = np.arange(d, dtype=np.int64)
    perm_p = perm_c.copy()
    state_c = state_p = sparse_seeds(7, 3)[2]
    for _ in range(50):
        idx_c, state_c, perm_c = sp.randk(d, k, state_c, perm_c)
        idx_p, state_p = randk_python(d, k, state_p, perm_p)
        assert np.array_equal(idx_c, idx_p) and state_c == state_p
        assert np.array_equal(perm_c, perm_p)
    x, s = sp.splitmix64(0)
    assert (x, s) == (0xE220A8397B1DCDAF, 0x9E3779B97F4A7C15)  # the reference splitmix64 output for seed 0


def test_randk_scaled_is_unbiased():
    """E[(d/k)·rand-k(g)] = g. N draws: the per-coordinate mean has standard deviation
    |g_j|·sqrt((d/k − 1)/N); every coordinate must be within 5 of them (false alarm < 1e-5)."""
    d, k, n = 20, 4, 20_000
    g = RNG.uniform(0.5, 2.0, d).astype(np.float32) * np.where(RNG.random(d) < 0.5, -1, 1).astype(np.float32)
    s = sp.Sparsifier("randk", d, k, seed=99, scale=d / k)
    total = np.zeros(d)
    counts = np.zeros(d)
    for _ in range(n):
        idx, val = s(g)
        np.testing.assert_allclose(val, (d / k) * g[idx], rtol=1e-6)
        total[idx] += val
        counts[idx] += 1
    mean = total / n
    sd = np.abs(g) * np.sqrt((d / k - 1) / n)
    assert np.all(np.abs(mean - g) < 5 * sd), np.abs(mean - g) / sd
    # every coordinate is chosen with probability k/d: binomial counts within 5 standard deviations
    p = k / d
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p)))


def test_unscaled_randk_contraction_holds_with_equality_in_expectation():
    """E‖rand-k(g) − g‖² = (1 − k/d)‖g‖² (papers.md §5)."""
    d, k, n = 50, 5, 4000
    g = RNG.standard_normal(d).astype(np.float32)
    s = sp.Sparsifier("randk", d, k, seed=1)
    errs = []
    for _ in range(n):
        err = g.astype(np.float64) - s.dense(g)
        errs.append(float(err @ err))
    target = (1 - k / d) * float(g.astype(np.float64) @ g)
    assert abs(np.mean(errs) - target) < 5 * np.std(errs) / np.sqrt(n)


# ---------------------------------------------------------------------------------------------- memory
@pytest.mark.parametrize("kind", ["topk", "randk"])
def test_error_memory_conserves_mass_exactly_on_integer_gradients(kind):
    """Counter-like integer gradients: applied so far + memory == sum of raw gradients, exactly."""
    d, k, steps = 500, 7, 300
    s = sp.Sparsifier(kind, d, k, memory=True, seed=11)
    raw = np.zeros(d, np.float64)
    applied = np.zeros(d, np.float64)
    for t in range(steps):
        g = RNG.integers(-5, 6, d).astype(np.float32) if t % 2 else -np.ones(d, np.float32)
        raw += g
        idx, val = s(g)
        applied[idx] += val
        assert np.array_equal(applied + s.memory, raw), t
        assert np.all(s.memory[idx] == 0)
    assert np.abs(s.memory).sum() > 0  # the memory really holds the rest


def test_error_memory_float_gradients_conserve_up_to_rounding():
    d, k = 400, 20
    s = sp.Sparsifier("topk", d, k, memory=True)
    raw = np.zeros(d)
    applied = np.zeros(d)
    for _ in range(200):
        g = RNG.standard_normal(d).astype(np.float32)
        raw += g
        idx, val = s(g)
        applied[idx] += val
    np.testing.assert_allclose(applied + s.memory, raw, atol=1e-4)


# ------------------------------------------------------------------------------------------ vs the simulator
@pytest.mark.parametrize("kind, memory", [("topk", False), ("topk", True), ("randk", False), ("randk", True)])
def test_kernels_agree_with_the_simulators_numpy_sparsifier(kind, memory):
    d, k = 3001, 37
    seed = sparse_seeds(5, 2)[1]
    compiled = sp.Sparsifier(kind, d, k, memory=memory, seed=seed)
    numpy_ = NumpySparsifier(kind, d, k, memory=memory, seed=seed)
    for _ in range(40):
        g = tied_vector(d, RNG)
        ic, vc = compiled(g)
        inp, vnp = numpy_(g)
        assert np.array_equal(ic, inp) and np.array_equal(vc, vnp)
        if memory:
            assert np.array_equal(compiled.memory, numpy_.memory)
    if kind == "randk":
        assert compiled.rng_state == numpy_.rng_state


def test_sparsify_numpy_is_the_old_simulator_rule():
    """The simulator's historical rule (dense out, memory = a − out) is what sparsify_numpy computes."""
    d, k = 200, 9
    mem = RNG.standard_normal(d).astype(np.float32)
    g = tied_vector(d, RNG)
    a = g + mem
    keep = np.argsort(-np.abs(a), kind="stable")[:k]
    out = np.zeros_like(a)
    out[keep] = a[keep]
    mem2 = mem.copy()
    assert np.array_equal(sparsify_numpy(g, "topk", k, mem2), out)
    assert np.array_equal(mem2, a - out)


# ---------------------------------------------------------------------------------------------- validation
def test_bad_arguments_are_refused():
    a = np.ones(5, np.float32)
    for k in (0, 6, -1):
        with pytest.raises(ValueError):
            sp.topk(a, k)
        with pytest.raises(ValueError):
            sp.randk(5, k, 0)
        with pytest.raises(ValueError):
            sp.Sparsifier("topk", 5, k)
    with pytest.raises(ValueError):
        sp.Sparsifier("bottomk", 5, 2)
    with pytest.raises(ValueError):
        sp.apply(np.zeros(5, np.float32), [5], [1.0], 1.0)
    with pytest.raises(TypeError):
        sp.apply(np.zeros(5, np.float64), [1], [1.0], 1.0)
    with pytest.raises(ValueError):
        sp.Sparsifier("topk", 5, 2)(np.ones(4, np.float32))


# ------------------------------------------------------------- top-k's sampled threshold (d >= 16384)
def _sampled_inputs(d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for the sampled-threshold path: continuous, tied, mostly zero, with NaNs, all equal."""
    normal = (rng.standard_normal(d) * rng.random(d) ** 3).astype(np.float32)
    mostly_zero = np.zeros(d, np.float32)
    nz = rng.choice(d, 300, replace=False)
    mostly_zero[nz] = rng.standard_normal(300).astype(np.float32)
    with_nan = normal.copy()
    with_nan[rng.choice(d, d // 3, replace=False)] = np.nan
    return {"normal": normal, "tied": tied_vector(d, rng), "mostly_zero": mostly_zero,
            "with_nan": with_nan, "equal": np.full(d, -0.5, np.float32)}


@pytest.mark.parametrize("d", [sp.TOPK_SAMPLED_MIN_D, 50_001, 101_770])
def test_topk_with_a_sampled_threshold_is_exact(d):
    """Large vectors take the sampled-threshold path; the result must equal the stable argsort's."""
    rng = np.random.default_rng(d)
    for name, a in _sampled_inputs(d, rng).items():
        for k in (1, 10, 299, 301, 1017, d // 10, d // 4, d // 4 + 1):
            idx, val = sp.topk(a, k)
            expected = topk_numpy(a, k)
            assert np.array_equal(idx, expected), (name, k)
            assert np.array_equal(val, a[expected], equal_nan=True), (name, k)


def test_topk_falls_back_when_the_sample_overestimates_the_threshold():
    """Large values exactly at the sampled positions and small ones elsewhere: the guessed threshold
    keeps far fewer than k candidates, so top-k must fall back to all d magnitudes and stay exact."""
    d, k = sp.TOPK_SAMPLED_MIN_D + 3, 1000
    rng = np.random.default_rng(7)
    a = rng.random(d).astype(np.float32)
    sampled = np.unique(sp.topk_sample_positions(d))
    assert len(sampled) > 1500 and sampled.min() >= 0 and sampled.max() < d
    a[sampled] = (10 + rng.random(len(sampled))).astype(np.float32)
    assert np.count_nonzero(a >= 10) > k  # the k largest are all sampled ones ...
    b = a.copy()
    b[sampled[::2]] = 0.5  # ... and here half of them are small: fewer large values than k
    for x in (a, b):
        assert np.array_equal(sp.topk(x, k)[0], topk_numpy(x, k))
