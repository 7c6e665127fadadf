"""The README's main command, `leashed demo`, on a smoke-sized run (real MNIST, real threads)."""

import json
import os
import re
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli

#: the measured runs' thread count: one more than the usable cores (leashed/demo.py --compare-threads)
M = len(os.sched_getaffinity(0)) + 1


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
    # two rounds (--quick) of one- and two-thread calibration runs, a measured run and its prediction,
    # and on a loaded machine the predictions for the recorded loads
    rounds = [f"{kind}-r{r}.npz" for r in (0, 1) for kind in ("calibrate-leashed-m1", "calibrate-leashed-m2",
                                                              f"measure-leashed-m{M}", f"sim-leashed-m{M}")]
    expected = sorted([f"train-{a}-m2.npz" for a in ("hogwild", "leashed", "lock")]
                      + [f"sim-leashed-m{m}.npz" for m in (2, 4, 8, 16) if m != M] + rounds)
    assert [n for n in names if not n.endswith("-loaded.npz")] == expected
    assert (out / "machine.json").is_file()
    fits = json.loads((out / "fit.json").read_text())
    assert fits["format"].startswith("leashed")
    html = (out / "report" / "index.html").read_text()
    figures = re.findall(r'src="data:image/png;base64,[^"]+"[^>]*data-file="([^"]+\.png)"', html)
    assert len(figures) >= 4  # embedded (one file to mail), each also written to figures/
    for rel in figures:
        assert (out / "report" / rel).stat().st_size > 1000
    assert (out / "training.png").stat().st_size > 1000


def test_demo_compares_predictions_it_was_not_calibrated_from_in_pairs(demo):
    """Step 4 compares, in pairs, each round's prediction of m = cores + 1 (a setting no calibration run
    had), made from that round's calibration runs and the machine file only, with that round's measured
    run."""
    out, proc = demo
    from leashed.results import RunResult

    for r in (0, 1):
        predicted = RunResult.load(out / "runs" / f"sim-leashed-m{M}-r{r}.npz")
        assert predicted.spec.threads == M
        calibrated = predicted.extra["timing"]["calibrated_from"]
        assert all(f"calibrate-leashed-m{m}-r{r}.npz" in calibrated for m in (1, 2))
        assert not any(name in calibrated for name in
                       ("train-leashed-m2.npz", "measure-leashed", f"-r{1 - r}.npz")), calibrated
    assert re.search(r"verdict: (agree|differ|inconclusive)", proc.stdout)
    comparison = json.loads((out / "compare" / "comparison.json").read_text())
    (pair,) = comparison["pairs"]
    assert pair["verdict"] in ("agree", "differ", "inconclusive")
    assert pair["paired"] == 2
    measured = [f"measure-leashed-m{M}-r{r}.npz" for r in (0, 1)]
    assert [Path(f).name for f in pair["measured_files"]] == measured
    assert [Path(f).name for f in pair["predicted_files"]] == [f"sim-leashed-m{M}-r{r}.npz" for r in (0, 1)]
    assert pair["threads"] == M
    assert "round 2/2" in proc.stdout
    # the report shows the same comparison, with its verdict, in its own section
    html = (out / "report" / "index.html").read_text()
    heading = f"<h2>Held-out predictions of m = {M} against the measured runs, 2 paired rounds</h2>"
    section = html.split(heading)[1]
    assert f"leashed m={M} Tp=inf: 2 pairs" in section.split("<h2>")[0]
    assert re.search(r"Verdict: (agree|differ|inconclusive)", section.split("<h2>")[0])


def test_demo_bad_option(tmp_path):
    assert_one_line_error(run_cli("demo", "--threads", "0", "--out", str(tmp_path / "d")), "threads")
    assert_one_line_error(run_cli("demo", "--rounds", "1", "--out", str(tmp_path / "d")), "rounds")
    assert_one_line_error(run_cli("demo", "--compare-threads", "0", "--out", str(tmp_path / "d")),
                          "compare-threads")
    assert not (tmp_path / "d").exists()


def test_demo_on_a_loaded_machine_compares_the_predictions_for_the_recorded_loads(demo, tmp_path, monkeypatch,
                                                                                  capsys):
    """When a measured run was loaded, the demo says so and compares, in pairs, the predictions that take
    each measured run's recorded background load."""
    import argparse
    import shutil

    import leashed.machine
    from leashed import demo as demo_module
    from leashed.results import RunResult

    out, _ = demo
    runs = tmp_path / "runs"
    shutil.copytree(out / "runs", runs)
    measured = [runs / f"measure-leashed-m{M}-r{r}.npz" for r in (0, 1)]
    calibration = [[runs / f"calibrate-leashed-m{m}-r{r}.npz" for m in (1, 2)] for r in (0, 1)]
    loaded_run = RunResult.load(measured[1])
    record = loaded_run.metadata["machine"]
    monkeypatch.setattr(leashed.machine, "machine_loaded", lambda r: r is not None and r == record)
    args = argparse.Namespace(threads=2, compare_threads=M, seed=0)

    demo_module._loaded_note(measured, calibration, out / "machine.json", runs, tmp_path, args)
    said = capsys.readouterr().out
    assert "loaded during 1 of the 2 measured runs" in said
    comparison = json.loads((tmp_path / "compare-loaded" / "comparison.json").read_text())
    assert comparison["pairs"][0]["paired"] == 2
    for r in (0, 1):
        prediction = RunResult.load(runs / f"sim-leashed-m{M}-r{r}-loaded.npz")
        recorded = float(RunResult.load(measured[r]).metadata["machine"].get("background_load_cores") or 0.0)
        assert prediction.extra["machine"]["background_load"] == pytest.approx(recorded, abs=1e-3)

    monkeypatch.setattr(leashed.machine, "machine_loaded", lambda r: False)
    shutil.rmtree(tmp_path / "compare-loaded")
    demo_module._loaded_note(measured, calibration, out / "machine.json", runs, tmp_path, args)
    assert capsys.readouterr().out == "" and not (tmp_path / "compare-loaded").exists()
