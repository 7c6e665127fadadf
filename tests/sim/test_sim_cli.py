"""``leashed simulate`` as a user runs it (subprocesses), and reproducibility of its files."""

from __future__ import annotations

import json
import re
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
from simtest_helpers import spec_of

from leashed.results import RunResult
from leashed.sim.simulate import run_simulation

from conftest import ROOT, assert_one_line_error, run_cli

GOOD = ["simulate", "--algorithm", "leashed", "--threads", "4", "--compute-time", "gamma:mean=2ms,cv=0.2",
        "--update-time", "const:200us", "--updates", "2000", "--seed", "3"]


def test_good_run_writes_a_loadable_file(tmp_path):
    out = tmp_path / "sim.npz"
    proc = run_cli(*GOOD, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "staleness mean" in proc.stdout and str(out) in proc.stdout
    result = RunResult.load(out)
    assert result.source == "sim" and result.spec.algorithm == "leashed" and result.spec.threads == 4
    assert result.totals["updates_applied"] + result.totals["updates_dropped"] == 2000
    assert result.spec.compute_time == "gamma:mean=2ms,cv=0.2" and result.extra["mode"] == "timing"
    assert len(result.samples) > 0 and result.params.size == 0


@pytest.mark.parametrize("args, needle", [
    (["--update-time", "gamma:mean=1ms"], "missing cv"),
    (["--update-time", "bogus"], "not a distribution"),
    (["--threads", "0"], "threads"),
    (["--persistence", "-1"], "persistence"),
    (["--compute-time", "exp:mean=-1ms"], "positive"),
    (["--lr", "0.1"], "with-gradients"),
    (["--updates", "0"], "updates"),
    (["--algorithm", "seq"], "one thread"),
    (["--copy-fraction", "2"], "copy fraction"),
])
def test_bad_input_is_one_line_and_no_file(tmp_path, args, needle):
    out = tmp_path / "bad.npz"
    argv = list(GOOD)
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert_one_line_error(run_cli(*argv, "--out", str(out)), needle)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_missing_options_are_one_line(tmp_path):
    assert_one_line_error(run_cli("simulate", "--threads", "2", "--out", str(tmp_path / "x.npz")),
                          "--compute-time and --update-time")
    assert_one_line_error(run_cli("simulate", "--threads", "2"), "required")
    assert_one_line_error(run_cli("simulate", "--calibrate-from", str(tmp_path / "none.npz"), "--out",
                                  str(tmp_path / "x.npz")), "does not exist")
    assert not (tmp_path / "x.npz").exists()


def test_calibrate_from_and_with_gradients(tmp_path):
    runtime = tmp_path / "runtime.npz"
    sim_file = run_simulation(spec_of("leashed", 2, 500, "gamma:mean=1ms,cv=0.3", "const:100us"),
                              metadata=False).result
    sim_file.replace(source="runtime").save(runtime)  # stands in for a measured run
    out = tmp_path / "pred.npz"
    proc = run_cli("simulate", "--calibrate-from", str(runtime), "--threads", "16", "--out", str(out),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    pred = RunResult.load(out)
    assert pred.spec.threads == 16 and pred.spec.algorithm == "leashed"
    assert pred.spec.compute_time == f"empirical:{runtime}" and len(pred.updates) == 500
    assert pred.extra["timing"]["calibrated_from"] == str(runtime)
    assert pred.extra["timing"]["compute_mean_s"] == pytest.approx(1e-3, rel=0.1)

    grads = tmp_path / "grads.npz"
    proc = run_cli("simulate", "--algorithm", "lock", "--threads", "3", "--compute-time", "exp:mean=1ms",
                   "--update-time", "const:50us", "--model", "quadratic", "--lr", "0.1", "--batch-size", "16",
                   "--updates", "200", "--evaluations", "2", "--out", str(grads))
    assert proc.returncode == 0, proc.stderr
    res = RunResult.load(grads)
    assert res.extra["mode"] == "gradients" and res.spec.dataset == "synthetic" and res.params.size == 100
    assert np.isfinite(res.samples.loss).sum() == 3


def test_first_docs_example_runs(tmp_path):
    text = (ROOT / "docs" / "simulator.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    first = next(line for line in block.splitlines() if line.startswith("leashed simulate"))
    argv = shlex.split(first)[1:]
    proc = run_cli(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / argv[argv.index("--out") + 1]
    result = RunResult.load(out)
    assert result.spec.threads == 16
    assert abs(result.summary()["staleness_mean"] - 15) < 0.1  # T1, as the docs say


# ------------------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("algorithm", ["leashed", "lock", "hogwild", "sync"])
def test_same_seed_same_arrays(algorithm):
    spec = spec_of(algorithm, 6, 3_000, "gamma:mean=1,cv=0.5", "exp:mean=0.2", persistence=1 if
                   algorithm == "leashed" else "inf", seed=11)
    a = run_simulation(spec, metadata=False)
    b = run_simulation(spec, metadata=False)
    for name in a.records:
        assert np.array_equal(a.records[name], b.records[name]), name
    assert np.array_equal(a.result.samples.live_vectors, b.result.samples.live_vectors)
    c = run_simulation(spec.replace(seed=12), metadata=False)
    assert not np.array_equal(a.records["t_commit"], c.records["t_commit"])


def test_same_seed_same_file_except_metadata(tmp_path):
    spec = spec_of("leashed", 5, 2_000, "lognormal:mean=1ms,cv=0.7", "exp:mean=100us", persistence=2, seed=4)
    paths = [run_simulation(spec).result.save(tmp_path / f"{i}.npz") for i in range(2)]
    contents = []
    for path in paths:
        with zipfile.ZipFile(path) as z:
            names = sorted(z.namelist())
            arrays = {n: z.read(n) for n in names if n != "meta.json.npy"}
            with np.load(path) as archive:
                meta = json.loads(bytes(archive["meta.json"]).decode())
        meta.pop("metadata")
        contents.append((names, arrays, meta))
    assert contents[0] == contents[1]
    assert Path(paths[0]).read_bytes() != b""
