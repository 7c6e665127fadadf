"""The MPI backend (runtime/mpi_backend.py): consistency, overlap, accuracy and one-line errors.

Every run is a real ``mpiexec -n P`` launch in a subprocess, bounded by a timeout that kills the whole
process group. The counter model (gradient −1 everywhere, lr 1) turns papers.md §6.2 claim T9 into exact
checks: lock and leashed end with every parameter equal to the updates applied; hogwild, whose update is an
element-wise atomic MPI Accumulate, loses nothing either; leashed with T_p = 0 accounts for every gradient
as applied or dropped. Skipped cleanly when mpi4py or mpiexec is missing (``pip install 'leashed-sgd[mpi]'``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leashed.errors import SpecError
from leashed.results import RunResult
from leashed.runtime import mpi_backend
from leashed.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT = 120


def _find_mpiexec() -> str | None:
    """The mpiexec next to this Python (the ``mpich`` wheel puts it there), else the one on PATH."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def _launch(args: list[str], timeout: float = LAUNCH_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; on timeout kill the whole group (mpiexec and its ranks)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(args[:4])} ... did not finish in {timeout} s (killed)\n{out}\n{err}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.fixture(scope="session")
def mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="the mpi extra is not installed: pip install 'leashed-sgd[mpi]'")
    path = _find_mpiexec()
    if path is None:
        pytest.skip("no mpiexec found: pip install 'leashed-sgd[mpi]' (the mpich wheel ships one)")
    probe = _launch([path, "-n", "2", sys.executable, "-c",
                     "from mpi4py import MPI; c = MPI.COMM_WORLD; c.Get_rank() or print(c.Get_size())"],
                    timeout=60)
    assert probe.returncode == 0 and probe.stdout.split() == ["2"], (
        f"{path} does not start mpi4py ranks in one world (mpiexec and mpi4py from different MPI "
        f"libraries?): {probe.stdout!r} {probe.stderr!r}")
    return path


def run_spec(mpiexec: str, ranks: int, tmp_path: Path, **spec: Any) -> tuple[RunResult,
                                                                            subprocess.CompletedProcess[str]]:
    out = tmp_path / f"run-{ranks}-{spec.get('algorithm')}-{len(list(tmp_path.iterdir()))}.npz"
    proc = _launch([mpiexec, "-n", str(ranks), sys.executable, "-m", "leashed.runtime.mpi_backend",
                    json.dumps(spec), str(out)])
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return RunResult.load(out), proc


def overlap_fraction(result: RunResult) -> float:
    """Fraction of the run during which at least two workers were inside an update (start → commit)."""
    u = result.updates
    times = np.concatenate([u.t_start, u.t_commit])
    steps = np.concatenate([np.ones(len(u), int), -np.ones(len(u), int)])
    order = np.lexsort((steps, times))  # at equal times close before open: touching is no overlap
    times, active = times[order], np.cumsum(steps[order])
    busy = np.sum(np.diff(times)[active[:-1] >= 2])
    return float(busy / max(result.totals["wall_time_s"], 1e-12))


def check_records(result: RunResult, workers: int) -> None:
    """Invariants of the results file every MPI run must meet."""
    u = result.updates
    assert result.source == "runtime"
    assert result.extra["backend"] == "mpi" and result.extra["workers"] == workers
    assert result.spec.backend == "mpi" and result.spec.threads == workers
    assert set(np.unique(u.thread)) <= set(range(workers))
    assert np.all(u.t_start <= u.t_grad) and np.all(u.t_grad <= u.t_commit)
    committed = ~u.dropped
    assert np.array_equal(u.staleness[committed], u.version_commit[committed] - u.version_read[committed])
    assert np.all(u.staleness[committed] >= 0)
    assert np.all(u.version_commit[u.dropped] == -1) and np.all(u.staleness[u.dropped] == -1)
    assert result.totals["updates_applied"] == int(committed.sum())
    assert result.totals["updates_dropped"] == int(u.dropped.sum())
    assert result.totals["diverged_at"] == -1 and result.totals["interrupted"] is False
    if result.spec.algorithm in ("lock", "leashed"):
        # consistent algorithms: every committed update produced the next version exactly once
        assert np.array_equal(u.version_commit[committed], np.arange(int(committed.sum())))


