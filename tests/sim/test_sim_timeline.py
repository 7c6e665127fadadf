"""The timeline compute law (leashed.sim.timeline): measured gradient times replayed on the simulated
clock, one block schedule shared by every simulated thread."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from simtest_helpers import spec_of

from leashed.errors import SpecError
from leashed.sim.calibration import calibrate
from leashed.sim.simulate import run_simulation
from leashed.sim.timeline import Timeline, compute_timeline
from leashed.sim.timing import Constant, Empirical, Gamma, TimingModel


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _two_threads() -> list[list[tuple[np.ndarray, np.ndarray]]]:
    # thread 0 starts a gradient every ms with duration 1, 2, 3, ... µs; thread 1 the same + 1000 µs
    starts = np.arange(100) * 1e-3
    return [[(starts, (np.arange(100) + 1) * 1e-6), (starts, (np.arange(100) + 1001) * 1e-6)]]


def test_a_draw_is_the_gradient_of_that_instant_of_the_replayed_block():
    timeline = Timeline(_two_threads(), "toy", block_s=1.0)  # one block longer than the run: wraps
    clock = _Clock()
    draws = timeline.joint_streams(7, 4, clock)
    clock.now = 0.0
    first = [next(s) for s in draws]
    # threads 0 and 1 read the run's threads at one instant; 2 and 3 their next gradients
    assert first[1] - first[0] == pytest.approx(1000e-6)
    assert first[2] - first[0] == pytest.approx(1e-6) and first[3] - first[1] == pytest.approx(1e-6)
    # 5 ms later in the same block: five gradients on, for every thread alike
    clock.now = 5e-3
    later = [next(s) for s in draws]
    assert np.allclose(np.subtract(later, first), 5e-6)


def test_threads_that_share_cores_replay_the_thread_of_their_core():
    """With a placement (threads time-sharing cores), a draw reads the run's thread of the core the
    simulated thread is on, not of its own number: the pair on the cores replays the run's pair."""
    timeline = Timeline(_two_threads(), "toy", block_s=1.0)
    clock = _Clock()
    cores = {0: 0, 1: 1, 2: 1}  # thread 2 on core 1 (as in slot 1 of 3 threads on 2 cores)
    draws = timeline.joint_streams(7, 3, clock, place=lambda j: (cores[j], clock.now))
    first = [next(s) for s in draws]
    assert first[2] == pytest.approx(first[1])  # thread 2 on core 1: the run's thread 1, same gradient
    assert first[1] - first[0] == pytest.approx(1000e-6)
    cores.update({1: 0, 2: 1})
    assert next(draws[1]) == pytest.approx(first[0])  # thread 1 moved to core 0: the run's thread 0
    # the instant comes from the placement too (a descheduled thread's phase starts when it runs again)
    later = timeline.joint_streams(7, 3, clock, place=lambda j: (cores[j], 4e-3))
    assert next(later[0]) - first[0] == pytest.approx(4e-6)
    # a core beyond the run's threads: its thread c mod k, ⌊c / k⌋ gradients on
    beyond = timeline.joint_streams(7, 3, clock, place=lambda j: (3, 0.0))
    assert next(beyond[0]) - first[1] == pytest.approx(1e-6)


def test_the_block_schedule_is_the_seeds_and_blocks_jump():
    starts = np.arange(2000) * 1e-3
    runs = [[(starts, starts * 1e-3 + 1e-6)]]  # duration grows with the instant: shows where we are
    timeline = Timeline(runs, "toy", block_s=0.05)

    def path(seed: int) -> list[float]:
        clock = _Clock()
        (stream,) = timeline.joint_streams(seed, 1, clock)
        out = []
        for k in range(200):
            clock.now = k * 0.01
            out.append(next(stream))
        return out

    a, b = path(1), path(1)
    assert a == b and a != path(2)
    steps = np.diff(a)
    within = steps[np.abs(steps - 1e-5) < 1e-9]  # 10 ms on within a block: +10 gradients of +1 µs
    assert len(within) >= 150  # 4 of every 5 steps stay in their block
    assert np.sum(np.abs(steps - 1e-5) > 1e-7) >= 20  # the others jump to another instant


