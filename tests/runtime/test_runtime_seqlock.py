"""seqlock AsyncSGD (docs/seqlock.md), the sixth algorithm, added through the registry alone: runtime,
pure-Python reference and simulator agree with one thread; on real threads the counter model is exact,
every snapshot is consistent, retries are recorded and the staleness bounds that hold do hold."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from runtime_helpers import check_records, counter_spec, threads_overlap

from leashed import algorithms
from leashed.errors import DataError
from leashed.runtime.reference import reference_run
from leashed.runtime.run import prepare, run
from leashed.sim.simulate import run_simulation
from leashed.spec import ExperimentSpec


def test_registry_entry_states_the_traits():
    entry = algorithms.algorithm("seqlock")
    assert entry.consistent and not entry.can_lose_updates and not entry.has_cas and not entry.uses_pool
    assert entry.live_vectors(4) == 5 and entry.dense_copy and not entry.mpi and entry.snapshot_reads
    assert not entry.staleness_identity  # commits that overlap a snapshot fall in no window (docs/seqlock.md)
    assert "seqlock" in algorithms.asynchronous_names() and "seqlock" not in algorithms.mpi_names()


@pytest.mark.parametrize("sparsifier", ["none", "topk:8"])
def test_one_thread_runtime_reference_and_simulator_agree(sparsifier):
    spec = ExperimentSpec(algorithm="seqlock", threads=1, model="quadratic", dataset="synthetic", dim=40,
                          batch_size=8, lr=0.3, updates=300, evaluations=0, sparsifier=sparsifier,
                          compute_time="const:1ms", update_time="const:1ms")
    prep = prepare(spec)
    fast = run(spec, prepared=prep)
    slow = reference_run(spec, prep)
    sim = run_simulation(spec, gradients=True, metadata=False).result
    assert not np.array_equal(slow.params, prep.theta0), "the reference did not train"
    np.testing.assert_array_equal(fast.params, slow.params)
    np.testing.assert_array_equal(fast.params, sim.params)
    for u in (fast.updates, sim.updates):  # one thread: no retry, every read is the latest version
        assert np.all(u.attempts == 1) and np.all(u.staleness == 0)
        assert np.array_equal(u.version_read, np.arange(300))
    assert slow.version_read == list(range(300)) and slow.version == fast.extra["final_version"] == 300


@pytest.mark.parametrize("m", [2, 4, 8])
def test_counter_model_is_exact(m):
    result = run(counter_spec("seqlock", m, updates=1500))
    check_records(result)
    assert threads_overlap(result), "the threads never ran at the same time: nothing was tested"
    assert result.totals["updates_applied"] == 1500 == result.extra["final_version"]
    assert np.all(result.params == 1500), (result.params.min(), result.params.max())
    assert result.totals["lost_updates"] == 0.0
    assert result.extra["per_thread"]["applied"] and min(result.extra["per_thread"]["applied"]) > 0


@pytest.mark.parametrize("m", [2, 4])
def test_snapshots_are_consistent(m):
    """The counter model's loss is −mean(θ): a consistent snapshot of version v has loss exactly −v. The
    coordinator's snapshots use the workers' reader (seqlock_read); HOGWILD!'s racy copy fails this.

    The coordinator snapshots when it wakes past an evaluation point (at least 5 ms apart), so the run is
    long enough (about 0.2 s here) for most of the 19 points to get their own snapshot while workers run;
    the first and the final snapshot are taken with no worker running and do not count."""
    result = run(counter_spec("seqlock", m, updates=8000, dim=50_000).replace(evaluations=20))
    s = result.samples
    evaluated = ~np.isnan(s.loss)
    during = evaluated & (s.version > 0) & (s.version < 8000)
    assert during.sum() >= 8, f"only {during.sum()} snapshots were taken while the workers ran"
    np.testing.assert_array_equal(s.loss[evaluated], -s.version[evaluated].astype(np.float64))


def test_snapshot_retries_are_recorded_and_staleness_bounds_hold():
    """attempts = snapshot copies; a retry happens when a commit overlaps a copy (big vectors, more
    threads than cores). Each thread's read windows are disjoint, so each commit lies in at most one window
    of each other thread: sum τ <= (m − 1)·n; a thread's snapshot always includes its own last commit."""
    m, n = 4, 2000
    retried = 0
    for _ in range(3):
        result = run(counter_spec("seqlock", m, updates=n, dim=50_000))
        check_records(result)
        u = result.updates
        retried += int((u.attempts > 1).sum())
        assert u.staleness.sum() <= (m - 1) * n
        for tid in range(m):
            mine = np.flatnonzero(u.thread == tid)  # commit order
            assert np.all(u.version_read[mine[1:]] >= u.version_commit[mine[:-1]] + 1)
        if retried:
            break
    assert retried > 0, "no snapshot was ever retried: the retry path was not exercised"


