"""Calibration from runtime results (leashed.sim.calibration): completed attempts split by who wrote the
copied vector, the closest run's compute times, the machine the runs recorded."""

from __future__ import annotations

import numpy as np
import pytest
from simtest_helpers import spec_of

from leashed.errors import SpecError
from leashed.sim.calibration import attempt_times, calibrate
from leashed.sim.machine import Machine
from leashed.sim.simulate import run_simulation
from leashed.sim.timing import Constant, Gamma, TimingModel


def _as_runtime(result, machine: dict | None = None):
    """A simulated result relabelled as a runtime one (known laws in, calibration must find them)."""
    metadata = {"machine": machine} if machine else {}
    return result.replace(source="runtime", metadata=metadata)


def _run(m: int, seed: int = 0, n: int = 4000):
    timing = TimingModel(Gamma(250e-6, 0.1), Constant(10e-6), update_remote=Constant(30e-6))
    spec = spec_of("leashed", m, n, "const:1", "const:1", seed=seed)
    return run_simulation(spec, timing, metadata=False).result


def test_attempt_times_split_local_and_remote():
    pools = attempt_times(_run(2))
    assert len(pools["local"]) > 0 and len(pools["remote"]) > 0
    assert np.allclose(pools["local"], 10e-6) and np.allclose(pools["remote"], 30e-6)
    one = attempt_times(_run(1))
    assert len(one["remote"]) == 0 and np.allclose(one["local"], 10e-6)


def test_calibrate_recovers_the_laws_and_the_machine():
    r1 = _as_runtime(_run(1), {"usable_cores": 2, "background_load_cores": 0.1})
    r2 = _as_runtime(_run(2), {"usable_cores": 2, "background_load_cores": 0.3})
    timing, machine = calibrate([r1, r2], ["m1.npz", "m2.npz"], 4)
    assert timing.update.mean == pytest.approx(10e-6) and timing.update_remote.mean == pytest.approx(30e-6)
    # concurrency min(4, 2 cores) = 2: compute from the m = 2 run(s), pooled over replicates
    assert timing.notes["compute_from"] == "m2.npz"
    assert timing.notes["read_slowdown_from"] == "m2.npz vs m1.npz"
    r2b = _as_runtime(_run(2, seed=5))
    pooled, _ = calibrate([r1, r2, r2b], ["m1.npz", "m2.npz", "m2b.npz"], 4)
    assert pooled.notes["compute_from"] == "m2.npz, m2b.npz"
    assert len(pooled.compute.samples) == len(r2.updates) + len(r2b.updates)
    # the recorded loads as competing busy threads (fair share): m = 1 with 0.1 cores leaves a core free,
    # so B = 0.1; m = 2 with 0.3: B = 2·0.3/(2 − 0.3); at m = 4 their mean B takes 2B/(4 + B)
    b = (0.1 + 2 * 0.3 / 1.7) / 2
    assert machine.cores == 2 and machine.background_load == pytest.approx(2 * b / (4 + b))
    assert machine.notes["load_model"] == "competing" and machine.notes["recorded_load"] == pytest.approx(0.2)
    _, fixed = calibrate([r1, r2], ["m1.npz", "m2.npz"], 4, load_model="fixed")
    assert fixed.background_load == pytest.approx(0.2)  # the mean, at any m
    with pytest.raises(SpecError, match="load model"):
        calibrate([r1, r2], ["m1.npz", "m2.npz"], 4, load_model="steady")
    _, one = calibrate([r1, r2], ["m1.npz", "m2.npz"], 1)
    assert one.cores == 2
    t1, _ = calibrate([r1, r2], ["m1.npz", "m2.npz"], 1)
    assert t1.notes["compute_from"] == "m1.npz"
    _, quiet = calibrate([r1, r2], ["m1.npz", "m2.npz"], 4, ignore_load=True)
    assert quiet.background_load == 0.0
    _, forced = calibrate([r1, r2], ["m1.npz", "m2.npz"], 4, cores=16)
    assert forced.cores == 16