COUNTER = {"model": "counter", "dim": 64, "lr": 1.0, "updates": 4000, "evaluations": 5}


@pytest.mark.parametrize("ranks", [3, 4])
@pytest.mark.parametrize("algorithm", ["lock", "leashed", "hogwild"])
def test_counter_loses_no_update(mpiexec, tmp_path, algorithm, ranks):
    """T9 across processes: θ_j = updates applied for every j, and all workers overlapped."""
    result, _ = run_spec(mpiexec, ranks, tmp_path, algorithm=algorithm, **COUNTER)
    workers = ranks - 1
    check_records(result, workers)
    assert len(result.updates) == COUNTER["updates"]
    assert result.totals["updates_applied"] == COUNTER["updates"]  # T_p = inf: nothing dropped
    assert np.all(result.params == COUNTER["updates"]), np.unique(result.params)
    assert result.totals["lost_updates"] == 0
    assert len(np.unique(result.updates.thread)) == workers  # every worker did some of the work
    assert overlap_fraction(result) > 0.01
    assert np.all(np.diff(result.samples.version) >= 0) and result.samples.version[-1] == COUNTER["updates"]
    if algorithm == "leashed":
        assert result.samples.live_vectors.max() <= 2 * workers + 1  # papers.md §2.1 bound
        attempts = result.updates.attempts
        assert result.totals["cas_failures"] == int((attempts - 1).sum())


def test_leashed_tp0_accounts_for_every_gradient(mpiexec, tmp_path):
    """T_p = 0: applied + dropped = computed, θ = applied, and every CAS failure is one drop."""
    result, _ = run_spec(mpiexec, 4, tmp_path, algorithm="leashed", persistence="0", **COUNTER)
    check_records(result, 3)
    applied, dropped = result.totals["updates_applied"], result.totals["updates_dropped"]
    assert applied + dropped == COUNTER["updates"] == len(result.updates)
    assert np.all(result.params == applied)
    assert result.totals["cas_failures"] == dropped
    assert np.all(result.updates.attempts == 1)


@pytest.mark.parametrize("algorithm, sparsifier", [("lock", "topk:8"), ("hogwild", "randk:8"),
                                                    ("leashed", "topk:8")])
def test_counter_sparsified(mpiexec, tmp_path, algorithm, sparsifier):
    """papers.md §5 on the counter: top-k of an all-(−1) gradient keeps the 8 lowest indices (ties);
    rand-k keeps 8 random coordinates, so the parameters sum to 8 per applied update."""
    result, _ = run_spec(mpiexec, 3, tmp_path, algorithm=algorithm, sparsifier=sparsifier, **COUNTER)
    check_records(result, 2)
    applied = result.totals["updates_applied"]
    assert applied == COUNTER["updates"]
    assert float(result.params.sum()) == 8.0 * applied
    if sparsifier.startswith("topk"):
        assert np.all(result.params[:8] == applied) and np.all(result.params[8:] == 0)


def test_divergence_stops_every_worker(mpiexec, tmp_path):
    """A non-finite loss stops all workers promptly; the file is saved with diverged_at, status 2."""
    out = tmp_path / "div.npz"
    spec = {"algorithm": "leashed", "model": "quadratic", "updates": 5000, "lr": 1e4, "evaluations": 2}
    proc = _launch([mpiexec, "-n", "3", sys.executable, "-m", "leashed.runtime.mpi_backend",
                    json.dumps(spec), str(out)])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "diverged" in proc.stderr and "Traceback" not in proc.stderr
    result = RunResult.load(out)
    assert 0 <= result.totals["diverged_at"] < 5000
    assert len(result.updates) < 5000