def test_simulator_retries_snapshots_and_replays_in_commit_order():
    """m = 4 with gradients: every committed update is θ_{t+1} = θ_t − α·g(θ_{version read}) in commit
    order (a snapshot is a consistent version), retries happen, and the counter-model sim is exact."""
    from leashed.sim.batches import batch_rows

    spec = ExperimentSpec(algorithm="seqlock", threads=4, updates=300, batch_size=16, seed=3,
                          model="quadratic", dataset="synthetic", dim=100, lr=0.2, evaluations=0,
                          compute_time="exp:mean=1ms", update_time="exp:mean=600us")
    sim = run_simulation(spec, gradients=True, metadata=False)
    u = sim.result.updates
    assert u.staleness.max() >= 2 and (u.attempts > 1).sum() > 0
    assert np.array_equal(u.version_commit, np.arange(300))
    engine = sim.engine
    thetas = [engine.model.init_params(3)]
    g = np.empty_like(thetas[0])
    for j in range(300):
        rows = batch_rows(int(sim.records["ticket"][j]), engine.data.n_train, 16, 3)
        engine.bound.loss_grad(thetas[u.version_read[j]], rows, g)
        thetas.append(thetas[-1] - np.float32(0.2) * g)
    assert np.array_equal(sim.result.params, thetas[-1])
    counter = run_simulation(spec.replace(model="counter", dataset="none", dim=5, lr=1.0), gradients=True,
                             metadata=False).result
    assert np.all(counter.params == 300)


def test_mnist_mlp_two_threads_reaches_97_percent_in_5_epochs():
    """About 15 s on the loaded 2-core machine (not marked slow: under the suite's 20 s rule)."""
    spec = ExperimentSpec(algorithm="seqlock", threads=2, epochs=5, evaluations=1)
    try:
        result = run(spec, progress=False)
    except DataError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    assert result.summary()["final_test_accuracy"] >= 0.97


def test_docs_commands_run(tmp_path):
    """docs/seqlock.md's "Try it" commands, as written."""
    import re
    import shlex
    import subprocess
    import sys

    from conftest import ROOT

    block = re.search(r"## Try it\n\n```bash\n(.*?)```", (ROOT / "docs" / "seqlock.md").read_text(), re.S)
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "leashed"
        proc = subprocess.run([sys.executable, "-m", "leashed", *argv[1:]], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
        outputs.append(proc.stdout + proc.stderr)
    assert "lost updates 0 " in outputs[0], outputs[0]
    assert (tmp_path / "seqlock-counter.npz").exists() and (tmp_path / "seqlock-sim.npz").exists()


def test_snapshot_end_is_recorded_and_calibration_measures_the_copy_apart():
    """The runtime records the end of the successful snapshot as t_attempt (t_start <= t_attempt <=
    t_grad), as the simulator does; calibration then takes the gradient as t_grad − t_attempt, U as one
    snapshot try plus the apply, and the copy fraction from those, instead of counting the copy in the
    gradient and splitting U at 0.5."""
    from leashed.sim.calibration import calibrate
    from leashed.sim.timing import measured_copy_fraction, measured_times, snapshot_phases

    result = run(counter_spec("seqlock", 2, updates=1500, dim=200_000))
    u = result.updates
    assert np.all(u.t_start <= u.t_attempt) and np.all(u.t_attempt <= u.t_grad)
    assert np.any(u.t_attempt > u.t_start)  # a 200,000-float copy takes measurable time
    copies, applies = snapshot_phases(result)
    np.testing.assert_allclose(copies, (u.t_attempt - u.t_start) / u.attempts)
    np.testing.assert_allclose(applies, u.t_commit - u.t_grad)
    compute, update = measured_times(result)
    np.testing.assert_allclose(compute, u.t_grad - u.t_attempt)
    np.testing.assert_allclose(update, copies + (u.t_commit - u.t_grad))
    fraction = measured_copy_fraction(result)
    assert 0.0 < fraction < 1.0
    assert fraction == pytest.approx(copies.sum() / update.sum())
    timing, _ = calibrate([result], ["run.npz"], 4)
    assert timing.copy_fraction == pytest.approx(fraction)
    assert timing.notes["copy_fraction_measured"] == pytest.approx(fraction)
    assert calibrate([result], ["run.npz"], 4, copy_fraction=0.5)[0].copy_fraction == 0.5  # given: kept
    # a file without the snapshot's end (t_attempt read as t_grad): the former split
    old = result.replace(updates=dataclasses.replace(u, t_attempt=u.t_grad.copy()))
    assert snapshot_phases(old) is None and measured_copy_fraction(old) is None
    assert calibrate([old], ["old.npz"], 4)[0].copy_fraction == 0.5
    # the simulator records the same instant: the end of the successful snapshot copy
    spec = ExperimentSpec(algorithm="seqlock", threads=1, updates=20, compute_time="const:1ms",
                          update_time="const:400us", model="counter", dataset="none")
    sim = run_simulation(spec, metadata=False).result.updates
    np.testing.assert_allclose(sim.t_attempt - sim.t_start, 200e-6)
    np.testing.assert_allclose(sim.t_grad - sim.t_attempt, 1e-3)
