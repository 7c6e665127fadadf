import json

from conftest import assert_one_line_error, run_cli
from test_results import make_result


def test_help_lists_every_command():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("train", "simulate", "fit", "compare", "report", "inspect", "demo", "bench"):
        assert command in proc.stdout


def test_inspect_json_has_every_key(tmp_path):
    path = make_result().save(tmp_path / "run.npz")
    proc = run_cli("inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["algorithm"] == "leashed"
    assert data["updates_applied"] == 45
    assert data["final_test_accuracy"] == 0.9
    human = run_cli("inspect", str(path))
    assert human.returncode == 0 and "staleness_mean" in human.stdout


def test_inspect_unreadable_and_truncated_files(tmp_path):
    assert_one_line_error(run_cli("inspect", str(tmp_path / "nope.npz")), "does not exist")
    path = make_result().save(tmp_path / "run.npz")
    path.write_bytes(path.read_bytes()[:100])
    assert_one_line_error(run_cli("inspect", str(path)), "truncated or corrupt")


def test_unknown_command_and_option():
    assert_one_line_error(run_cli("frobnicate"), "invalid choice")
    assert_one_line_error(run_cli("inspect"), "required")
