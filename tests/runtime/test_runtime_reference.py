"""The Cython runtime against its pure-Python twin (runtime/reference.py) and the step policies' mirror."""

from __future__ import annotations

import math

import numpy as np
import pytest
from runtime_helpers import counter_spec

from leashed.errors import DataError
from leashed.runtime import _workers
from leashed.runtime.reference import TailState, reference_run, step_factor
from leashed.runtime.run import fleet_beta, prepare, run
from leashed.spec import ALGORITHMS, STEP_POLICIES, STEP_POLICY_CODES, ExperimentSpec

TABLE = (1.5, 1.0, 0.75, 0.5, 0.25)


def quadratic_spec(algorithm: str, threads: int = 1, policy: str = "constant",
                   **kw: object) -> ExperimentSpec:
    return ExperimentSpec(algorithm=algorithm, threads=threads, model="quadratic", dataset="synthetic",
                          dim=40, batch_size=8, lr=0.3, updates=300, evaluations=0, step_policy=policy,
                          step_table=TABLE if policy == "normalised" else None, **kw)


def twin(spec: ExperimentSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prep = prepare(spec)
    fast = run(spec, prepared=prep)
    slow = reference_run(spec, prep)
    return fast.params, slow.params, prep.theta0


@pytest.mark.parametrize("policy", STEP_POLICIES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_thread_matches_the_reference(algorithm, policy):
    fast, slow, theta0 = twin(quadratic_spec(algorithm, policy=policy))
    assert not np.array_equal(slow, theta0), "the reference did not train"
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-7)


def test_tail_switches_on_after_15m_updates():
    """m = 1: the updates producing versions 11..15 are sampled (tau = 0); the update producing version 16
    is the first with s = 1 + A(1 - 2F(0)) = 2."""
    spec = quadratic_spec("seq", policy="tail").replace(updates=15)
    base = quadratic_spec("seq").replace(updates=15)
    prep = prepare(spec)
    np.testing.assert_array_equal(run(spec, prepared=prep).params, run(base, prepared=prep).params)
    spec16, base16 = spec.replace(updates=16), base.replace(updates=16)
    prep16 = prepare(spec16)
    tail = run(spec16, prepared=prep16).params
    assert not np.array_equal(tail, run(base16, prepared=prep16).params)
    np.testing.assert_allclose(tail, reference_run(spec16, prep16).params, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_sync_matches_the_reference_for_any_thread_count(m):
    """sync is deterministic: round s averages the gradients of tickets s*m .. s*m+m-1 on one theta
    (301 updates: the last round is partial for every m here)."""
    fast, slow, _ = twin(quadratic_spec("sync", m).replace(updates=301))
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-7)


def test_one_thread_mlp_on_mnist_is_bitwise_equal():
    spec = ExperimentSpec(algorithm="leashed", threads=1, model="mlp", hidden=(32,), updates=40, lr=0.1,
                          evaluations=0)
    try:
        fast, slow, _ = twin(spec)
    except DataError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_reference_threads_keep_the_counter_invariants(algorithm):
    spec = counter_spec(algorithm, 3, updates=300, dim=50, persistence=0 if algorithm == "leashed" else "inf")
    out = reference_run(spec)
    assert out.computed == 300
    if algorithm != "hogwild":
        assert np.all(out.params == out.applied) and out.version == out.applied
    assert sorted(v for v in out.version_commit if v >= 0) == list(range(out.applied))


# ---------------------------------------------------------------- step policies, C against Python
@pytest.mark.parametrize("m", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("policy", STEP_POLICIES)
def test_step_factors_match_the_python_mirror(policy, m):
    taus = np.arange(0, 60)
    rng = np.random.default_rng(m)
    samples = rng.poisson(m, size=5 * m)
    c = _workers.step_factors(STEP_POLICY_CODES[policy], taus, m, fleet_beta(m),
                              tail_samples=samples if policy == "tail" else None,
                              step_table=TABLE if policy == "normalised" else None)
    tail = TailState(m)
    if policy == "tail":
        for i, s in enumerate(samples):
            tail.observe(10 * m + i, int(s))
    py = [step_factor(policy, int(t), m, tail=tail, table=TABLE) for t in taus]
    np.testing.assert_allclose(c, py, rtol=1e-15, atol=0)


def test_step_policy_values():
    assert fleet_beta(2) == pytest.approx((2 / 3) * math.log(2))  # floor(3/2) = 1, papers.md §3.1
    assert fleet_beta(3) == pytest.approx(0.5 * math.log(3))
    assert step_factor("fleet", 1, 2) == pytest.approx(2 ** (-2 / 3))  # about 0.63
    assert step_factor("inverse", 3, 8) == 0.25
    assert step_factor("normalised", 99, 2, table=TABLE) == 0.25
    tail = TailState(2)
    assert step_factor("tail", 5, 2, tail=tail) == 1.0  # not sampled yet
    for i in range(10):
        tail.observe(20 + i, 1)  # every sampled tau is 1 (papers.md §3.1: m = 2, 98% at 1)
    assert step_factor("tail", 1, 2, tail=tail) == 2.0  # F(1) = 0: the step doubles
    assert step_factor("tail", 2, 2, tail=tail) == 0.0
    unsampled = _workers.step_factors(STEP_POLICY_CODES["tail"], [0, 3], 2, fleet_beta(2))
    assert list(unsampled) == [1.0, 1.0]