def test_mnist_mlp_short_run(mpiexec, tmp_path):
    """MLP 784-128-10 on MNIST with 2 workers: ≥ 96% test accuracy after 3 epochs (about 1 s of training)."""
    _require_mnist()
    result, _ = run_spec(mpiexec, 3, tmp_path, algorithm="leashed", model="mlp", hidden=[128],
                         dataset="mnist", epochs=3, lr=0.2, batch_size=64, evaluations=4)
    check_records(result, 2)
    assert result.totals["updates_applied"] == 3 * (60000 // 64)
    assert result.samples.accuracy[-1] >= 0.96, result.samples.accuracy
    assert result.samples.loss[-1] < result.samples.loss[0]
    assert overlap_fraction(result) > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_mnist_mlp_full_accuracy_matches_threads(mpiexec, tmp_path, algorithm):
    """5 epochs, 2 workers: ≥ 97% test accuracy, within 1 point of the threaded runtime on the same spec."""
    _require_mnist()
    spec = dict(algorithm=algorithm, model="mlp", hidden=[128], dataset="mnist", epochs=5, lr=0.2,
                batch_size=64, evaluations=5)
    result, _ = run_spec(mpiexec, 3, tmp_path, **spec)
    check_records(result, 2)
    accuracy = float(result.samples.accuracy[-1])
    assert accuracy >= 0.97, result.samples.accuracy
    run = pytest.importorskip("leashed.runtime.run", reason="the threaded runtime is not built")
    threaded = run.run(ExperimentSpec.from_dict({**spec, "threads": 2}))
    reference = float(threaded.samples.accuracy[-1])
    assert abs(accuracy - reference) <= 0.01, (accuracy, reference)


def _require_mnist() -> None:
    from leashed.errors import DataError
    from leashed.models.datasets import load_dataset

    try:
        load_dataset("mnist")
    except DataError as exc:
        pytest.skip(f"MNIST is not installed: {exc}")


# ---------------------------------------------------------------- bad input: one line, status 2, all ranks
def _assert_one_line(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # rank 0 prints it, the others only exit
    assert lines[0].startswith("leashed: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("ranks, spec, needle", [
    (3, {"algorithm": "sync", **COUNTER}, "not available on the mpi backend"),
    (3, {"algorithm": "lock", "threads": 5, **COUNTER}, "does not match the launch"),
    (3, {"algorithm": "lock", "model": "mlp", "dataset": "idx:/nonexistent", "epochs": 1}, "/nonexistent"),
])
def test_bad_input_is_one_line_on_every_rank(mpiexec, tmp_path, ranks, spec, needle):
    proc = _launch([mpiexec, "-n", str(ranks), sys.executable, "-m", "leashed.runtime.mpi_backend",
                    json.dumps(spec), str(tmp_path / "x.npz")])
    _assert_one_line(proc, needle)
    assert not (tmp_path / "x.npz").exists()


def test_one_rank_is_refused(mpiexec, tmp_path):
    proc = _launch([sys.executable, "-m", "leashed.runtime.mpi_backend",
                    json.dumps({"algorithm": "lock", **COUNTER}), str(tmp_path / "x.npz")], timeout=60)
    _assert_one_line(proc, "at least 2 ranks")


def test_leashed_train_cli(mpiexec, tmp_path):
    """``mpiexec -n 3 python -m leashed train --backend mpi ...`` (once the train command dispatches)."""
    help_text = _launch([sys.executable, "-m", "leashed", "train", "--help"], timeout=60).stdout
    if "--backend" not in help_text:
        pytest.skip("leashed train has no --backend option yet")
    out = tmp_path / "cli.npz"
    proc = _launch([mpiexec, "-n", "3", sys.executable, "-m", "leashed", "train", "--backend", "mpi",
                    "--algorithm", "leashed", "--model", "counter", "--updates", "2000", "--dim", "16",
                    "--lr", "1", "--out", str(out)])
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    result = RunResult.load(out)
    check_records(result, 2)
    assert np.all(result.params == 2000)
    bad = _launch([mpiexec, "-n", "3", sys.executable, "-m", "leashed", "train", "--backend", "mpi",
                   "--algorithm", "sync", "--model", "counter", "--updates", "10", "--out", str(out)])
    _assert_one_line(bad, "mpi backend")


@pytest.mark.parametrize("algorithm", ["leashed", "lock", "hogwild"])
def test_ctrl_c_saves_the_partial_result(mpiexec, tmp_path, algorithm):
    """Ctrl-C to mpiexec (it forwards it to every rank): every rank leaves its loop between two updates,
    rank 0 saves what was done, marked interrupted, says so in one line and exits 130. The counter
    model shows the partial result is consistent: every coordinate equals the updates applied (hogwild's
    Accumulate(SUM) loses none either)."""
    out = tmp_path / "int.npz"
    total = 3_000_000
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [mpiexec, "-n", "3", sys.executable, "-m", "leashed", "train", "--backend", "mpi", "--algorithm",
            algorithm, "--model", "counter", "--dim", "64", "--lr", "1", "--updates", str(total),
            "--evaluations", "0", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env, start_new_session=True)
    try:
        time.sleep(5.0)  # start-up of 3 ranks takes about 1 s on the 2-core test machine
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("leashed")]
    assert len(lines) == 1, err
    expected = rf"leashed: interrupted: partial result \((\d+) updates\) saved to {re.escape(str(out))}"
    said = re.fullmatch(expected, lines[0])
    assert said is not None, err
    assert "Traceback" not in err
    result = RunResult.load(out)
    applied = result.totals["updates_applied"]
    assert result.totals["interrupted"] is True and 0 < applied < total
    assert int(said.group(1)) == applied
    assert np.all(result.params == applied)  # consistent: nothing lost, nothing half-applied


