"""With-gradients mode: real gradients applied in simulated order (quadratic and counter models)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leashed.models import reference
from leashed.models.datasets import load_dataset
from leashed.models.registry import build_model
from leashed.results import RunResult
from leashed.sim.batches import BatchSchedule, batch_rows, epoch_permutation
from leashed.sim.simulate import run_simulation
from leashed.spec import ExperimentSpec

LR = 0.2
BATCH = 16


def grad_spec(algorithm: str, m: int, n: int, **fields) -> ExperimentSpec:
    fields.setdefault("compute_time", "exp:mean=1ms")
    fields.setdefault("update_time", "const:200us")
    fields.setdefault("model", "quadratic")
    fields.setdefault("dataset", "synthetic")
    fields.setdefault("lr", LR)
    fields.setdefault("evaluations", 4)
    return ExperimentSpec(algorithm=algorithm, threads=m, updates=n, batch_size=BATCH, seed=3, **fields)


@pytest.fixture(scope="module")
def quadratic():
    data = load_dataset("synthetic", dim=100, seed=3)
    model = build_model("quadratic", data.n_features, data.n_classes)
    return data, model, model.bind(data.X_train, data.y_train, BATCH)


def kernel_grad(bound, theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
    g = np.empty_like(theta)
    bound.loss_grad(theta, rows, g)
    return g


@pytest.mark.parametrize("algorithm", ["seq", "leashed", "lock", "hogwild", "sync"])
def test_one_worker_is_sequential_sgd(algorithm, quadratic):
    """One worker: the same batches in ticket order, each applied to the parameters it was computed on:
    bit for bit the plain loop (same kernel), and the plain-numpy-gradient loop to float32 rounding."""
    data, model, bound = quadratic
    n = 300
    res = run_simulation(grad_spec(algorithm, 1, n), gradients=True, metadata=False)
    u = res.result.updates
    assert res.records["ticket"].tolist() == list(range(n))
    assert u.version_read.tolist() == list(range(n)) and (u.staleness == 0).all()
    theta = model.init_params(3)
    plain = theta.astype(np.float64)
    for k in range(n):
        rows = batch_rows(k, data.n_train, BATCH, 3)
        theta -= np.float32(LR) * kernel_grad(bound, theta, rows)
        _, g = reference.loss_grad(model, plain, data.X_train[rows], data.y_train[rows])
        plain -= LR * g
    assert np.array_equal(res.result.params, theta)
    np.testing.assert_allclose(res.result.params, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algorithm, persistence", [("leashed", "1"), ("leashed", "inf"), ("lock", "inf"),
                                                    ("hogwild", "inf")])
def test_updates_replay_in_commit_order(algorithm, persistence, quadratic):
    """m = 4 with contention: every committed update is θ_{t+1} = θ_t − α·g(θ_{version read}, batch of
    its ticket), in commit order; replaying the records reproduces the final parameters exactly."""
    data, model, bound = quadratic
    spec = grad_spec(algorithm, 4, 300, persistence=persistence, update_time="exp:mean=300us")
    res = run_simulation(spec, gradients=True, metadata=False)
    u = res.result.updates
    committed = np.flatnonzero(~u.dropped)
    assert u.staleness[committed].max() >= 2
    if persistence == "1":
        assert u.dropped.sum() > 0
    thetas = [model.init_params(3)]
    for j in committed:
        assert u.version_commit[j] == len(thetas) - 1
        g = kernel_grad(bound, thetas[u.version_read[j]], batch_rows(int(res.records["ticket"][j]),
                                                                      data.n_train, BATCH, 3))
        thetas.append(thetas[-1] - np.float32(LR) * g)
    assert np.array_equal(res.result.params, thetas[-1])


def test_inverse_step_policy_scales_by_staleness(quadratic):
    data, model, bound = quadratic
    res = run_simulation(grad_spec("leashed", 4, 200, step_policy="inverse", update_time="exp:mean=300us"),
                         gradients=True, metadata=False)
    u = res.result.updates
    assert not u.dropped.any() and u.staleness.max() > 0
    history = [model.init_params(3)]
    for j in range(len(u)):
        g = kernel_grad(bound, history[u.version_read[j]],
                        batch_rows(int(res.records["ticket"][j]), data.n_train, BATCH, 3))
        history.append(history[-1] - np.float32(LR / (u.staleness[j] + 1)) * g)
    assert np.array_equal(res.result.params, history[-1])


def test_sync_round_is_one_step_on_the_mean(quadratic):
    """T12 with gradients: a round computes m gradients on the same θ and takes one mean step (the sum in
    thread order, the coefficient lr/m in float32, as the runtime's stripes)."""
    data, model, bound = quadratic
    m, rounds = 4, 10
    res = run_simulation(grad_spec("sync", m, m * rounds), gradients=True, metadata=False)
    theta = model.init_params(3)
    for s in range(rounds):
        grads = [kernel_grad(bound, theta, batch_rows(s * m + i, data.n_train, BATCH, 3)) for i in range(m)]
        total = grads[0].copy()
        for g in grads[1:]:
            total += g
        theta = theta - np.float32(LR / m) * total
    assert np.array_equal(res.result.params, theta)


def test_topk_sparsifier_keeps_k_coordinates(quadratic):
    data, model, bound = quadratic
    res = run_simulation(grad_spec("seq", 1, 50, sparsifier="topk:7"), gradients=True, metadata=False)
    theta = model.init_params(3)
    for k in range(50):
        g = kernel_grad(bound, theta, batch_rows(k, data.n_train, BATCH, 3))
        keep = np.argsort(-np.abs(g), kind="stable")[:7]
        sparse = np.zeros_like(g)
        sparse[keep] = g[keep]
        theta -= np.float32(LR) * sparse
    assert np.array_equal(res.result.params, theta)


@pytest.mark.parametrize("algorithm, persistence", [("leashed", "0"), ("lock", "inf"), ("hogwild", "inf")])
def test_counter_model_counts_committed_updates(algorithm, persistence):
    """The counter's gradient is −1 everywhere: with lr 1 every parameter ends at the number of committed
    updates (papers.md T9: no update is lost in the simulation)."""
    spec = grad_spec(algorithm, 4, 500, model="counter", dataset="none", lr=1.0, dim=5,
                     persistence=persistence, update_time="const:500us")
    res = run_simulation(spec, gradients=True, metadata=False).result
    if persistence == "0":
        assert res.totals["updates_dropped"] > 0
    assert np.all(res.params == res.totals["updates_applied"])


def test_loss_samples_and_file_round_trip(quadratic, tmp_path):
    res = run_simulation(grad_spec("leashed", 2, 400, evaluations=4), gradients=True, metadata=False).result
    smp = res.samples
    ok = np.isfinite(smp.loss)
    assert smp.version[ok].tolist() == [0, 100, 200, 300, 400]
    assert np.all(np.diff(smp.loss[ok]) < 0)  # a well-conditioned least-squares problem
    assert np.all(np.diff(smp.time) >= 0)
    back = RunResult.load(res.save(tmp_path / "g.npz"))
    assert np.array_equal(back.params, res.params) and back.extra["mode"] == "gradients"


def test_divergence_stops_the_run():
    res = run_simulation(grad_spec("leashed", 4, 3000, lr=100.0), gradients=True, metadata=False).result
    assert res.totals["diverged_at"] is not None
    assert res.extra["gradients_computed"] < 3000
    assert res.totals["diverged_at"] <= res.totals["updates_applied"]


def test_batch_schedule():
    n_rows, bs, seed = 100, 16, 7
    nb = n_rows // bs
    schedule = BatchSchedule(n_rows, bs, seed)
    epoch0 = np.concatenate([batch_rows(k, n_rows, bs, seed) for k in range(nb)])
    assert len(np.unique(epoch0)) == nb * bs  # an epoch never repeats a row
    assert np.array_equal(epoch0, epoch_permutation(0, n_rows, seed)[:nb * bs])
    for k in (0, 5, 6, 13, 40, 7):
        assert np.array_equal(schedule.rows(k), batch_rows(k, n_rows, bs, seed))
    assert not np.array_equal(batch_rows(nb, n_rows, bs, seed), batch_rows(0, n_rows, bs, seed))
    assert not np.array_equal(batch_rows(0, n_rows, bs, seed), batch_rows(0, n_rows, bs, seed + 1))
    assert math.isclose(len(batch_rows(3, n_rows, bs, seed)), bs)


def test_a_diverging_simulation_is_saved_and_exits_2(tmp_path):
    """docs/errors.md: a loss above 10 x ln(classes) stops the simulated run too; saved, exit 2."""
    from leashed.results import RunResult

    from conftest import run_cli

    out = tmp_path / "div.npz"
    proc = run_cli("simulate", "--algorithm", "leashed", "--threads", "4", "--compute-time", "exp:mean=1ms",
                   "--update-time", "const:50us", "--model", "mlp", "--hidden", "16", "--lr", "1000",
                   "--updates", "300", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("leashed: error: ") and "diverged" in lines[0]
    result = RunResult.load(out)
    assert result.totals["diverged_at"] >= 0 and result.totals["updates_applied"] < 300
