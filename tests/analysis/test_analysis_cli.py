"""``leashed fit``, ``leashed compare`` and ``leashed report`` as a user runs them."""

import json

import numpy as np
from analysis_synth import make_run

from leashed.analysis.steps import step_table_from_fit

from conftest import assert_one_line_error, run_cli


def test_fit_writes_table_json_and_plot(tmp_path):
    a = make_run(threads=4, seed=1).save(tmp_path / "m4.npz")
    out, png = tmp_path / "fit.json", tmp_path / "fit.png"
    short = run_cli("fit", str(a), str(a))
    assert short.returncode == 0, short.stderr
    lines = short.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("#0 ") and lines[1].startswith("#1 ")  # one line a file
    assert " best " in lines[0] and "--verbose" in lines[2]
    proc = run_cli("fit", str(a), "--out", str(out), "--plot", str(png), "--verbose")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [r[1].rstrip("*") for r in rows][-1] == "poisson"  # worst AIC last on geometric data
    aic = [float(r[-3]) for r in rows]
    assert aic == sorted(aic)
    data = json.loads(out.read_text())
    assert data["format"] == "leashed-staleness-fit" and data["format_version"] == 1
    entry = data["results"][0]
    assert entry["n"] == 4000 and entry["best"] == entry["fits"][0]["model"]
    assert {f["model"] for f in entry["fits"]} == {"poisson", "geometric", "cmp", "negbin"}
    assert png.stat().st_size > 1000
    assert len(step_table_from_fit(out)) > 1


def test_fit_unreadable_file_is_one_error_line_and_no_output(tmp_path):
    out, png = tmp_path / "fit.json", tmp_path / "fit.png"
    good = make_run(threads=2).save(tmp_path / "good.npz")
    assert_one_line_error(run_cli("fit", str(good), str(tmp_path / "missing.npz"), "--out", str(out),
                                  "--plot", str(png)), "does not exist")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:200])
    assert_one_line_error(run_cli("fit", str(bad), "--out", str(out)), "truncated or corrupt")
    seq = make_run(np.zeros(50, int), algorithm="seq", threads=1).save(tmp_path / "seq.npz")
    assert_one_line_error(run_cli("fit", str(seq), "--out", str(out)), "staleness 0")
    assert_one_line_error(run_cli("fit", str(good), "--models", "poisson,weibull"), "unknown staleness model")
    assert not out.exists() and not png.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "good.npz", "seq.npz"]


def test_compare_and_report_commands(tmp_path):
    files = []
    for m in (2, 4):
        files.append(make_run(threads=m, seed=m, source="sim").save(tmp_path / f"sim{m}.npz"))
        files.append(make_run(threads=m, seed=10 + m).save(tmp_path / f"run{m}.npz"))
    proc = run_cli("compare", *map(str, files), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "verdict: agree (2 pairs)" in proc.stdout
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert data["verdict"] == "agree" and len(data["pairs"]) == 2
    assert (tmp_path / "cmp" / "staleness_mean.png").exists()
    assert_one_line_error(run_cli("compare", str(files[1]), str(files[3])), "only runtime")

    proc = run_cli("report", *map(str, files), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("index.html")
    assert (tmp_path / "rep" / "index.html").exists()
    assert_one_line_error(run_cli("report", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "rep2")),
                          "does not exist")
    assert not (tmp_path / "rep2").exists()


def test_report_shows_the_laws_a_calibrated_simulation_used(tmp_path):
    from leashed.analysis.report import _shown_spec

    timing = {"compute": "timeline:run-m2.npz", "update": "timeline:run-m2.npz (local attempts)"}
    sim = make_run(source="sim", extra={"timing": timing})
    sim = sim.replace(spec=sim.spec.replace(compute_time="empirical:run-m1.npz",
                                            update_time="empirical:run-m1.npz"))
    shown = _shown_spec(sim)
    assert shown["compute_time"] == "timeline:run-m2.npz"
    assert shown["update_time"] == "timeline:run-m2.npz (local attempts)"
    assert _shown_spec(make_run())["compute_time"] == make_run().spec.to_dict()["compute_time"]
    files = [sim.save(tmp_path / "sim.npz"), make_run(seed=1).save(tmp_path / "run.npz")]
    proc = run_cli("report", *map(str, files), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "timeline:run-m2.npz" in html and "empirical:run-m1.npz" not in html


def test_report_shortens_a_law_over_many_calibration_files():
    from leashed.analysis.report import short_law

    files = ", ".join(f"/tmp/demo/runs/calibrate-m{1 + k % 2}-r{k // 2}.npz" for k in range(40))
    assert short_law(f"timeline:{files} (local attempts)") == \
        "timeline: 40 runs, calibrate-m1-r0.npz … calibrate-m2-r19.npz (local attempts)"
    assert short_law("timeline:/a/b/m1.npz, /a/b/m2.npz") == "timeline:m1.npz, m2.npz"
    assert short_law("gamma:mean=2ms,cv=0.2") == "gamma:mean=2ms,cv=0.2"