def test_a_prediction_from_the_recovered_laws_matches_the_source():
    # calibrated from m = 1, 2 of a known model, the prediction of m = 2 reproduces its throughput
    r1, r2 = _as_runtime(_run(1)), _as_runtime(_run(2))
    timing, machine = calibrate([r1, r2], ["a", "b"], 2)
    spec = spec_of("leashed", 2, 4000, "const:1", "const:1", seed=9)
    predicted = run_simulation(spec, timing, metadata=False, machine=machine).result
    x_p, x_m = predicted.summary()["updates_per_s"], r2.summary()["updates_per_s"]
    assert x_p == pytest.approx(x_m, rel=0.03)


def test_calibrate_refuses_mixed_or_simulated_inputs():
    r2 = _run(2)
    with pytest.raises(SpecError, match="simulator result"):
        calibrate([r2], ["sim.npz"], 2)
    lock = _as_runtime(run_simulation(spec_of("lock", 2, 200, "const:1", "const:0.1"), metadata=False).result)
    with pytest.raises(SpecError, match="one algorithm"):
        calibrate([_as_runtime(r2), lock], ["a", "b"], 2)
    assert Machine().ideal


def test_calibrated_prediction_cli_flow(tmp_path):
    """docs/simulator.md "Calibrated predictions", small: calibrate, two calibration runs, a target run,
    a prediction from both runs and the machine file, compare; bad machine input is one line."""
    from conftest import assert_one_line_error, run_cli

    def ok(*args):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc

    ok("calibrate", "--quick", "--out", "machine.json")
    small = ("--hidden", "16", "--updates", "400", "--evaluations", "0")
    ok("train", "--algorithm", "leashed", "--threads", "1", *small, "--seed", "100", "--out", "m1.npz")
    ok("train", "--algorithm", "leashed", "--threads", "2", *small, "--seed", "101", "--out", "m2.npz")
    ok("train", "--algorithm", "leashed", "--threads", "3", *small, "--out", "real-m3.npz")
    ok("simulate", "--calibrate-from", "m1.npz", "--calibrate-from", "m2.npz", "--machine", "machine.json",
       "--threads", "3", "--out", "predicted-m3.npz")
    from leashed.results import RunResult

    predicted = RunResult.load(tmp_path / "predicted-m3.npz")
    assert len(predicted.extra["replicates"]) == 5
    assert predicted.extra["machine"]["cores"] == 2 or predicted.extra["machine"]["cores"] >= 1
    assert predicted.extra["attempt_model"] == "runtime"
    assert predicted.extra["timing"]["attempt_samples_local"] > 0
    proc = ok("compare", "predicted-m3.npz", "real-m3.npz")
    assert any(word in proc.stdout for word in ("agree", "differ", "inconclusive"))
    if predicted.extra["machine"].get("recorded_load") is not None:  # /proc/stat was readable
        assert predicted.extra["machine"]["load_model"] == "competing"
        ok("simulate", "--calibrate-from", "m1.npz", "--calibrate-from", "m2.npz", "--machine",
           "machine.json", "--threads", "3", "--replicates", "1", "--load-model", "fixed",
           "--out", "fixed.npz")
        fixed = RunResult.load(tmp_path / "fixed.npz").extra["machine"]
        assert fixed["load_model"] == "fixed"
        assert fixed["background_load"] == pytest.approx(fixed["recorded_load"])
    (tmp_path / "newer.json").write_text('{"format": "leashed-machine", "format_version": 99}')
    bads = ((("--machine", "missing.json"), "missing.json"), (("--machine", "newer.json"), "newer"),
            (("--cores", "0"), "--cores"), (("--cores", "x"), "--cores"),
            (("--load-model", "steady"), "--load-model"))
    for bad, needle in bads:
        proc = run_cli("simulate", "--calibrate-from", "m2.npz", "--threads", "2", *bad, "--out", "bad.npz",
                       cwd=tmp_path)
        assert_one_line_error(proc, needle)
        assert not (tmp_path / "bad.npz").exists()