def test_the_timeline_keeps_the_pooled_distribution_as_a_law():
    rng = np.random.default_rng(0)
    runs = [[(np.cumsum(rng.uniform(1e-3, 2e-3, 500)), rng.gamma(4.0, 1e-4, 500))] for _ in range(3)]
    timeline = Timeline(runs, "toy")
    pooled = np.concatenate([c for run in runs for _, c in run])
    assert timeline.mean == pytest.approx(pooled.mean()) and timeline.cv == pytest.approx(pooled.std() /
                                                                                          pooled.mean())
    assert timeline.describe() == "timeline:toy"
    # replayed at uniform instants, the draws keep the pool's mean (no length bias)
    clock = _Clock()
    (stream,) = timeline.joint_streams(3, 1, clock)
    draws = []
    for k in range(20000):
        clock.now = k * 1.37e-3
        draws.append(next(stream))
    assert np.mean(draws) == pytest.approx(pooled.mean(), rel=0.05)


def test_bad_timelines_are_refused():
    with pytest.raises(SpecError, match="no finite"):
        Timeline([[(np.array([np.nan]), np.array([1.0]))]], "bad")
    with pytest.raises(SpecError, match="block"):
        Timeline(_two_threads(), "toy", block_s=0.0)


def _regime_run(seed: int, n: int = 3000):
    """Two threads whose gradients are 200 µs in the first half of the run and 400 µs in the second (a
    machine whose speed changed for everyone), relabelled as a runtime run."""
    rng = np.random.default_rng(seed)
    spec = spec_of("leashed", 2, n, "const:1", "const:1", seed=seed)
    timing = TimingModel(Gamma(300e-6, 0.05), Constant(10e-6))
    result = run_simulation(spec, timing, metadata=False).result
    log = result.updates
    half = np.median(np.asarray(log.t_start))
    c = np.where(np.asarray(log.t_start) < half, 200e-6, 400e-6) * rng.uniform(0.95, 1.05, len(log))
    updates = dataclasses.replace(log, t_grad=np.asarray(log.t_start) + c)
    return result.replace(source="runtime", updates=updates)


def _concurrent_correlation(result) -> float:
    log = result.updates
    th, ts = np.asarray(log.thread), np.asarray(log.t_start)
    c = np.asarray(log.t_grad) - ts
    a, b = np.nonzero(th == 0)[0], np.nonzero(th == 1)[0]
    b = b[np.argsort(ts[b])]
    nearest = b[np.clip(np.searchsorted(ts[b], ts[a]), 0, len(b) - 1)]
    return float(np.corrcoef(c[a], c[nearest])[0, 1])


def test_a_calibrated_prediction_keeps_the_machines_shared_speed():
    """Threads of the predicted run are fast and slow together under the timeline law (the calibration
    run's regimes), independently under the pooled one."""
    runs = [_regime_run(1), _regime_run(2)]
    spec = spec_of("leashed", 2, 4000, "const:1", "const:1", seed=4)
    timing, _ = calibrate(runs, ["a", "b"], 2, machine_model=False)
    assert isinstance(timing.compute, Timeline) and timing.notes["compute_resampling"] == "timeline"
    pooled, _ = calibrate(runs, ["a", "b"], 2, machine_model=False, compute_resampling="pooled")
    assert isinstance(pooled.compute, Empirical)
    replayed = run_simulation(spec, timing, metadata=False).result
    independent = run_simulation(spec, pooled, metadata=False).result
    assert _concurrent_correlation(replayed) > 0.8
    assert abs(_concurrent_correlation(independent)) < 0.1
    with pytest.raises(SpecError, match="resampling"):
        calibrate(runs, ["a", "b"], 2, compute_resampling="blocks")


def test_compute_timeline_reads_every_thread_of_every_run():
    runs = [_regime_run(3, 400)]
    timeline = compute_timeline(runs, "r")
    assert len(timeline.runs) == 1 and len(timeline.runs[0]) == 2
    assert len(timeline.samples) == len(runs[0].updates)


