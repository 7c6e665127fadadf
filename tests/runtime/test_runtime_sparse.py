"""Sparsified gradients on the runtime's real threads (papers.md §5, docs/sparsification.md).

The "+1 counter" model has the gradient -1 in every coordinate whatever the parameters, so what each
thread's sparsifier selects depends only on how many gradients that thread computed (and its seed, for
rand-k): with lr 1 and constant steps the final parameter vector of a consistent run is known exactly,
coordinate by coordinate. It is replayed here with the numpy statement of the sparsifiers
(:class:`leashed.sim.gradients.NumpySparsifier`), independent of the compiled kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from runtime_helpers import check_records, counter_spec, overlapping_run

from leashed.errors import DataError, SpecError
from leashed.results import RunResult
from leashed.runtime import _workers
from leashed.runtime.reference import reference_run
from leashed.runtime.run import prepare, run, thread_seeds
from leashed.sim.gradients import NumpySparsifier
from leashed.sim.simulate import run_simulation
from leashed.spec import ALGORITHMS, ExperimentSpec

from conftest import assert_one_line_error, run_cli

DIM = 5000
K = 50  # 1 % of DIM
SPARSIFIERS = [("topk", False), ("topk", True), ("randk", False), ("randk", True)]


def sparse_counter(algorithm: str, m: int, kind: str, memory: bool, updates: int = 1500, dim: int = DIM,
                   k: int = K, **kw: object):
    return counter_spec(algorithm, m, updates=updates, dim=dim, sparsifier=f"{kind}:{k}",
                        error_memory=memory, **kw)


def replay(spec: ExperimentSpec, computed: list[int]) -> tuple[np.ndarray, list[float]]:
    """(what the counter parameters gain when every computed gradient is applied, each thread's final
    memory sum): thread i's sparsifier, seeded like the runtime's thread i, run on computed[i] gradients
    of -1 everywhere."""
    kind, k = spec.sparsifier.split(":")
    gained = np.zeros(spec.dim, dtype=np.float64)
    memory_sums = []
    for seed, n in zip(thread_seeds(spec), computed, strict=True):
        sp = NumpySparsifier(kind, spec.dim, int(k), spec.error_memory, int(seed))
        g = np.full(spec.dim, -1.0, dtype=np.float32)
        for _ in range(n):
            idx, val = sp(g)
            gained[idx] -= val
        memory_sums.append(0.0 if sp.memory is None else float(sp.memory.astype(np.float64).sum()))
    return gained, memory_sums


# ---------------------------------------------------------------------------------- consistent: lose nothing
@pytest.mark.parametrize("kind, memory", SPARSIFIERS)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("algorithm", ["lock", "leashed"])
def test_consistent_algorithms_lose_no_sparse_update(algorithm, m, kind, memory):
    spec = sparse_counter(algorithm, m, kind, memory, persistence="inf")
    result = overlapping_run(spec)
    check_records(result)
    applied, d = result.totals["updates_applied"], spec.dim
    assert applied == 1500 and result.totals["updates_dropped"] == 0
    computed = result.extra["per_thread"]["computed"]
    assert sum(computed) == applied
    sparse = result.extra["sparse"]
    assert sparse["kind"] == kind and sparse["k"] == K and sparse["error_memory"] == memory
    params = result.params.astype(np.float64)
    if kind == "topk" and not memory:
        # all magnitudes tie at 1: the K lowest indices, every time, by every thread
        assert np.all(params[:K] == applied) and np.all(params[K:] == 0)
    if not memory:
        assert params.sum() == K * applied  # each update adds exactly K
        assert sparse["memory_sum"] == [0.0] * m
    else:
        # error feedback conserves mass: what was applied + what the memories hold = d per gradient
        assert params.sum() == d * applied + sum(sparse["memory_sum"])
        assert sum(sparse["memory_sum"]) < 0
    assert -sum(sparse["applied_sum"]) == params.sum()
    gained, memory_sums = replay(spec, computed)
    np.testing.assert_array_equal(params, gained)  # coordinate by coordinate
    assert sparse["memory_sum"] == memory_sums
    assert result.totals["lost_updates"] == 0.0


@pytest.mark.parametrize("kind", ["topk", "randk"])
def test_leashed_retries_do_not_select_again(kind):
    """A failed CAS re-applies the same pairs: with error memory, selecting again per attempt would take
    the gradient into the memory twice and break the conservation of mass."""
    for _ in range(5):
        spec = sparse_counter("leashed", 4, kind, True, updates=2000, dim=20_000, k=20, persistence="inf")
        result = run(spec)
        if result.totals["cas_failures"] > 0:
            break
    assert result.totals["cas_failures"] > 0, "no CAS failed: nothing was tested"
    gained, memory_sums = replay(spec, result.extra["per_thread"]["computed"])
    np.testing.assert_array_equal(result.params.astype(np.float64), gained)
    assert result.extra["sparse"]["memory_sum"] == memory_sums


@pytest.mark.parametrize("m", [2, 4])
def test_leashed_drops_lose_their_sparse_part(m):
    spec = sparse_counter("leashed", m, "topk", False, persistence=0)
    result = overlapping_run(spec)
    check_records(result)
    applied = result.totals["updates_applied"]
    assert applied + result.totals["updates_dropped"] == 1500
    assert np.all(result.params[:K] == applied) and np.all(result.params[K:] == 0)


@pytest.mark.parametrize("kind, memory", SPARSIFIERS)
@pytest.mark.parametrize("m", [2, 4])
def test_hogwild_reports_its_lost_sparse_updates(m, kind, memory):
    spec = sparse_counter("hogwild", m, kind, memory)
    result = overlapping_run(spec)
    check_records(result)
    assert result.totals["updates_applied"] == 1500
    gained, _ = replay(spec, result.extra["per_thread"]["computed"])
    params = result.params.astype(np.float64)
    assert np.all(params <= gained) and np.all(params >= 0)  # racing stores only ever lose
    assert -sum(result.extra["sparse"]["applied_sum"]) == gained.sum()
    assert result.totals["lost_updates"] == (gained.sum() - params.sum()) / spec.dim


def test_hogwild_loses_sparse_updates_under_contention():
    # every thread writes the same K coordinates (top-k of a constant gradient): racing stores collide
    lost = []
    for _ in range(5):
        result = run(sparse_counter("hogwild", 8, "topk", False, updates=20_000, dim=4000, k=1000))
        lost.append(result.totals["lost_updates"])
        assert result.params[1000:].max() == 0
        if lost[-1] > 0:
            break
    assert max(lost) > 0, lost


@pytest.mark.parametrize("m", [2, 4])  # 1/m exact in float32
def test_sync_sums_the_sparsified_gradients(m):
    spec = sparse_counter("sync", m, "randk", True, updates=300, dim=500, k=10)
    result = run(spec)
    assert result.extra["rounds"] == 300 // m  # full rounds only: each one's mean divides by m
    gained, memory_sums = replay(spec, result.extra["per_thread"]["computed"])
    # m * params = every gradient's selection (mean of the round; all integer-valued, exact)
    np.testing.assert_array_equal(m * result.params.astype(np.float64), gained)
    assert result.extra["sparse"]["memory_sum"] == memory_sums


# ---------------------------------------------------------------------------------- the reference twin
def quadratic_spec(algorithm: str, threads: int = 1, sparsifier: str = "topk:8", memory: bool = False,
                   **kw: object) -> ExperimentSpec:
    return ExperimentSpec(algorithm=algorithm, threads=threads, model="quadratic", dataset="synthetic",
                          dim=40, batch_size=8, lr=0.3, updates=300, evaluations=0, sparsifier=sparsifier,
                          error_memory=memory, **kw)


@pytest.mark.parametrize("memory", [False, True])
@pytest.mark.parametrize("kind", ["topk", "randk"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_thread_matches_the_reference(algorithm, kind, memory):
    spec = quadratic_spec(algorithm, sparsifier=f"{kind}:8", memory=memory)
    prep = prepare(spec)
    fast = run(spec, prepared=prep)
    slow = reference_run(spec, prep)
    dense = reference_run(spec.replace(sparsifier="none", error_memory=False), prep)
    assert not np.array_equal(slow.params, prep.theta0), "the reference did not train"
    assert not np.array_equal(slow.params, dense.params), "the sparsifier changed nothing"
    np.testing.assert_array_equal(fast.params, slow.params)
    sums = fast.extra["sparse"]["memory_sum"]
    if memory:
        assert sums[0] == pytest.approx(math.fsum(slow.memory[0].astype(np.float64)), rel=1e-9, abs=1e-9)
        assert sums[0] != 0
    else:
        assert slow.memory is None and sums == [0.0]


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("kind", ["topk", "randk"])
def test_sync_matches_the_reference_for_any_thread_count(kind, m):
    spec = quadratic_spec("sync", m, sparsifier=f"{kind}:8", memory=True).replace(updates=301)
    prep = prepare(spec)
    np.testing.assert_array_equal(run(spec, prepared=prep).params, reference_run(spec, prep).params)


@pytest.mark.parametrize("algorithm, m", [("seq", 1), ("leashed", 1), ("sync", 2), ("sync", 3)])
@pytest.mark.parametrize("kind, memory", SPARSIFIERS)
def test_matches_the_simulator_bit_for_bit(algorithm, m, kind, memory):
    """The simulator's with-gradients mode seeds its workers' sparsifiers as the runtime seeds its threads:
    with one thread (or sync's fixed rounds) both apply the same selections, rand-k draws included."""
    spec = quadratic_spec(algorithm, m, sparsifier=f"{kind}:8", memory=memory).replace(
        updates=301, compute_time="const:1ms", update_time="const:1ms")
    sim = run_simulation(spec, gradients=True, metadata=False)
    np.testing.assert_array_equal(run(spec).params, sim.result.params)


def test_k_equal_to_d_is_dense_sgd():
    for algorithm in ("seq", "leashed"):
        spec = quadratic_spec(algorithm)
        prep = prepare(spec)
        dense = run(spec.replace(sparsifier="none"), prepared=prep).params
        for sparsifier in ("topk:40", "topk:100%", "randk:40"):
            np.testing.assert_array_equal(run(spec.replace(sparsifier=sparsifier), prepared=prep).params,
                                          dense)


def test_one_thread_sparse_mlp_on_mnist_is_bitwise_equal():
    spec = ExperimentSpec(algorithm="leashed", threads=1, model="mlp", hidden=(32,), updates=30, lr=0.1,
                          evaluations=0, sparsifier="topk:1%", error_memory=True)
    try:
        prep = prepare(spec)
    except DataError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    np.testing.assert_array_equal(run(spec, prepared=prep).params, reference_run(spec, prep).params)


# ---------------------------------------------------------------------------------- bad K, the CLI
@pytest.mark.parametrize("sparsifier, needle", [
    ("topk:101", r"K=101 is larger than the model \(100 parameters\)"),
    ("randk:101", r"K=101 is larger than the model \(100 parameters\)"),
    ("topk:none", "error memory needs a sparsifier"),
])
def test_bad_sparsifier_is_refused_before_any_thread_starts(sparsifier, needle, monkeypatch):
    """K is checked against the model (K <= 0 and malformed strings already by ExperimentSpec)."""
    def no_run(**kw: object) -> None:
        raise AssertionError("the run state was built: threads would have started")

    monkeypatch.setattr(_workers, "Run", no_run)
    if sparsifier == "topk:none":
        spec = counter_spec("lock", 2, updates=100, dim=100, error_memory=True)
    else:
        spec = counter_spec("leashed", 2, updates=100, dim=100, sparsifier=sparsifier)
    with pytest.raises(SpecError, match=needle):
        run(spec)
    with pytest.raises(SpecError, match="K must be at least 1"):
        counter_spec("leashed", 2, updates=100, dim=100, sparsifier="topk:0")


def test_cli_refuses_k_larger_than_the_mlp(tmp_path):
    out = tmp_path / "run.npz"
    proc = run_cli("train", "--sparsifier", "topk:200000", "--model", "mlp", "--out", str(out), cwd=tmp_path)
    if "mnist" in proc.stderr.lower() and "200000" not in proc.stderr:
        pytest.skip(f"MNIST not available: {proc.stderr.strip()}")
    assert_one_line_error(proc, "K=200000 is larger than the model (101770 parameters)")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_trains_sparse_and_reruns_from_the_file(tmp_path):
    out = tmp_path / "a.npz"
    proc = run_cli("train", "--algorithm", "leashed", "--threads", "2", "--model", "counter", "--dim", "1000",
                   "--lr", "1", "--updates", "2000", "--evaluations", "2", "--sparsifier", "topk:10%",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "topk:10%" in proc.stdout
    first = RunResult.load(out)
    applied = first.totals["updates_applied"]
    assert first.spec.sparsifier == "topk:10%" and not first.spec.error_memory
    assert np.all(first.params[:100] == applied) and np.all(first.params[100:] == 0)
    again = tmp_path / "b.npz"
    proc = run_cli("train", "--from", str(out), "--error-memory", "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    second = RunResult.load(again)
    assert second.spec == first.spec.replace(error_memory=True)
    assert second.params.sum() == 1000 * 2000 + sum(second.extra["sparse"]["memory_sum"])
    dense = tmp_path / "c.npz"
    proc = run_cli("train", "--from", str(again), "--sparsifier", "none", "--out", str(dense))
    assert proc.returncode == 0, proc.stderr
    third = RunResult.load(dense)
    assert third.spec.sparsifier == "none" and not third.spec.error_memory
    assert np.all(third.params == 2000) and "sparse" not in third.extra