@pytest.mark.parametrize("slowdown", [0.0, 0.3, 0.8])
def test_read_slowdown_is_recovered_from_a_one_thread_and_a_two_thread_run(slowdown):
    """A gradient slowed by s × the time another thread copies its vector (machine model): comparing the
    one-thread run with the two-thread run finds s again (read_slowdown_estimate)."""
    from leashed.sim.calibration import read_slowdown_estimate

    runs = []
    for m in (1, 2):
        timing = TimingModel(Gamma(250e-6, 0.05), Constant(25e-6), update_remote=Constant(30e-6))
        spec = spec_of("leashed", m, 6000, "const:1", "const:1", seed=3 + m)
        machine = Machine(read_slowdown=slowdown)
        runs.append(run_simulation(spec, timing, machine=machine, metadata=False).result)
    estimate, overlap = read_slowdown_estimate(runs[1], runs[0])
    assert overlap > 20e-6  # most gradients of m = 2 overlap the other thread's copy of their vector
    assert estimate == pytest.approx(slowdown, abs=0.05)
    timing, machine = calibrate([_as_runtime(r) for r in runs], ["m1", "m2"], 2)
    assert timing.notes["read_slowdown_estimated"] == pytest.approx(estimate)
    assert machine.read_slowdown == 0.0  # the m = 2 compute times already hold the slowdown


def test_a_calibration_run_that_time_shared_the_cores_sets_the_rotation_jitter():
    """Runs at m <= P give the exact rotation; a run at m > P gives the jitter read off its gaps, on the
    machine file's time slice (without one no gap can be read: 0)."""
    from types import SimpleNamespace

    profile = SimpleNamespace(time_slice_s=4e-3, cores=2, switch_gap_s=0.0, copy_concurrent_s=(),
                              read_slowdown=0.0, source=None)
    timing = TimingModel(Gamma(500e-6, 0.1), Constant(20e-6), update_remote=Constant(30e-6))
    shared = run_simulation(spec_of("leashed", 4, 4000, "const:1", "const:1", seed=3), timing, metadata=False,
                            machine=Machine(cores=2, time_slice_s=4e-3, rotation_jitter=0.5)).result
    r1, r2, r4 = _as_runtime(_run(1)), _as_runtime(_run(2)), _as_runtime(shared, {"usable_cores": 2})
    _, exact = calibrate([r1, r2], ["m1", "m2"], 8, profile=profile)
    assert exact.rotation_jitter == 0.0 and "rotation_irregular_share" not in exact.notes
    _, jittered = calibrate([r1, r2, r4], ["m1", "m2", "m4"], 8, profile=profile)
    assert jittered.rotation_jitter == pytest.approx(0.5, abs=0.15)
    assert len(jittered.notes["rotation_irregular_share"]) == 1
    _, blind = calibrate([r1, r2, r4], ["m1", "m2", "m4"], 8)
    assert blind.rotation_jitter == 0.0
    # runs at m <= P only: the jitter `leashed calibrate --from RUN.npz` measured, when the file has one
    measured = SimpleNamespace(**vars(profile), rotation_jitter=0.4)
    _, from_file = calibrate([r1, r2], ["m1", "m2"], 8, profile=measured)
    assert from_file.rotation_jitter == 0.4 and from_file.notes["rotation_jitter_from"] == "machine file"
    _, own_runs = calibrate([r1, r2, r4], ["m1", "m2", "m4"], 8, profile=measured)
    assert own_runs.rotation_jitter == jittered.rotation_jitter  # a time-shared calibration run comes first