# ---------------------------------------------------------------- in-process units (no MPI needed)
class _FakeComm:
    def __init__(self, others: list[Any]) -> None:
        self.others = others

    def allgather(self, value: Any) -> list[Any]:
        return [value, *self.others]


def test_collective_raises_the_first_user_error_everywhere():
    def boom() -> None:
        raise SpecError("bad thing")

    assert mpi_backend._collective(_FakeComm([None]), lambda: 7) == 7
    with pytest.raises(SpecError, match="bad thing"):
        mpi_backend._collective(_FakeComm([None]), boom)
    with pytest.raises(SpecError, match="from rank 1"):  # this rank is fine, rank 1 is not
        mpi_backend._collective(_FakeComm([("user", "SpecError", "from rank 1")]), lambda: 7)
    with pytest.raises(mpi_backend._PeerFailed):
        mpi_backend._collective(_FakeComm([("internal", "KeyError", "x")]), lambda: 7)


def test_commit_order_merges_dropped_by_time():
    part = {"thread": np.array([0, 0, 1, 1]), "version_read": np.array([0, 1, 0, 2]),
            "version_commit": np.array([1, -1, 0, 2]), "staleness": np.array([1, -1, 0, 0]),
            "attempts": np.array([1, 1, 1, 2]), "dropped": np.array([False, True, False, False]),
            "t_start": np.zeros(4), "t_grad": np.zeros(4), "t_commit": np.array([2.0, 2.5, 1.0, 3.0])}
    halves = [{k: v[:2] for k, v in part.items()}, {k: v[2:] for k, v in part.items()}]
    log = mpi_backend._commit_order(halves)
    assert log.version_commit.tolist() == [0, 1, -1, 2]
    assert log.t_commit.tolist() == [1.0, 2.0, 2.5, 3.0]


def test_topk_keeps_largest_with_lower_index_ties():
    spec = ExperimentSpec(algorithm="leashed", threads=2, model="counter", updates=1, sparsifier="topk:3",
                          error_memory=True)
    sparse = mpi_backend._Sparsifier(spec, 6, 3, worker=0)
    idx, vals = sparse(np.array([1.0, -5.0, 2.0, 2.0, 2.0, 0.5], np.float32))
    assert idx.tolist() == [1, 2, 3] and vals.tolist() == [-5.0, 2.0, 2.0]
    assert sparse.memory.tolist() == [1.0, 0.0, 0.0, 0.0, 2.0, 0.5]  # e ← e + g − Φ(e + g)


def test_step_factors():
    fleet = mpi_backend._step_factor_fn(ExperimentSpec(algorithm="lock", threads=2, step_policy="fleet"), 2)
    assert fleet(1) == pytest.approx(2 ** (-2 / 3))  # β = (2/3)·ln 2 (papers.md §3.1)
    inverse = mpi_backend._step_factor_fn(ExperimentSpec(algorithm="lock", step_policy="inverse"), 2)
    assert inverse(3) == 0.25
    table = mpi_backend._step_factor_fn(ExperimentSpec(algorithm="lock", step_table=(1.0, 0.5)), 2)
    assert table(0) == 1.0 and table(7) == 0.5
    with pytest.raises(SpecError, match="step table"):
        mpi_backend._step_factor_fn(ExperimentSpec(algorithm="lock", step_policy="tail"), 2)
