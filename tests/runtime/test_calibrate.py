"""``leashed calibrate`` (the nogil micro-benchmarks of leashed.runtime._machine) and the runtime's record of
the machine it ran on, ``result.metadata["machine"]`` (issue 13 items 3 and 4; docs/machine.md).

Timing on a shared machine is noisy: the benchmarks are checked for what must hold whatever the load
(shapes, signs, a 256x larger copy taking longer, two threads pinned to one core never running at once),
and the run under a deliberate busy-loop competitor is the one strongly asserted case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from runtime_helpers import counter_spec

from leashed.machine import DEFAULT_DIM, load_machine, machine_loaded, usable_cpus
from leashed.runtime import _machine
from leashed.runtime.run import run

from conftest import assert_one_line_error, run_cli

CPUS = usable_cpus()


def test_calibrate_writes_a_valid_machine_file(tmp_path):
    out = tmp_path / "machine.json"
    started = time.monotonic()
    proc = run_cli("calibrate", "--quick", "--dim", "4096", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60
    phases = [line for line in proc.stderr.splitlines() if line.startswith("leashed calibrate: ")]
    assert len(phases) >= 4, proc.stderr  # one progress line per phase
    assert f"wrote {out}" in proc.stdout
    p = load_machine(out)
    assert p.dim == 4096 and p.cores == len(CPUS) and p.cpu_ids == CPUS
    assert len(p.copy_concurrent_s) == p.cores and len(p.idle_share) == p.cores
    assert all(t > 0 for t in (p.copy_local_s, p.axpy_local_s, p.copy_remote_s, p.axpy_remote_s,
                               p.time_slice_s))
    assert p.background_load == pytest.approx(sum(1 - s for s in p.idle_share))
    assert 0 <= p.background_load <= p.cores
    assert p.metadata["cpu_model"] and p.metadata["quick"] is True
    assert not list(tmp_path.glob(".*.tmp"))


def test_calibrate_from_a_results_file_uses_its_size(tmp_path):
    result = run(counter_spec("seq", 1, updates=10, dim=3000))
    path = result.save(tmp_path / "run.npz")
    out = tmp_path / "m.json"
    proc = run_cli("calibrate", "--quick", "--from", str(path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    profile = load_machine(out)
    assert profile.dim == 3000
    assert DEFAULT_DIM == 784 * 128 + 128 + 128 * 10 + 10  # the MNIST MLP of the README
    assert profile.rotation_jitter is None and "seq threads block" in profile.metadata["rotation"]


def test_calibrate_from_a_run_measures_how_the_scheduler_rotates_its_threads(tmp_path):
    """--from a hogwild run: its spec again with 2P threads, and the rotation read off their commits."""
    path = run(counter_spec("hogwild", 2, updates=2000, dim=3000)).save(tmp_path / "run.npz")
    out = tmp_path / "m.json"
    proc = run_cli("calibrate", "--quick", "--from", str(path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"scheduler rotation: 1 x {2 * len(CPUS)} threads of hogwild counter" in proc.stderr
    # the rotation runs come before the micro-benchmarks (made after them, in the same process, their
    # gaps were irregular about half as often again: leashed.runtime.rotation.rotation_runs)
    assert proc.stderr.index("scheduler rotation") < proc.stderr.index("copy and axpy")
    profile = load_machine(out)
    rotation = profile.metadata["rotation_run"]
    assert rotation["threads"] == 2 * len(CPUS) and rotation["runs"] == 1  # --quick: one run
    assert rotation["updates"] == [2000]  # as long as the run it was calibrated from
    if profile.rotation_jitter is None:  # a machine where the threads never time-shared
        assert "did not time-share" in profile.metadata["rotation"]
    else:
        assert 0.0 <= profile.rotation_jitter <= 1.0 and 0.0 <= profile.rotation_irregular_share <= 1.0
        assert rotation["gaps"] >= 1
    assert "rotation of 2P threads" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["--dim", "0"], "--dim"),
    (["--dim", "-5"], "--dim"),
    (["--dim", str(1 << 30)], "--dim"),
    (["--dim", "many"], "invalid int"),
    (["--dim", "10", "--from", "x.npz"], "not allowed with"),
    (["--from", "nope.npz"], "does not exist"),
])
def test_calibrate_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "machine.json"
    assert_one_line_error(run_cli("calibrate", *args, "--out", str(out), cwd=tmp_path), needle)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_calibrate_refuses_corrupt_results_file_and_directory_out(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    out = tmp_path / "machine.json"
    assert_one_line_error(run_cli("calibrate", "--from", str(bad), "--out", str(out)), "corrupt")
    assert not out.exists()
    assert_one_line_error(run_cli("calibrate", "--quick", "--out", str(tmp_path)), "directory")


def test_benchmarks_measure_what_they_say():
    small, big = 4096, 4096 * 256  # 16 KB (in L1/L2) against 4 MB
    t_small, pinned = _machine.time_local(small, "copy", CPUS[0], 51)
    t_big, _ = _machine.time_local(big, "copy", CPUS[0], 21)
    assert pinned and len(t_small) == 51 and np.all(t_small > 0)
    assert np.median(t_big) > 8 * np.median(t_small)
    times, _ = _machine.time_concurrent(small, CPUS, 11)
    assert len(times) == 11 * len(CPUS) and np.all(times > 0)
    if len(CPUS) > 1:
        times, pinned = _machine.time_remote(small, "axpy", CPUS[0], CPUS[1], 11)
        assert pinned and len(times) == 22 and np.all(times > 0)
        times, blocks, _ = _machine.time_read(small, CPUS[0], CPUS[1], 4, 5)
        assert len(times) == 20 and np.array_equal(blocks, np.repeat(np.arange(4), 5))


def test_time_slices_of_two_threads_pinned_to_one_core_never_overlap():
    starts, ends, pinned = _machine.time_slices(CPUS[-1], 0.25, 20e-6)
    assert pinned
    runs = [np.stack([s, e], axis=1) for s, e in zip(starts, ends, strict=True)]
    assert all(len(r) >= 2 for r in runs), "two busy threads on one core must take turns within 0.25 s"
    assert all(np.all(r[:, 1] >= r[:, 0]) for r in runs)
    a, b = runs
    overlap = sum(max(0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)
    total = sum(e - s for s, e in a) + sum(e - s for s, e in b)
    assert overlap <= 0.01 * total  # one core: while one thread runs, the other does not


def _check_machine_record(result, m: int) -> dict:
    mach = result.metadata["machine"]
    assert mach["usable_cores"] == len(CPUS) and mach["cpu_ids"] == CPUS
    assert len(mach["loadavg_start"]) == 3 and len(mach["loadavg_end"]) == 3
    assert mach["machine_file"] is None
    for key in ("thread_cpu_s", "thread_wall_s", "thread_cpu_share", "involuntary_switches",
                "voluntary_switches"):
        assert len(mach[key]) == m, key
    assert all(w > 0 for w in mach["thread_wall_s"])
    assert all(0 < s <= 1.05 for s in mach["thread_cpu_share"])  # CPU time cannot exceed wall time
    switches = mach["involuntary_switches"] + mach["voluntary_switches"]
    assert all(isinstance(n, int) and n >= 0 for n in switches)
    # the threads' CPU is part of the process's; the loop spans lie inside the probe's span
    assert sum(mach["thread_cpu_s"]) <= mach["process_cpu_s"] + 0.02
    assert max(mach["thread_wall_s"]) <= mach["probe_wall_s"] + 0.01
    assert mach["background_load_cores"] is None or 0 <= mach["background_load_cores"] <= len(CPUS) + 0.5
    assert set(result.extra["per_thread"]) == {"computed", "applied", "dropped", "cas_failures"}
    return mach


def test_quiet_run_records_the_machine(tmp_path):
    result = run(counter_spec("leashed", 2, updates=3000, dim=20_000, persistence="inf"))
    _check_machine_record(result, 2)
    path = result.save(tmp_path / "run.npz")
    proc = run_cli("inspect", str(path), "--json")
    data = json.loads(proc.stdout)
    assert isinstance(data["machine_loaded"], bool)
    assert data["machine"]["usable_cores"] == len(CPUS)
    human = run_cli("inspect", str(path)).stdout
    assert "usable cores" in human and "CPU share" in human and "context switches" in human


def test_run_beside_a_busy_loop_reports_the_load():
    """A competitor spinning on one of the run's cores: the threads share 1.5 cores of 2 at best (median
    share <= ~0.75 < 0.9) and the competitor's ~0.5 core (more if others load the machine) shows as
    background load. Other load only strengthens both, so this cannot flake on a busy machine."""
    code = f"import os; os.sched_setaffinity(0, {{{CPUS[-1]}}})\nwhile True: pass"
    spinner = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)  # let it start spinning
        assert spinner.poll() is None
        m = 2
        result = run(counter_spec("leashed", m, updates=15_000, dim=50_000, persistence="inf"))
    finally:
        spinner.kill()
        spinner.wait()
    mach = _check_machine_record(result, m)
    assert mach["background_load_cores"] is not None and mach["background_load_cores"] >= 0.3, mach
    assert machine_loaded(mach) is True, mach
    assert sum(mach["involuntary_switches"]) > 0  # the competitor preempted the threads


@pytest.mark.skipif(not hasattr(os, "getloadavg"), reason="no load average")
def test_expected_share_is_min_one_cores_over_threads():
    result = run(counter_spec("hogwild", 2 * len(CPUS) + 1, updates=600, dim=5000))
    mach = _check_machine_record(result, 2 * len(CPUS) + 1)
    assert machine_loaded(mach) in (True, False)  # defined for oversubscribed runs too


def test_rotation_runs_are_about_six_seconds_of_three_to_twelve_runs():
    """Many short runs: the irregular share varies between runs far more than within one."""
    from types import SimpleNamespace

    from leashed.runtime.rotation import MAX_RUNS, MIN_RUNS, rotation_repeats

    def result(wall: float) -> SimpleNamespace:
        return SimpleNamespace(totals={"wall_time_s": wall, "updates_applied": 1000})

    assert rotation_repeats(result(0.45)) == MAX_RUNS == 12  # 6 s / 0.45 s = 13, capped
    assert rotation_repeats(result(1.0)) == 6
    assert rotation_repeats(result(1.6)) == 4
    assert rotation_repeats(result(30.0)) == MIN_RUNS == 3  # a long RUN: 5 s runs, at least three
    assert rotation_repeats(result(0.0)) == MIN_RUNS  # no wall time recorded: 5 s runs
