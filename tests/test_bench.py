"""Smoke tests of the benchmarks: ``leashed bench --quick`` end to end, and the scripts' pure helpers."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli

BENCH = ROOT / "benchmarks"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _script(name: str):
    """Import benchmarks/NAME.py once (registered in sys.modules, as dataclasses need)."""
    module_name = f"test_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _table_header(stdout: str, title_start: str) -> list[str]:
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(title_start):
            return lines[i + 1].split()
    raise AssertionError(f"no table titled {title_start!r} in:\n{stdout}")


def test_bench_quick_writes_report(tmp_path):
    out = tmp_path / "bench"
    proc = run_cli("bench", "--quick", "--out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stdout = proc.stdout.strip()
    last = stdout.splitlines()[-1]
    assert Path(last) == (out / "report.html").resolve()
    assert Path(last).is_file() and (out / "report.md").is_file()

    limit_cols = _table_header(stdout, "One worker vs its BLAS-bound limit")
    assert {"batch", "kernel_GFLOPs", "gemm_GFLOPs", "ratio"} <= set(limit_cols)
    vs_cols = _table_header(stdout, "leashed vs PyTorch Hogwild")
    assert {"impl", "workers", "updates_per_s", "x_torch_rate", "t_loss_s", "test_acc",
            "d_acc"} <= set(vs_cols)
    paper_cols = _table_header(stdout, "Leashed-SGD paper comparison")
    assert {"algorithm", "t50_s", "t25_s", "t10_s", "x_lock_t25", "diverged", "rss_MiB", "live_max",
            "tau_mean"} <= set(paper_cols)
    assert {"diverged_frac", "median_x_lock_t25"} <= set(_table_header(stdout, "Per algorithm"))

    for name in ("limit", "vs_pytorch", "paper_comparison", "summary"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.json").is_file(), name
    for png in ("vs_pytorch.png", "loss_vs_time.png", "stability.png"):
        assert (out / png).stat().st_size > 1000, png
    report = (out / "report.md").read_text()
    assert "stability.png" in report and "ratio" in report

    vs = json.loads((out / "vs_pytorch.json").read_text())
    impls = {row["impl"] for row in vs["rows"]}
    assert {"leashed", "hogwild"} <= impls
    assert ("pytorch" in impls) == HAS_TORCH
    paper = json.loads((out / "paper_comparison.json").read_text())
    assert len(paper["rows"]) >= 3
    for row in paper["rows"]:
        assert row["rss_MiB"] > 10
        assert row["updates_per_s"] > 0
    assert list((out / "runs").glob("*.npz")), "the paper runs' results files are kept"


def test_vs_pytorch_without_torch_prints_one_line_and_exits_0():
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = ['vs_pytorch_hogwild.py', '--quick']; "
            f"runpy.run_path({str(BENCH / 'vs_pytorch_hogwild.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "not installed" in lines[0]


def test_scripts_have_help():
    for name in ("limit", "vs_pytorch_hogwild", "paper_comparison", "runtime_scaling", "sim_speed",
                 "sparsification", "mpi_scaling", "prediction_check"):
        proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and "--quick" in proc.stdout, name


def test_common_helpers():
    common = _script("_common")
    # FLOPs of the 784-128-10 MLP as the kernel runs it: 5 GEMMs, no input gradient
    shapes = common.mlp_gemm_shapes(64, [784, 128, 10])
    assert [s[0] for s in shapes] == ["fwd1", "fwd2", "dW2", "dA1", "dW1"]
    assert common.gemm_flops(shapes) == 2 * 64 * (784 * 128 + 128 * 10) + 2 * 64 * (784 * 128 + 2 * 128 * 10)
    assert common.mlp_nominal_flops(64, [784, 128, 10]) == 3 * 2 * 64 * (784 * 128 + 128 * 10)
    # time to target: first checkpoint at or below, NaN never counts
    assert common.time_to_target([0, 1, 2, 3], [2.0, math.nan, 0.5, 0.1], 0.6) == 2.0
    assert common.time_to_target([0, 1], [2.0, 1.0], 0.5) is None
    assert common.finite_curve([0, 1, 2], [2.0, math.nan, 1.0]) == ([0.0, 2.0], [2.0, 1.0])
    assert common.ratio(3.0, 2.0) == 1.5 and common.ratio(None, 1.0) is None and common.ratio(1.0, 0) is None
    # the loss subset is the runtime's
    rows = common.loss_subset(60000, seed=0)
    assert len(rows) == 10000 and np.all(np.diff(rows) > 0)
    expected = np.sort(np.random.default_rng([0, 3]).choice(60000, size=10000, replace=False))
    np.testing.assert_array_equal(rows, expected)
    # tables
    table = common.Table("T", ["a", "b"])
    table.add(a=1, b=0.123456)
    table.add(a=2, b=None)
    text = table.to_text()
    assert "0.123" in text and text.splitlines()[1].split() == ["a", "b"]
    assert table.to_csv().splitlines() == ["a,b", "1,0.123456", "2,"]
    assert "| a | b |" in table.to_markdown() and "<th>a</th>" in table.to_html()


def test_limit_sgemm_call_checks_layout():
    limit = _script("limit")
    rng = np.random.default_rng(0)
    for shape in _script("_common").mlp_gemm_shapes(8, [20, 6, 3]):
        limit._sgemm_call(shape, rng)()  # raises if f2py copies or the layout is wrong


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (pip install torch==2.13.0)")
def test_torch_model_uses_leashed_layout_and_init():
    import torch

    vs = _script("vs_pytorch_hogwild")
    from leashed.models.registry import build_model

    widths = [784, 128, 10]
    model_ll = build_model("mlp", 784, 10, (128,))
    theta = model_ll.init_params(3)
    net = vs._torch_model(torch, widths)
    vs._load_flat(torch, net, theta, widths)
    back = np.empty_like(theta)
    vs._store_flat(net, back, widths)
    np.testing.assert_array_equal(back, theta)
    rng = np.random.default_rng(0)
    X = rng.random((50, 784), dtype=np.float32)
    y = rng.integers(0, 10, 50).astype(np.int32)
    ours = model_ll.evaluate(theta, X, y)[0]
    with torch.no_grad():
        theirs = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y).long())
    assert ours == pytest.approx(float(theirs), rel=1e-4)


def test_runtime_scaling_quick_prints_speedups_and_target_notes():
    """The docs/benchmarks.md example in quick mode: one table, M = 1 and 2, speedups and target notes."""
    cmd = [sys.executable, str(BENCH / "runtime_scaling.py"), "--quick", "--algorithms",
           "seq,leashed,hogwild"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    header = _table_header(proc.stdout, "Runtime throughput")
    assert header[:4] == ["algorithm", "M=1", "upd/s", "M=2"], header
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in ("seq", "leashed", "hogwild")}
    assert set(rows) == {"seq", "leashed", "hogwild"}
    for name in ("leashed", "hogwild"):
        m1, m2, speedup = float(rows[name][1]), float(rows[name][2]), float(rows[name][3])
        assert m1 > 0 and m2 > 0 and speedup == pytest.approx(m2 / m1, abs=0.02)
        assert f"{name} at M=2:" in proc.stdout
    assert "300 gradients per run, 1 repetitions" in proc.stdout


def test_gradient_throughput_prints_one_row_per_batch():
    proc = subprocess.run([sys.executable, str(BENCH / "gradient_throughput.py"), "--batch", "8", "16",
                           "--seconds", "0.02"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["8"], ["16"])]
    assert [r[0] for r in rows] == ["8", "16"]
    for r in rows:
        kernel, numpy_rate, ratio = float(r[1]), float(r[3]), float(r[4].rstrip("x"))
        assert kernel > 0 and numpy_rate > 0 and ratio == pytest.approx(kernel / numpy_rate, rel=0.02)


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "idx:/nonexistent-leashed-data", "--quick"], "IDX data not found"),
    (["--threads", "0", "--quick"], "at least 1"),
    (["--threads", "1,x", "--quick"], "comma-separated"),
    (["--algorithms", "seq,foo", "--quick"], "choose from"),
])
def test_runtime_scaling_bad_input_is_one_error_line_and_status_2(args, needle):
    proc = subprocess.run([sys.executable, str(BENCH / "runtime_scaling.py"), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_prediction_check_quick_runs_rounds_predicts_and_writes_its_table(tmp_path):
    """The prediction check end to end (--quick: m = 1, 2, 500 updates, 2 rounds): calibration and target
    runs, the machine file, paired predictions, a comparison per m and the table, with a line of progress
    per prediction. Its numbers are not meaningful at this size; the verdict column must hold one."""
    proc = subprocess.run([sys.executable, str(BENCH / "prediction_check.py"), "--quick", "--no-control",
                           "--repeats", "2", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "round 2/2 done" in proc.stdout and "predicting m = 2, calibrated: 2 x 5 seeds ..." in proc.stdout
    # the host check looks at 2 rounds x (the m = 2 calibration run + the m = 1, 2 targets)
    assert "host check: " in proc.stdout and " of 6 runs at m <= cores" in proc.stdout, proc.stdout
    assert (tmp_path / "machine.json").exists()
    for m in (1, 2):
        comparison = json.loads((tmp_path / f"compare-calibrated-m{m}" / "comparison.json").read_text())
        assert comparison["pairs"][0]["paired"] == 2
        assert comparison["pairs"][0]["verdict"] in ("agree", "differ", "inconclusive")
    assert len(list(tmp_path.glob("run-m*-s*.npz"))) == 2 * 2 + 2 * 2  # calibration + target runs
    clash = subprocess.run([sys.executable, str(BENCH / "prediction_check.py"), "--quick", "--busy-core",
                            "--busy-throughout", "--out", str(tmp_path / "x")], capture_output=True,
                           text=True, timeout=60)
    assert clash.returncode != 0 and "exclude each other" in clash.stderr
    assert not (tmp_path / "x").exists()  # refused before anything is made
    bad = subprocess.run([sys.executable, str(BENCH / "prediction_check.py"), "--quick", "--algorithm", "seq",
                          "--out", str(tmp_path / "y")], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--algorithm must be one of sync, lock, hogwild, leashed" in bad.stderr
    assert not (tmp_path / "y").exists()


def test_prediction_check_host_check_names_the_runs_a_slower_host_met(tmp_path):
    """A run at m <= cores whose median gradient is >= 1.3x its round's one-thread run is named, with its
    factor; a time-shared run (m > cores) is not judged; a run at 1.2x is not flagged."""
    from leashed.sim.simulate import simulate
    from leashed.spec import ExperimentSpec

    pc = _script("prediction_check")

    def save(name: str, m: int, compute: str, cores: int = 2) -> Path:
        spec = ExperimentSpec(algorithm="leashed", threads=m, model="counter", dataset="none", updates=200,
                              compute_time=compute, update_time="const:10us")
        result = simulate(spec)
        result = result.replace(metadata={**result.metadata, "machine": {"usable_cores": cores}})
        return result.save(tmp_path / name)

    rounds = [[save("run-m1-s100.npz", 1, "const:1ms"), save("run-m2-s200.npz", 2, "const:1.2ms")]]
    targets = {2: [save("run-m2-s0.npz", 2, "const:2ms")], 4: [save("run-m4-s0.npz", 4, "const:5ms")]}
    note = pc._host_check(rounds, targets)
    assert note.startswith("host check: 1 of 2 runs at m <= cores"), note
    assert "(0 calibration, 1 target: run-m2-s0.npz 2.00x)" in note, note