def test_a_competing_load_takes_its_fair_share_at_every_thread_count():
    """A busy loop is one thread among m + 1: on 2 cores it took 1.01, 0.66, 0.51, 0.42 and 0.25 cores
    from 1, 2, 3, 4 and 8 MLP threads (2-core VM, docs/analysis.md). Read off one thread count, the
    model gives the others."""
    from leashed.sim.calibration import competing_load, competing_threads

    b = competing_threads(0.66, 2, 2)  # 2·0.66/(2 − 0.66)
    assert b == pytest.approx(0.985, abs=1e-3)
    predicted = [competing_load(b, m, 2) for m in (1, 2, 3, 4, 8)]
    assert predicted == pytest.approx([0.985, 0.66, 0.496, 0.395, 0.219], abs=2e-3)
    for measured, value in zip([1.01, 0.66, 0.51, 0.42, 0.25], predicted, strict=True):
        assert abs(measured - value) < 0.035
    for load, c in [(0.3, 2), (0.5, 1), (1.2, 4), (0.01, 2)]:  # round trip
        assert competing_load(competing_threads(load, c, 2), c, 2) == pytest.approx(load)
    assert competing_threads(0.0, 2, 2) == 0.0 and competing_load(0.0, 8, 2) == 0.0
    assert competing_threads(5.0, 2, 2) == pytest.approx(2 * 1.8 / 0.2)  # capped at 0.9 P


def test_a_loaded_calibration_has_its_stalls_taken_out_and_the_scheduler_puts_the_load_back():
    """Calibration runs whose recorded load took their threads off their cores (2 threads, 0.65 of 2
    cores): their stalled phases are replaced (sim.timeline.destall), calibrated_share is 1, and the
    prediction's scheduler gives the threads the share the load leaves. Quiet runs keep their phases."""
    record = {"usable_cores": 2, "background_load_cores": 0.65}
    loaded = [_as_runtime(_run(2, seed=s), record) for s in (1, 2)]
    timing, machine = calibrate(loaded, ["a.npz", "b.npz"], 2)
    assert timing.notes["destalled"]["calibration_load"] == pytest.approx(0.65)
    assert machine.calibrated_share == 1.0
    scheduler = machine.scheduler(2)
    assert scheduler is not None and scheduler.share == pytest.approx((2 - 0.65) / 2, abs=0.01)
    quiet = [_as_runtime(_run(2, seed=s), {"usable_cores": 2, "background_load_cores": 0.02}) for s in (1, 2)]
    timing_q, machine_q = calibrate(quiet, ["a.npz", "b.npz"], 2)
    assert "destalled" not in timing_q.notes
    assert machine_q.calibrated_share == pytest.approx(1.0 - 0.02 / 2)
    assert machine_q.scheduler(2) is None  # the quiet runs' own share: nothing added


def test_sync_update_time_is_the_stripe_after_the_barrier_and_scales_with_the_threads():
    """sync: U = t_commit − the round's last t_grad (t_commit − t_grad also holds the wait for the slowest
    gradient, which the simulator adds itself), and each of m threads sums all m gradients over its 1/m
    of the coordinates, n·(1 + 2/m) floats moved, so a prediction of m threads from runs of m_cal scales
    U by (1 + 2/m) / (1 + 2/m_cal)."""
    from leashed.sim.calibration import stripe_scale
    from leashed.sim.timing import measured_times

    spec = spec_of("sync", 2, 400, "const:1", "const:1")
    timing = TimingModel(Gamma(250e-6, 0.3), Constant(20e-6))
    run2 = _as_runtime(run_simulation(spec, timing, metadata=False).result)
    _, update = measured_times(run2)
    assert np.allclose(update, 20e-6)  # not 20 µs plus the wait for the other thread's gradient
    t4, _ = calibrate([run2], ["s2.npz"], 4)
    assert t4.update.mean == pytest.approx(20e-6 * 0.75)  # (1 + 2/4) / (1 + 2/2)
    assert stripe_scale(2, 8) == pytest.approx(0.625) and stripe_scale(2, 2) == 1.0
    assert stripe_scale(1, 3) == pytest.approx(5 / 9)
    t2, _ = calibrate([run2], ["s2.npz"], 2)
    assert t2.update.mean == pytest.approx(20e-6)