def test_attempts_replay_on_the_compute_times_block_schedule():
    """A fast run (gradients 100 µs, attempts 10 µs) and a slow one (300 µs, 30 µs): on one frame, the
    attempt drawn at an instant comes from the run the gradient drawn then came from."""
    starts = np.arange(400) * 1e-3
    fast = [(starts, np.full(400, 100e-6))]
    slow = [(starts, np.full(400, 300e-6))]
    compute = Timeline([fast, slow], "toy", block_s=0.01)
    attempts = Timeline([[(starts, np.full(400, 10e-6))], [(starts, np.full(400, 30e-6))]], "toy",
                        frame=compute)
    clock = _Clock()
    (c_stream,) = compute.joint_streams([5, 23], 1, clock)
    (u_stream,) = attempts.joint_streams([5, 23], 1, clock)
    seen = set()
    for k in range(300):
        clock.now = k * 3.1e-3
        c, u = next(c_stream), next(u_stream)
        assert c == pytest.approx(10 * u)
        seen.add(round(c * 1e6))
    assert seen == {100, 300}  # both runs were drawn
    with pytest.raises(SpecError, match="frame"):
        Timeline([[(starts, np.full(400, 10e-6))]], "toy", frame=compute)


def test_calibrated_leashed_attempts_are_replayed_with_the_gradients():
    runs = [_regime_run(5), _regime_run(6)]
    timing, _ = calibrate(runs, ["a", "b"], 2, machine_model=False)
    assert isinstance(timing.update, Timeline) and timing.update.frame is timing.compute
    assert isinstance(timing.update_remote, Timeline) and timing.update_remote.frame is timing.compute
    assert timing.notes["attempt_resampling"] == "timeline"
    # a simulation with replayed laws is reproducible from its seed
    spec = spec_of("leashed", 2, 1500, "const:1", "const:1", seed=3)
    a = run_simulation(spec, timing, metadata=False).result
    b = run_simulation(spec, timing, metadata=False).result
    assert np.array_equal(a.updates.t_commit, b.updates.t_commit)


def test_compute_resampling_and_read_slowdown_on_the_command_line(tmp_path):
    from conftest import assert_one_line_error, run_cli

    path = tmp_path / "m2.npz"
    _regime_run(7, 600).save(path)
    for extra in (("--compute-resampling", "pooled"), ("--read-slowdown", "0.5")):
        proc = run_cli("simulate", "--calibrate-from", str(path), "--threads", "2", "--replicates", "1",
                       *extra, "--out", str(tmp_path / "p.npz"), "--quiet")
        assert proc.returncode == 0, proc.stderr
    from leashed.results import RunResult

    saved = RunResult.load(tmp_path / "p.npz")
    assert saved.extra["machine"]["read_slowdown"] == 0.5
    bads = ((("--read-slowdown", "-1"), "--read-slowdown"), (("--read-slowdown", "x"), "--read-slowdown"))
    for bad, needle in bads:
        proc = run_cli("simulate", "--calibrate-from", str(path), "--threads", "2", *bad, "--out",
                       str(tmp_path / "bad.npz"), cwd=tmp_path)
        assert_one_line_error(proc, needle)
    proc = run_cli("simulate", "--threads", "2", "--compute-time", "const:1ms", "--update-time", "const:1us",
                   "--compute-resampling", "pooled", "--out", str(tmp_path / "bad.npz"))
    assert_one_line_error(proc, "--compute-resampling")
    assert not (tmp_path / "bad.npz").exists()


