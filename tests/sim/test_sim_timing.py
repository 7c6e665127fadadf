"""Timing strings, distributions, batched streams and calibration (leashed.sim.timing)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from simtest_helpers import sim

from leashed.errors import SpecError
from leashed.results import RunResult, Samples, UpdateLog
from leashed.sim.timing import (
    Constant,
    Empirical,
    Exponential,
    Gamma,
    LogNormal,
    TimingModel,
    Uniform,
    from_result,
    parse_distribution,
    parse_duration,
    worker_streams,
)
from leashed.spec import ExperimentSpec


@pytest.mark.parametrize("text, seconds", [("2ms", 2e-3), ("5us", 5e-6), ("5 µs", 5e-6), ("7ns", 7e-9),
                                           ("1.5s", 1.5), ("3", 3.0), ("1e-3", 1e-3), (".5ms", 5e-4),
                                           ("2.5E-2 s", 0.025), ("0", 0.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text, cls, mean, cv", [
    ("const:5us", Constant, 5e-6, 0.0),
    ("constant:value=2ms", Constant, 2e-3, 0.0),
    ("const:0", Constant, 0.0, 0.0),
    ("exp:mean=1", Exponential, 1.0, 1.0),
    ("exp:3ms", Exponential, 3e-3, 1.0),
    ("exponential:mean=10us", Exponential, 1e-5, 1.0),
    ("gamma:mean=2ms,cv=0.2", Gamma, 2e-3, 0.2),
    ("Gamma: cv=0.5, mean=1", Gamma, 1.0, 0.5),
    ("lognormal:mean=2ms,cv=0.5", LogNormal, 2e-3, 0.5),
    ("uniform:low=1ms,high=3ms", Uniform, 2e-3, (2e-3 / math.sqrt(12)) / 2e-3),
])
def test_parse_good(text, cls, mean, cv):
    d = parse_distribution(text)
    assert isinstance(d, cls)
    assert d.mean == pytest.approx(mean, rel=1e-12)
    assert d.cv == pytest.approx(cv, rel=1e-12)
    again = parse_distribution(d.describe())
    assert type(again) is cls and again.describe() == d.describe()


@pytest.mark.parametrize("text", ["", "gamma", "gamma:", "gamma:mean=2ms", "gamma:mean=2ms,cv=x",
                                  "gamma:mean=-1,cv=0.2", "gamma:mean=1,cv=-0.1", "exp:mean=0",
                                  "uniform:low=3,high=1", "uniform:low=-1,high=1", "const:-1", "foo:1",
                                  "const:5xs", "exp:mean=1,mean=2", "exp:rate=1", "const:1,2",
                                  "gamma:2ms,0.2", "exp:mean=inf", "exp:mean=nan", "empirical:/no/such.npy",
                                  "exp:mean=1ms;cv=2"])
def test_parse_bad_is_one_line(text):
    with pytest.raises(SpecError) as info:
        parse_distribution(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize("text", ["exp:mean=2", "gamma:mean=2,cv=0.3", "lognormal:mean=2,cv=0.8",
                                  "uniform:low=1,high=3"])
def test_sampled_moments(text):
    d = parse_distribution(text)
    x = d.sample(np.random.default_rng(1), 200_000)
    assert x.min() >= 0
    assert x.mean() == pytest.approx(d.mean, rel=0.01)  # > 4 standard errors
    assert x.std() / x.mean() == pytest.approx(d.cv, rel=0.03)


def test_streams_are_reproducible_and_independent():
    timing = TimingModel.parse("gamma:mean=1,cv=0.5", "exp:mean=0.1")
    def draws(seed: int) -> list[tuple[list[float], list[float]]]:
        return [(list(itertools.islice(c, 300)), list(itertools.islice(u, 300)))
                for c, u in worker_streams(timing, seed, 3)]

    a, b = draws(5), draws(5)
    assert a == b
    assert a[0][0] != a[1][0] and a[0][0] != a[0][1]
    other = [list(itertools.islice(c, 300)) for c, _ in worker_streams(timing, 6, 3)]
    assert other[0] != a[0][0]
    # changing the update law leaves the compute draws alone
    changed = TimingModel.parse("gamma:mean=1,cv=0.5", "const:1")
    assert [list(itertools.islice(c, 300)) for c, _ in worker_streams(changed, 5, 3)][0] == a[0][0]


def test_timing_model_validation():
    with pytest.raises(SpecError):
        TimingModel.parse("exp:mean=1", "exp:mean=1", copy_fraction=1.5)
    with pytest.raises(SpecError):
        TimingModel.parse("exp:mean=1", "exp:mean=1", bus_contention=-1)
    assert TimingModel.parse("const:10", "const:2").ratio == 5


def test_empirical_from_text_and_npy(tmp_path):
    np.save(tmp_path / "t.npy", np.array([1e-3, 2e-3, 3e-3]))
    (tmp_path / "t.txt").write_text("0.001\n0.002\n0.003\n")
    for name in ("t.npy", "t.txt"):
        d = parse_distribution(f"empirical:{tmp_path / name}")
        assert isinstance(d, Empirical) and d.mean == pytest.approx(2e-3)
        assert set(d.sample(np.random.default_rng(0), 100).tolist()) <= {1e-3, 2e-3, 3e-3}
    (tmp_path / "bad.txt").write_text("one\ntwo\n")
    with pytest.raises(SpecError):
        parse_distribution(f"empirical:{tmp_path / 'bad.txt'}")
    with pytest.raises(SpecError):
        Empirical(np.array([-1.0, 1.0]))


def fake_runtime_result(n: int = 400) -> RunResult:
    """A runtime-like result: compute 1 ms (+ jitter), each CAS attempt 0.1 ms, 1-3 attempts."""
    rng = np.random.default_rng(0)
    attempts = rng.integers(1, 4, n)
    t_start = np.arange(n) * 1e-3
    t_grad = t_start + 1e-3 + rng.uniform(0, 1e-4, n)
    t_commit = t_grad + attempts * 1e-4
    log = UpdateLog(thread=np.zeros(n), version_read=np.arange(n), version_commit=np.arange(n),
                    staleness=np.zeros(n), attempts=attempts, dropped=np.zeros(n, bool), t_start=t_start,
                    t_grad=t_grad, t_commit=t_commit)
    spec = ExperimentSpec(algorithm="leashed", threads=2, model="quadratic", dataset="synthetic")
    return RunResult(spec=spec, source="runtime", updates=log, samples=Samples.empty(), params=[],
                     totals={"updates_applied": n, "wall_time_s": t_commit[-1]})


def test_from_result_resamples_measured_times():
    result = fake_runtime_result()
    timing = from_result(result, source="fake.npz")
    assert isinstance(timing.compute, Empirical) and isinstance(timing.update, Empirical)
    assert timing.compute.mean == pytest.approx(1.05e-3, rel=0.01)
    assert len(timing.update.samples) == int(result.updates.attempts.sum())  # one sample per attempt
    assert timing.update.samples == pytest.approx(1e-4)
    assert timing.notes["calibrated_from"] == "fake.npz"


def test_calibrated_simulation_predicts_more_threads(tmp_path):
    path = fake_runtime_result().save(tmp_path / "runtime.npz")
    # compute ≈ 1.05 ms, update 0.1 ms: r ≈ 10.5, so 32 threads saturate at about 1/U = 10,000/s
    spec = ExperimentSpec(algorithm="leashed", threads=32, updates=5_000, model="counter", dataset="none",
                          compute_time=f"empirical:{path}", update_time=f"empirical:{path}")
    from leashed.sim.simulate import run_simulation

    res = run_simulation(spec, metadata=False).result
    x = res.totals["updates_applied"] / res.totals["wall_time_s"]
    assert 9_000 < x <= 10_001
    assert (res.updates.t_grad - res.updates.t_start).min() >= 1e-3


def test_bus_contention_lengthens_updates():
    """U scales by 1 + F·(copies running − 1): with F = 1 and 16 threads in saturation, attempts take
    longer than U on average, so throughput drops below 1/U."""
    from simtest_helpers import spec_of

    from leashed.sim.simulate import run_simulation

    spec = spec_of("leashed", 16, 3_000, "gamma:mean=5,cv=0.2", "const:1")
    plain = run_simulation(spec, metadata=False).result
    slow = run_simulation(spec, TimingModel.parse("gamma:mean=5,cv=0.2", "const:1", 0.5, 1.0),
                          metadata=False).result
    x_plain = plain.totals["updates_applied"] / plain.totals["wall_time_s"]
    x_slow = slow.totals["updates_applied"] / slow.totals["wall_time_s"]
    assert x_slow < 0.8 * x_plain
    assert slow.extra["timing"]["bus_contention"] == 1.0


def test_zero_time_updates_never_fail():
    res = sim("leashed", 8, 2_000, "exp:mean=1", "const:0").result
    assert res.totals["cas_failures"] == 0
