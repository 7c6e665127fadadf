"""The machine file of ``leashed calibrate`` (docs/machine.md): format, validation, loader, the pure-Python
post-processing of the time-slice benchmark, and the "machine loaded" rule of ``leashed inspect``."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest

from leashed import machine
from leashed.errors import LeashedError
from leashed.machine import FORMAT_NAME, FORMAT_VERSION, MachineFileError, MachineProfile, load_machine

from conftest import assert_one_line_error, run_cli

FIELDS = ["dim", "cores", "cpu_ids", "copy_local_s", "axpy_local_s", "copy_remote_s", "axpy_remote_s",
          "copy_concurrent_s", "read_slowdown", "time_slice_s", "time_slice_quantiles_s", "switch_gap_s",
          "idle_share", "background_load", "rotation_irregular_share", "rotation_jitter", "metadata",
          "format", "format_version"]


def profile(**changes: object) -> MachineProfile:
    base = MachineProfile(
        dim=101_770, cores=2, cpu_ids=[0, 1], copy_local_s=9e-6, axpy_local_s=17e-6, copy_remote_s=22e-6,
        axpy_remote_s=45e-6, copy_concurrent_s=[9e-6, 10e-6], read_slowdown=0.03, time_slice_s=3e-3,
        time_slice_quantiles_s={"0.1": 1e-3, "0.5": 3e-3, "0.9": 4e-3}, switch_gap_s=5e-6,
        idle_share=[0.9, 0.7], background_load=0.4, rotation_irregular_share=0.11, rotation_jitter=0.35,
        metadata={"cpu_model": "test"})
    return dataclasses.replace(base, **changes)


def write(tmp_path, data: object, name: str = "machine.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_fields_are_the_documented_ones():
    assert [f.name for f in dataclasses.fields(MachineProfile)] == FIELDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile().cores = 4  # type: ignore[misc]


def test_round_trip_and_file_layout(tmp_path):
    p = profile()
    path = p.save(tmp_path / "sub" / "machine.json")
    text = path.read_text()
    data = json.loads(text)
    assert list(data)[:2] == ["format", "format_version"]  # a truncated file still names its format
    assert data["format"] == FORMAT_NAME == "leashed-machine"
    assert data["format_version"] == FORMAT_VERSION == 1
    assert load_machine(path) == p
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_with_cores_overrides_only_cores():
    p = profile()
    q = p.with_cores(16)
    assert q.cores == 16 and p.cores == 2
    assert dataclasses.replace(q, cores=2) == p
    for bad in (0, -1, 1.5, True):
        with pytest.raises(LeashedError, match="--cores"):
            p.with_cores(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("field, value, needle", [
    ("copy_local_s", -1e-6, "copy_local_s"),
    ("copy_remote_s", 0, "copy_remote_s"),
    ("time_slice_s", 0.0, "time_slice_s"),
    ("dim", 0, "dim"),
    ("dim", 1.5, "dim"),
    ("dim", True, "dim"),
    ("cores", "2", "cores"),
    ("cores", 0, "cores"),
    ("copy_concurrent_s", [], "copy_concurrent_s"),
    ("copy_concurrent_s", [1e-5, -1e-5], "copy_concurrent_s"),
    ("idle_share", [0.5, 1.5], "idle_share"),
    ("idle_share", [0.5], "idle_share"),
    ("background_load", -0.1, "background_load"),
    ("read_slowdown", -1.0, "read_slowdown"),
    ("time_slice_quantiles_s", {"0.5": 0}, "time_slice_quantiles_s"),
    ("metadata", [], "metadata"),
    ("rotation_jitter", 1.5, "rotation_jitter"),
    ("rotation_irregular_share", "0.1", "rotation_irregular_share"),
])
def test_invalid_values_are_refused_naming_file_and_field(tmp_path, field, value, needle):
    data = profile().to_dict()
    data[field] = value
    path = write(tmp_path, data)
    with pytest.raises(MachineFileError) as err:
        load_machine(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and needle in message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf_are_refused(tmp_path, literal):
    text = json.dumps(profile().to_dict()).replace('"axpy_local_s": 1.7e-05', f'"axpy_local_s": {literal}')
    assert literal in text
    with pytest.raises(MachineFileError, match="axpy_local_s .*finite"):
        load_machine(write(tmp_path, text))


def test_missing_corrupt_foreign_newer_and_incomplete_files(tmp_path):
    with pytest.raises(MachineFileError, match="does not exist"):
        load_machine(tmp_path / "nope.json")
    good = json.dumps(profile().to_dict())
    with pytest.raises(MachineFileError, match="truncated or corrupt"):
        load_machine(write(tmp_path, good[:120]))
    with pytest.raises(MachineFileError, match="not a JSON object"):
        load_machine(write(tmp_path, "[1, 2]"))
    with pytest.raises(MachineFileError, match="not a leashed machine file"):
        load_machine(write(tmp_path, {**profile().to_dict(), "format": "leashed-staleness-fit"}))
    with pytest.raises(MachineFileError, match="version 2.*upgrade"):
        load_machine(write(tmp_path, {**profile().to_dict(), "format_version": 2}))
    with pytest.raises(MachineFileError, match="format_version"):
        load_machine(write(tmp_path, {**profile().to_dict(), "format_version": "1"}))
    data = profile().to_dict()
    del data["switch_gap_s"]
    with pytest.raises(MachineFileError, match="switch_gap_s is missing"):
        load_machine(write(tmp_path, data))


def test_a_file_of_an_older_version_without_the_rotation_fields_still_loads(tmp_path):
    data = profile().to_dict()
    del data["rotation_irregular_share"], data["rotation_jitter"]
    assert load_machine(write(tmp_path, data)) == profile(rotation_irregular_share=None, rotation_jitter=None)


def test_inspect_shows_a_machine_file_and_refuses_bad_ones(tmp_path):
    path = profile().save(tmp_path / "machine.json")
    proc = run_cli("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "own cache 9.0 us" in proc.stdout and "time slice 3.000 ms" in proc.stdout
    proc = run_cli("inspect", str(path), "--json")
    assert json.loads(proc.stdout)["copy_remote_s"] == 22e-6
    good = path.read_text()
    cases = {"truncated or corrupt": good[:200],
             "version 7": good.replace('"format_version": 1', '"format_version": 7'),
             "copy_local_s": good.replace('"copy_local_s": 9e-06', '"copy_local_s": -9e-06'),
             "dim": good.replace('"dim": 101770', '"dim": 0')}
    for needle, text in cases.items():
        assert text != good
        bad = write(tmp_path, text, "bad.json")
        assert_one_line_error(run_cli("inspect", str(bad)), needle)


class FakeBench:
    """time_slices of leashed.runtime._machine with runs given by hand (ns)."""

    def __init__(self, runs: list[list[tuple[int, int]]]) -> None:
        self.runs = runs

    def time_slices(self, cpu: int, seconds: float, gap_s: float):
        starts = [np.array([s for s, _ in r], dtype=np.int64) for r in self.runs]
        ends = [np.array([e for _, e in r], dtype=np.int64) for r in self.runs]
        return starts, ends, True


def test_time_slice_post_processing_by_hand():
    ms, us = 1_000_000, 1_000
    # Two threads alternate 3 ms turns with a 10 us switch each way; each thread's first run is dropped.
    starts = [k * (6 * ms + 20 * us) for k in range(1, 7)]
    a = [(0, 5 * ms)] + [(s, s + 3 * ms) for s in starts]
    b = [(0, 1 * ms)] + [(e + 10 * us, e + 10 * us + 3 * ms) for _, e in a[1:]]
    slice_s, quantiles, gap, measured, pinned = machine._time_slices(FakeBench([a, b]), 0, 0.1)
    assert measured and pinned
    assert slice_s == pytest.approx(3e-3)
    assert quantiles["0.1"] == pytest.approx(3e-3) and quantiles["0.9"] == pytest.approx(3e-3)
    assert gap == pytest.approx(10e-6)
    # A third process interrupts A's turns for 50 us in the middle: the turns keep their running time,
    # 2.95 ms, instead of falling apart into runs of 1 and 1.95 ms.
    split = [a[0]] + [r for s, e in a[1:] for r in ((s, s + 1 * ms), (s + 1050 * us, e))]
    slice_s, quantiles, gap, measured, _ = machine._time_slices(FakeBench([split, b]), 0, 0.1)
    assert measured and gap == pytest.approx(10e-6)
    assert quantiles["0.25"] == pytest.approx(2.95e-3) and quantiles["0.75"] == pytest.approx(3e-3)
    # No descheduling seen: the span is a lower bound and nothing is measured.
    slice_s, _, gap, measured, _ = machine._time_slices(FakeBench([[(0, 9)], [(0, 9)]]), 0, 0.1)
    assert not measured and slice_s == 0.1 and gap == 0.0


def test_read_slowdown_pairs_adjacent_blocks():
    blocks = np.repeat(np.arange(6), 3)
    # the machine drifts (each pair 10x slower than the last) but busy is always 20 % above quiet
    base = np.repeat([100, 100, 1000, 1000, 10_000, 10_000], 3).astype(np.int64)
    times = np.where(blocks % 2 == 1, base * 6 // 5, base)
    assert machine.read_slowdown(times, blocks) == pytest.approx(0.2)
    assert machine.read_slowdown(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0.0


def test_machine_loaded_rule():
    assert machine.expected_share(2, 2) == 1.0 and machine.expected_share(2, 8) == 0.25
    assert machine.machine_loaded({"usable_cores": 2, "thread_cpu_share": [1.0, 0.5]}) is True
    assert machine.machine_loaded({"usable_cores": 2, "thread_cpu_share": [0.99, 0.95]}) is False
    # oversubscribed: 4 threads on 2 cores expect 0.5 each
    assert machine.machine_loaded({"usable_cores": 2, "thread_cpu_share": [0.5, 0.49, 0.5, 0.48]}) is False
    assert machine.machine_loaded({"usable_cores": 2, "thread_cpu_share": [0.3, 0.3, 0.35, 0.3]}) is True
    # more threads than cores: the kernel shares the cores unevenly over a short run; all 2 cores busy
    # is not a load (a median rule called this run, from the demo on the 2-core VM, loaded)
    assert machine.machine_loaded({"usable_cores": 2, "thread_cpu_share": [0.593, 0.591, 0.799]}) is False
    assert machine.machine_loaded({"usable_cores": 2, "thread_cpu_share": [0.45, 0.45, 0.8]}) is True
    assert machine.machine_loaded({}) is None and machine.machine_loaded(None) is None
    assert machine.machine_loaded({"usable_cores": 2, "thread_cpu_share": []}) is None


def test_thread_machine_moves_the_counters_out_of_per_thread():
    per_thread = {"computed": np.array([5, 6]), "cpu_ns": np.array([500_000_000, 0]),
                  "loop_wall_ns": np.array([1_000_000_000, 0]), "involuntary_switches": np.array([3, 0]),
                  "voluntary_switches": np.array([1, 2])}
    out = machine.thread_machine(per_thread)
    assert list(per_thread) == ["computed"]
    assert out["thread_cpu_s"] == [0.5, 0.0] and out["thread_wall_s"] == [1.0, 0.0]
    assert out["thread_cpu_share"] == [0.5, None]
    assert out["involuntary_switches"] == [3, 0] and out["voluntary_switches"] == [1, 2]


def test_proc_stat_reader():
    cpus = machine.usable_cpus()
    ticks = machine.cpu_jiffies(cpus)
    if ticks is None:
        pytest.skip("/proc/stat is not readable here")
    assert set(ticks) == set(cpus)
    assert all(0 <= busy <= total for busy, total in ticks.values())
    shares = machine.idle_shares(cpus, 0.05)
    assert shares is not None and len(shares) == len(cpus)
    assert all(0.0 <= s <= 1.0 and not math.isnan(s) for s in shares)


def test_background_load_is_at_most_the_cores_the_run_left(monkeypatch):
    """One clock tick per core and read is a large share of a short run: the busy ticks can read more
    than the machine has (2.9 cores on 2 in a 600-update run). Others cannot have used more than the
    cores this process left."""
    cpus = machine.usable_cpus()
    reads = iter([{c: (0, 0) for c in cpus}, {c: (1000, 1000) for c in cpus}])  # every core busy 10 s
    monkeypatch.setattr(machine, "cpu_jiffies", lambda ids: next(reads))
    probe = machine.RunProbe()
    time.sleep(0.05)  # a wall time the process's CPU clock resolves
    record = probe.finish()
    room = len(cpus) - record["process_cpu_s"] / record["probe_wall_s"]
    assert 0.0 <= record["background_load_cores"] <= room + 1e-9
    assert record["background_load_cores"] == pytest.approx(max(room, 0.0))
