"""The README's main command, `leashed demo`, on a smoke-sized run (real MNIST, real threads)."""

import json
import re

import pytest

from conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "leashed-demo"
    proc = run_cli("demo", "--quick", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_demo_prints_report_path_last(demo):
    out, proc = demo
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"report: {out / 'report' / 'index.html'}"
    for step in range(1, 6):
        assert f"[{step}/5]" in proc.stdout


def test_demo_writes_runs_fits_and_linked_figures(demo):
    out, _ = demo
    names = sorted(p.name for p in (out / "runs").glob("*.npz"))
    # the one- and two-thread calibration runs, and on a loaded machine the prediction for that load
    expected = sorted([f"train-{a}-m2.npz" for a in ("hogwild", "leashed", "lock")]
                      + [f"sim-leashed-m{m}.npz" for m in (2, 4, 8, 16)]
                      + ["calibrate-leashed-m1.npz", "calibrate-leashed-m2.npz"])
    assert [n for n in names if n != "sim-leashed-m2-loaded.npz"] == expected
    assert (out / "machine.json").is_file()
    fits = json.loads((out / "fit.json").read_text())
    assert fits["format"].startswith("leashed")
    html = (out / "report" / "index.html").read_text()
    figures = re.findall(r'src="data:image/png;base64,[^"]+"[^>]*data-file="([^"]+\.png)"', html)
    assert len(figures) >= 4  # embedded (one file to mail), each also written to figures/
    for rel in figures:
        assert (out / "report" / rel).stat().st_size > 1000
    assert (out / "training.png").stat().st_size > 1000


def test_demo_compares_a_prediction_it_was_not_calibrated_from(demo):
    """Step 4 compares the m = 2 prediction made from the calibration runs and the machine file only."""
    out, proc = demo
    from leashed.results import RunResult

    predicted = RunResult.load(out / "runs" / "sim-leashed-m2.npz")
    calibrated = predicted.extra["timing"]["calibrated_from"]
    assert "calibrate-leashed-m1.npz" in calibrated and "calibrate-leashed-m2.npz" in calibrated
    assert "train-leashed-m2.npz" not in calibrated
    assert re.search(r"verdict: (agree|differ|inconclusive)", proc.stdout)
    comparison = json.loads((out / "compare" / "comparison.json").read_text())
    assert comparison["pairs"][0]["verdict"] in ("agree", "differ", "inconclusive")


def test_demo_bad_option(tmp_path):
    assert_one_line_error(run_cli("demo", "--threads", "0", "--out", str(tmp_path / "d")), "threads")
