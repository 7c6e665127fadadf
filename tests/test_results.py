import dataclasses
import json
import math
import zipfile

import numpy as np
import pytest

from leashed.errors import ResultsFileError
from leashed.results import FORMAT_VERSION, SAMPLE_FIELDS, RunResult, Samples, UpdateLog, machine_metadata
from leashed.spec import ExperimentSpec


def make_result(n: int = 50, source: str = "runtime") -> RunResult:
    rng = np.random.default_rng(0)
    staleness = rng.integers(0, 4, n)
    dropped = np.zeros(n, bool)
    dropped[::10] = True
    commit = np.where(dropped, -1, np.arange(n))
    updates = UpdateLog(thread=np.arange(n) % 2, version_read=commit - staleness, version_commit=commit,
                        staleness=np.where(dropped, -1, staleness), attempts=1 + dropped * 2,
                        dropped=dropped, t_start=np.arange(n) * 1.0, t_grad=np.arange(n) + 0.5,
                        t_commit=np.arange(n) + 0.9)
    samples = Samples(time=[0.0, 1.0, 2.0], version=[0, 20, 45], live_vectors=[1, 3, 4],
                      loss=[2.3, 1.0, np.nan], accuracy=[0.1, 0.8, 0.9])
    spec = ExperimentSpec(algorithm="leashed", threads=2, persistence=2, model="counter", dataset="none",
                          updates=n)
    return RunResult(spec=spec, source=source, updates=updates, samples=samples,
                     params=np.full(7, 45, np.float32),
                     totals={"updates_applied": 45, "updates_dropped": 5, "cas_failures": 10,
                             "wall_time_s": 2.0, "diverged_at": -1, "interrupted": False},
                     metadata=machine_metadata(seed=0))


def test_round_trip_preserves_everything(tmp_path):
    result = make_result()
    path = result.save(tmp_path / "run.npz")
    again = RunResult.load(path)
    assert again.spec == result.spec
    assert again.totals == result.totals
    for name in ("staleness", "dropped", "t_commit", "attempts"):
        np.testing.assert_array_equal(getattr(again.updates, name), getattr(result.updates, name))
    for name in SAMPLE_FIELDS:
        np.testing.assert_array_equal(getattr(again.samples, name), getattr(result.samples, name))
    np.testing.assert_array_equal(again.params, result.params)
    assert again.metadata["cpu_cores"] >= 1
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_summary_keys_and_values():
    s = make_result().summary()
    for key in ("format_version", "source", "algorithm", "threads", "model", "dataset", "updates_applied",
                "updates_dropped", "wall_time_s", "updates_per_s", "staleness_mean", "staleness_var",
                "staleness_hist", "cas_attempts_mean", "cas_failures", "live_vectors_max",
                "final_train_loss", "final_test_accuracy"):
        assert key in s
    committed = make_result().staleness
    assert len(committed) == 45
    assert s["staleness_mean"] == pytest.approx(committed.mean())
    assert sum(s["staleness_hist"]) == 45
    assert s["updates_per_s"] == pytest.approx(22.5)
    assert s["final_train_loss"] == 1.0  # NaN sample skipped
    assert s["live_vectors_max"] == 4


def test_results_are_frozen():
    result = make_result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.source = "sim"  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.updates.staleness[0] = 5


def test_truncated_file_is_refused(tmp_path):
    path = make_result().save(tmp_path / "run.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultsFileError, match="truncated or corrupt"):
        RunResult.load(path)


def test_newer_version_and_foreign_file_are_refused(tmp_path):
    path = make_result().save(tmp_path / "run.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays["meta.json"]))
    meta["format_version"] = FORMAT_VERSION + 1
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "newer.npz", **arrays)
    with pytest.raises(ResultsFileError, match="upgrade leashed"):
        RunResult.load(tmp_path / "newer.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ResultsFileError, match="not a leashed results file"):
        RunResult.load(tmp_path / "other.npz")
    with pytest.raises(ResultsFileError, match="does not exist"):
        RunResult.load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ResultsFileError):
        RunResult.load(tmp_path / "text.npz")


def test_file_is_plain_npz_readable_without_leashed(tmp_path):
    path = make_result().save(tmp_path / "run.npz")
    assert zipfile.is_zipfile(path)
    with np.load(path) as archive:
        meta = json.loads(bytes(archive["meta.json"]))
        assert meta["format"] == "leashed-results"
        assert meta["spec"]["persistence"] == "2"
        assert archive["update_staleness"].dtype == np.int64
    assert math.isfinite(meta["totals"]["wall_time_s"])
