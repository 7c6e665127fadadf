"""``leashed train`` as a user runs it: subprocesses, exit codes, one-line errors, files."""

from __future__ import annotations

import _thread
import threading

import numpy as np
import pytest

from leashed.cli import main
from leashed.results import RunResult

from conftest import assert_one_line_error, run_cli

COUNTER = ["--model", "counter", "--dim", "1000", "--lr", "1", "--evaluations", "2"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--threads", "0"], "threads must be a positive integer"),
    (["--algorithm", "leashed", "--threads", "-3"], "threads must be a positive integer"),
    (["--threads", "two"], "invalid int value"),
    (["--algorithm", "leashed", "--threads", "2", "--persistence", "-1"], "persistence"),
    (["--algorithm", "leashed", "--threads", "2", "--persistence", "many"], "persistence"),
    (["--algorithm", "frob"], "invalid choice"),
    (["--step-policy", "frob"], "invalid choice"),
    (["--step-policy", "normalised"], "staleness model"),
    (["--algorithm", "seq", "--threads", "2"], "one thread"),
    (["--algorithm", "lock", "--threads", "8", "--updates", "4"], "cannot keep 8 threads busy"),
    (["--lr", "0"], "learning rate"),
    (["--lr", "nan"], "learning rate"),
    (["--hidden", "12,x"], "--hidden"),
    (["--batch-size", "0"], "batch size"),
    (["--plot", "out.txt"], ".png or .svg"),
    (["--from", "missing.npz"], "does not exist"),
    (["--batch-size", "5000", "--updates", "400"], "batch size 5000 is larger than the training set"),
    (["--sparsifier", "topk:1001"], "K=1001 is larger than the model (1000 parameters)"),
    (["--sparsifier", "randk:0"], "at least 1"),
    (["--sparsifier", "top5"], "sparsifier must be"),
    (["--error-memory"], "error memory needs a sparsifier"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, needle, tmp_path):
    out = tmp_path / "run.npz"
    model = [] if "--threads" in args and args[args.index("--threads") + 1] == "two" else COUNTER
    proc = run_cli("train", *model, *args, "--out", str(out), cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_batch_larger_than_mnist_with_updates_is_one_line(tmp_path):
    """--updates skips the epoch count, which used to be where a batch larger than the data was caught
    (a ZeroDivisionError traceback while building the batch schedule)."""
    out = tmp_path / "run.npz"
    proc = run_cli("train", "--batch-size", "100000", "--updates", "400", "--out", str(out), cwd=tmp_path)
    if "mnist" in proc.stderr.lower() and "batch size" not in proc.stderr:
        pytest.skip(f"MNIST not available: {proc.stderr.strip()}")
    assert_one_line_error(proc, "batch size 100000 is larger than the training set (60000 rows)")
    assert not out.exists()


def test_train_counter_then_rerun_from_the_file(tmp_path):
    out = tmp_path / "a.npz"
    proc = run_cli("train", "--algorithm", "leashed", "--threads", "2", *COUNTER, "--updates", "3000",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and "updates/s" in proc.stdout and "mean staleness" in proc.stdout
    first = RunResult.load(out)
    assert first.source == "runtime" and first.spec.threads == 2
    assert np.all(first.params == first.totals["updates_applied"])
    assert first.metadata["blas_threads_in_workers"] == 1
    again = tmp_path / "b.npz"
    proc = run_cli("train", "--from", str(out), "--threads", "3", "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    second = RunResult.load(again)
    assert second.spec == first.spec.replace(threads=3)


def test_divergence_exits_2_after_saving(tmp_path):
    out = tmp_path / "div.npz"
    proc = run_cli("train", "--algorithm", "hogwild", "--threads", "2", "--model", "counter", "--dim", "10",
                   "--lr", "1e38", "--updates", "100000", "--out", str(out))
    assert_one_line_error(proc, "diverged")
    assert str(out) in proc.stderr
    result = RunResult.load(out)
    assert result.totals["diverged_at"] >= 0


def test_tail_prints_the_mean_factor_caveat(tmp_path):
    proc = run_cli("train", "--algorithm", "lock", "--threads", "2", *COUNTER, "--updates", "200",
                   "--step-policy", "tail", "--out", str(tmp_path / "t.npz"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "mean factor" in proc.stderr and proc.stdout == ""


def test_ctrl_c_saves_the_partial_result(tmp_path, capsys):
    # Once in a full-suite run the simulated Ctrl-C (interrupt_main, 2 s in) was never acted on and the
    # 30-second run completed (exit 0, nothing on stderr); a second try tells that apart from a broken
    # Ctrl-C path, which exits 0 both times.
    for attempt in range(2):
        out = tmp_path / f"int{attempt}.npz"
        timer = threading.Timer(2.0, _thread.interrupt_main)
        timer.start()
        try:
            code = main(["train", "--algorithm", "leashed", "--threads", "2", "--model", "counter", "--dim",
                         "200000", "--lr", "1", "--updates", "400000", "--evaluations", "0", "--out",
                         str(out)])
        finally:
            timer.cancel()
        if code != 0 and out.exists():  # (an interrupt while the data loaded measured nothing: again)
            break
    assert code == 130
    assert "partial result" in capsys.readouterr().err
    result = RunResult.load(out)
    assert result.totals["interrupted"] is True
    assert 0 < result.totals["updates_applied"] < 400_000


def test_the_coordinator_sleeps_long_unless_a_snapshot_or_the_end_is_near():
    from leashed.runtime.run import POLL_INTERVAL_S, POLL_MIN_S, _next_poll

    # 1,000 updates in 1 s: the next evaluation point 500 updates on is 0.5 s away -> the longest sleep
    assert _next_poll(1000, 1.0, [1500, 5000], POLL_INTERVAL_S) == POLL_INTERVAL_S
    # 20 updates on: 20 ms at this rate
    assert _next_poll(1000, 1.0, [1020, 5000], POLL_INTERVAL_S) == pytest.approx(0.02)
    # 1 update on, or nothing measured yet: the shortest
    assert _next_poll(1000, 1.0, [1001], POLL_INTERVAL_S) == POLL_MIN_S
    assert _next_poll(0, 0.0, [10], POLL_INTERVAL_S) == POLL_MIN_S
    assert _next_poll(10, 0.1, [], POLL_INTERVAL_S) == POLL_MIN_S  # past every target: finishing now
