"""Sparsified updates in the simulator (papers.md §5): the update time scales with K/d, the with-gradients
mode uses the runtime's kernels with the runtime's per-thread seeds."""

from __future__ import annotations

import numpy as np
import pytest

from leashed.errors import SpecError
from leashed.results import RunResult
from leashed.sim.simulate import model_size, run_simulation, sparse_timing, timing_of
from leashed.sim.timing import from_result, sparse_update_scaling
from leashed.spec import ExperimentSpec

from conftest import assert_one_line_error, run_cli


def spec(algorithm: str, m: int, n: int, sparsifier: str = "none", dim: int = 1000,
         **extra: object) -> ExperimentSpec:
    return ExperimentSpec(algorithm=algorithm, threads=m, updates=n, model="counter", dataset="none", dim=dim,
                          compute_time="const:1ms", update_time="const:1ms", sparsifier=sparsifier,
                          extra=extra)


def wall(s: ExperimentSpec, **kw) -> float:
    return run_simulation(s, metadata=False, samples=5, **kw).wall_time


# ------------------------------------------------------------------------------------------ the formula
@pytest.mark.parametrize("algorithm", ["leashed", "lock", "hogwild"])
def test_default_keeps_the_copy_dense(algorithm):
    factor, copy_share, f = sparse_update_scaling(algorithm, 0.1, 0.5)
    assert f == 0.5
    assert factor == pytest.approx(0.5 + 0.5 * 0.1)
    assert copy_share * factor == pytest.approx(0.5)  # the copy keeps its length U·c


def test_seq_and_sync_defaults():
    assert sparse_update_scaling("seq", 0.1, 0.5)[0] == pytest.approx(0.1)
    assert sparse_update_scaling("sync", 0.01, 0.5, m=8)[0] == pytest.approx(0.08)  # union of m gradients
    assert sparse_update_scaling("sync", 0.2, 0.5, m=8)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("f, c", [(0.0, 0.5), (0.3, 0.5), (0.5, 0.5), (0.8, 0.5), (1.0, 0.2), (0.2, 0.0)])
def test_explicit_dense_share(f, c):
    rho = 0.05
    factor, copy_share, share = sparse_update_scaling("leashed", rho, c, f)
    assert share == f
    assert factor == pytest.approx(f + (1 - f) * rho)
    copy_dense = min(f, c)
    assert copy_share * factor == pytest.approx(copy_dense + (c - copy_dense) * rho)
    assert sparse_update_scaling("leashed", 1.0, c, f)[0] == pytest.approx(1.0)  # K = d: dense


def test_bad_scaling_inputs():
    with pytest.raises(SpecError):
        sparse_update_scaling("leashed", 0.0, 0.5)
    with pytest.raises(SpecError):
        sparse_update_scaling("leashed", 0.1, 0.5, 1.5)


# ------------------------------------------------------------------------------------------ timing-only runs
def test_seq_update_time_scales_with_k_over_d():
    """seq, C = U = 1 ms: N·(C + U·K/d) simulated seconds."""
    n = 200
    assert wall(spec("seq", 1, n)) == pytest.approx(n * 2e-3)
    assert wall(spec("seq", 1, n, "topk:10%")) == pytest.approx(n * (1e-3 + 1e-4))
    assert wall(spec("seq", 1, n, "randk:25")) == pytest.approx(n * (1e-3 + 1e-3 * 25 / 1000))


@pytest.mark.parametrize("algorithm", ["leashed", "lock", "hogwild"])
def test_one_thread_update_keeps_the_copy(algorithm):
    n = 100
    dense = wall(spec(algorithm, 1, n))
    sparse = wall(spec(algorithm, 1, n, "topk:1%"))
    assert dense == pytest.approx(n * 2e-3)
    assert sparse == pytest.approx(n * (1e-3 + 1e-3 * (0.5 + 0.5 * 0.01)))
    explicit = wall(spec(algorithm, 1, n, "topk:1%", sparse_update_factor=0.0))
    assert explicit == pytest.approx(n * (1e-3 + 1e-5))


def test_sparse_leashed_commits_faster_and_fails_fewer_cas():
    """Shorter updates: higher throughput past the knee and fewer CAS failures (papers.md §6.1), and
    still E[τ] = m − 1 (T1: any timing)."""
    dense = run_simulation(spec("leashed", 8, 4000), metadata=False).result
    sparse = run_simulation(spec("leashed", 8, 4000, "topk:1%"), metadata=False).result
    assert sparse.totals["wall_time_s"] < dense.totals["wall_time_s"]
    assert sparse.totals["cas_failures"] < dense.totals["cas_failures"]
    assert sparse.staleness.mean() == pytest.approx(7, rel=0.01)
    notes = sparse.extra["timing"]
    assert notes["sparse_fraction"] == pytest.approx(0.01)
    assert notes["sparse_update_scale"] == pytest.approx(0.505)