def test_each_seed_replays_a_bootstrap_resample_of_the_runs():
    """Seeds draw runs with replacement (a replicate's spread includes the choice of calibration runs);
    over many seeds every run is used in proportion to its gradients."""
    starts = np.arange(100) * 1e-3
    runs = [[(starts, np.full(100, (r + 1) * 1e-6))] for r in range(4)]
    timeline = Timeline(runs, "toy", block_s=0.001)
    used = []
    for seed in range(200):
        clock = _Clock()
        (stream,) = timeline.joint_streams([seed, 23], 1, clock)
        seen = set()
        for k in range(60):
            clock.now = k * 1e-3
            seen.add(round(next(stream) * 1e6))
        used.append(seen)
    # with 60 blocks from a resample of 4 runs, some seeds never see a run (P = (3/4)^4 per run)
    assert any(len(s) < 4 for s in used) and any(len(s) == 4 for s in used)
    counts = {r: sum(r in s for s in used) for r in (1, 2, 3, 4)}
    assert all(120 <= c <= 180 for c in counts.values())  # 1 − (3/4)^4 = 68 % of 200 seeds each


def test_replicates_of_a_prediction_from_several_runs_say_they_resample_them():
    from leashed.sim.replicates import run_replicates

    runs = [_regime_run(8, 800), _regime_run(9, 800)]
    spec = spec_of("leashed", 2, 600, "const:1", "const:1", seed=1)
    several, _ = calibrate(runs, ["a", "b"], 2, machine_model=False)
    one, _ = calibrate(runs[:1], ["a"], 2, machine_model=False)
    assert run_replicates(spec, several, replicates=3).result.extra["replicates_resample_calibration"] is True
    assert run_replicates(spec, one, replicates=3).result.extra["replicates_resample_calibration"] is False


@pytest.mark.parametrize("m", [2, 4])
def test_a_replayed_prediction_of_the_calibrating_process_does_not_differ(m):
    """Calibration runs and target runs from one known process (the simulator, relabelled as runtime
    runs): the replayed prediction, its replicates resampling the calibration runs, must not read
    `differ` against held-out runs of that process (a false alarm of the calibrated path)."""
    from leashed.analysis.compare import compare_pair
    from leashed.sim.replicates import run_replicates

    def run(seed: int, compute_mean: float = 300e-6):
        timing = TimingModel(Gamma(compute_mean, 0.2), Constant(20e-6), update_remote=Constant(30e-6))
        spec = spec_of("leashed", m, 2000, "const:1", "const:1", seed=seed)
        return run_simulation(spec, timing, metadata=False).result.replace(source="runtime")

    for base in (10, 20):
        calibration = [run(base + k) for k in range(3)]
        targets = [run(base + 5 + k) for k in range(3)]
        predicted_timing, _ = calibrate(calibration, ["a", "b", "c"], m, machine_model=False)
        spec = spec_of("leashed", m, 2000, "const:1", "const:1", seed=base + 9)
        predicted = run_replicates(spec, predicted_timing, replicates=5).result
        assert predicted.extra["replicates_resample_calibration"] is True
        pair = compare_pair(predicted, targets, calibrated=True)
        assert pair.verdict != "differ", pair.detail()
    # and it still sees a machine 1.5x slower than the one it was calibrated on
    slower = compare_pair(predicted, [run(40 + k, 450e-6) for k in range(3)], calibrated=True)
    assert slower.quantities["throughput"].verdict == "differ"


def test_destall_replaces_each_stalled_phase_by_the_last_one_before_it():
    """A phase longer than the median by more than the threshold was taken off its core: it becomes the
    last phase before it that was not (the median at the start)."""
    from leashed.sim.timeline import destall

    d = np.array([300e-6, 300e-6, 310e-6, 4.3e-3, 4.1e-3, 290e-6, 305e-6])
    fixed, count = destall(d, 2e-3)
    assert count == 2
    assert fixed[3] == fixed[4] == d[2]  # both stalls take the phase before the first
    assert np.array_equal(np.delete(fixed, [3, 4]), np.delete(d, [3, 4]))
    first, n = destall(np.array([5e-3, 300e-6, 300e-6, 300e-6]), 2e-3)  # no phase before it
    assert n == 1 and first[0] == pytest.approx(300e-6)
    same, none = destall(np.array([300e-6, 310e-6]), 2e-3)
    assert none == 0 and np.array_equal(same, [300e-6, 310e-6])
