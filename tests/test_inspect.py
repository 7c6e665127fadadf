"""``leashed inspect`` agrees with ``leashed train``, and names the other files leashed writes."""

from __future__ import annotations

import json
import re

from conftest import assert_one_line_error, run_cli
from test_results import make_result


def test_live_vectors_max_is_the_stores_peak_not_the_sampled_one(tmp_path):
    """The store's exact high-water mark (extra) wins over the samples, which can miss a short peak."""
    sampled = make_result()
    assert sampled.summary()["live_vectors_max"] == 4  # no store record: the samples' maximum
    exact = sampled.replace(extra={"live_vectors_max": 5})
    path = exact.save(tmp_path / "run.npz")
    proc = run_cli("inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["live_vectors_max"] == 5


def test_train_and_inspect_print_the_same_live_vectors_max(tmp_path):
    out = tmp_path / "run.npz"
    train = run_cli("train", "--algorithm", "leashed", "--threads", "2", "--model", "counter", "--updates",
                    "3000", "--evaluations", "2", "--out", str(out))
    assert train.returncode == 0, train.stderr
    printed = int(re.search(r"live vectors max (\d+)", train.stdout).group(1))
    inspected = json.loads(run_cli("inspect", str(out), "--json").stdout)["live_vectors_max"]
    assert printed == inspected


def test_inspect_names_a_fit_file(tmp_path):
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"format": "leashed-staleness-fit", "format_version": 1, "results": []}))
    assert_one_line_error(run_cli("inspect", str(fit)), "is a staleness fit file")
    proc = run_cli("inspect", str(fit))
    assert "--staleness-model" in proc.stderr and "truncated" not in proc.stderr
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really")
    assert_one_line_error(run_cli("inspect", str(broken)), "truncated or corrupt")