def test_model_size_without_loading_data():
    assert model_size(spec("seq", 1, 1, dim=77)) == 77
    mlp = ExperimentSpec(model="mlp", hidden=(128,), dataset="mnist", updates=1)
    assert model_size(mlp) == 101_770
    assert model_size(mlp.replace(dataset="fashion-mnist", hidden=(64, 32))) == 784 * 64 + 64 + 64 * 32 + 32 \
        + 32 * 10 + 10
    assert model_size(ExperimentSpec(model="quadratic", dataset="synthetic", dim=12)) == 12


def test_calibration_from_a_sparse_run_is_not_scaled_twice():
    s = spec("seq", 1, 50, "topk:10%")
    first = run_simulation(s, metadata=False).result
    timing = from_result(first)
    assert timing.notes["calibration_sparse_scale"] == pytest.approx(0.1)
    again = run_simulation(s, timing, metadata=False).result
    assert again.totals["wall_time_s"] == pytest.approx(first.totals["wall_time_s"])
    # the same measurements predict the dense run: the factor is divided out
    dense = run_simulation(spec("seq", 1, 50), timing, metadata=False).result
    assert dense.totals["wall_time_s"] == pytest.approx(50 * 2e-3)


def test_a_sparsified_timing_is_never_scaled_twice():
    s = spec("leashed", 2, 10, "topk:10%")
    once = sparse_timing(s, timing_of(s))
    assert sparse_timing(s, once) is once


# ------------------------------------------------------------------------------------------ with gradients
def test_with_gradients_topk_time_and_result():
    """With gradients the update time scales too, and the counter model (gradient −1 everywhere) with
    top-k and lr 1 adds exactly 1 to K coordinates per update (the lowest indices: all ties)."""
    s = spec("seq", 1, 30, "topk:10", dim=100).replace(lr=1.0, evaluations=0)
    sim = run_simulation(s, gradients=True, metadata=False)
    params = sim.result.params
    assert np.array_equal(params[:10], np.full(10, 30.0)) and not params[10:].any()
    assert sim.wall_time == pytest.approx(30 * (1e-3 + 1e-3 * 0.1))


def test_with_gradients_error_memory_counter_conserves():
    """Counter (gradient −1 everywhere), rand-k with error memory, lr 1, 3 workers: in every coordinate,
    θ_j − Σ_workers e_j = number of gradients computed (papers.md §5: error feedback loses nothing; the
    memories hold −1 per gradient not yet applied there), exactly."""
    s = spec("leashed", 3, 60, "randk:7", dim=40).replace(lr=1.0, evaluations=0, error_memory=True)
    sim = run_simulation(s, gradients=True, metadata=False)
    assert sim.result.totals["updates_applied"] == 60
    memories = sim.engine.memory
    assert len(memories) == 3 and all(m.any() for m in memories)
    assert np.array_equal(sim.result.params - np.sum(memories, axis=0), np.full(40, 60.0))


# ------------------------------------------------------------------------------------------ command line
def test_cli_timing_only_sparsifier(tmp_path):
    out = tmp_path / "s.npz"
    proc = run_cli("simulate", "--algorithm", "leashed", "--threads", "4", "--compute-time", "const:1ms",
                   "--update-time", "const:1ms", "--sparsifier", "topk:1%", "--dim", "101770",
                   "--sparse-update-factor", "0.2", "--updates", "200", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    notes = RunResult.load(out).extra["timing"]
    assert notes["sparse_dense_share"] == 0.2
    assert notes["sparse_update_scale"] == pytest.approx(0.2 + 0.8 * 1018 / 101770)


@pytest.mark.parametrize("args, needle", [
    (["--sparse-update-factor", "0.3"], "needs a sparsifier"),
    (["--sparsifier", "topk:1%", "--sparse-update-factor", "2"], "[0, 1]"),
    (["--sparsifier", "topk:5000", "--dim", "100"], "larger than the model"),
])
def test_cli_sparse_errors(tmp_path, args, needle):
    proc = run_cli("simulate", "--algorithm", "leashed", "--threads", "2", "--compute-time", "const:1ms",
                   "--update-time", "const:1ms", "--updates", "10", "--out", str(tmp_path / "x.npz"), *args)
    assert_one_line_error(proc, needle)
