"""The promise for bad input (docs/errors.md): corrupted results and fit files and bad command lines end in
one ``leashed: error:`` line and exit 2, never a traceback, never a new file.

Most cases run in-process (the loader must raise a LeashedError subclass, nothing else; the CLI's
``main`` must return 2 with one line); a handful run as real subprocesses. Seeded, so a failure repeats.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from leashed import cli
from leashed.errors import LeashedError
from leashed.inspect import describe
from leashed.results import RunResult
from leashed.schema import safe_text
from tests.conftest import assert_one_line_error, run_cli

COUNTS = {"inputs": 0, "broken": 0}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from leashed.sim.simulate import run_simulation
    from leashed.sim.timing import TimingModel
    from leashed.spec import ExperimentSpec

    spec = ExperimentSpec(algorithm="leashed", threads=3, model="counter", dataset="none", updates=300,
                          compute_time="exp:mean=1ms", update_time="const:100us")
    sim = run_simulation(spec, TimingModel.parse("exp:mean=1ms", "const:100us"), samples=20, metadata=False)
    path = tmp_path_factory.mktemp("fuzz") / "good.npz"
    return sim.result.save(path)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _write(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def _meta(path: Path) -> dict:
    raw = np.lib.format.read_array(io.BytesIO(_members(path)["meta.json.npy"]))
    return json.loads(bytes(raw).decode())


def _with_meta(good: Path, out: Path, meta: object) -> Path:
    members = _members(good)
    members["meta.json.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return _write(out, members)


def _with_array(good: Path, out: Path, name: str, array: np.ndarray) -> Path:
    members = _members(good)
    members[f"{name}.npy"] = _npy(array)
    return _write(out, members)


def _expect_refused_or_valid(path: Path) -> str:
    """Load ``path``: a LeashedError (refused) or a result whose summary and description work."""
    COUNTS["inputs"] += 1
    try:
        result = RunResult.load(path)
    except LeashedError as exc:
        message = str(exc)
        assert "\n" not in message and "\x1b" not in message
        return "refused"
    except BaseException as exc:  # the promise is broken
        COUNTS["broken"] += 1
        raise AssertionError(f"{path.name}: {type(exc).__name__}: {exc}") from exc
    result.summary()
    text = describe(result)
    assert "\x1b" not in text
    return "valid"


def _hostile_files(good: Path, folder: Path) -> list[tuple[str, Path]]:
    meta = _meta(good)
    n = len(RunResult.load(good).updates)
    cases: list[tuple[str, Path]] = []

    def add(name: str, path: Path) -> None:
        cases.append((name, path))

    add("meta-list", _with_meta(good, folder / "meta-list.npz", [1, 2, 3]))
    add("meta-string", _with_meta(good, folder / "meta-str.npz", "leashed"))
    for key, value in (("metadata", "a string"), ("totals", [1]), ("extra", 5), ("spec", "seq")):
        add(f"{key}-wrong", _with_meta(good, folder / f"{key}.npz", {**meta, key: value}))
    for key, value in (("updates_applied", "many"), ("wall_time_s", [1]), ("diverged_at", 1.5),
                       ("interrupted", "no"), ("cas_failures", -4), ("wall_time_s", float("nan"))):
        add(f"totals-{key}", _with_meta(good, folder / f"t-{key}.npz",
                                        {**meta, "totals": {**meta["totals"], key: value}}))
    for key, value in (("threads", "2"), ("hidden", "abc"), ("algorithm", ["seq"]), ("seed", -1),
                       ("updates", 10**13), ("sparsifier", 5), ("step_table", [[1.0]]), ("lr", "fast"),
                       ("persistence", "lots"), ("dataset", {"x": 1})):
        add(f"spec-{key}", _with_meta(good, folder / f"s-{key}.npz",
                                      {**meta, "spec": {**meta["spec"], key: value}}))
    add("format-version-bool", _with_meta(good, folder / "fv.npz", {**meta, "format_version": True}))
    add("format-version-new", _with_meta(good, folder / "fv2.npz", {**meta, "format_version": 99}))
    add("source-bad", _with_meta(good, folder / "src.npz", {**meta, "source": "\x1b[31mred"}))
    add("staleness-negative", _with_array(good, folder / "neg.npz", "update_staleness",
                                          np.full(n, -5, np.int64)))
    add("staleness-huge", _with_array(good, folder / "huge.npz", "update_staleness",
                                      np.full(n, 10**13, np.int64)))
    add("staleness-at-count", _with_array(good, folder / "count.npz", "update_staleness",
                                          np.full(n, n, np.int64)))
    add("length-mismatch", _with_array(good, folder / "len.npz", "update_thread", np.zeros(n - 1, np.int32)))
    add("two-d", _with_array(good, folder / "2d.npz", "update_t_start", np.zeros((n, 2))))
    add("float-for-int", _with_array(good, folder / "fl.npz", "update_thread", np.zeros(n)))
    add("strings", _with_array(good, folder / "str.npz", "params", np.array(["a", "b"])))
    add("nan-times", _with_array(good, folder / "nan.npz", "update_t_commit", np.full(n, np.nan)))
    members = _members(good)
    del members["update_dropped.npy"]
    add("missing-array", _write(folder / "missing.npz", members))
    add("empty-zip", _write(folder / "empty.npz", {}))
    add("not-zip", _raw(folder / "text.npz", b"hello, not a zip file\n" * 10))
    add("empty-file", _raw(folder / "zero.npz", b""))
    # a zip bomb: bzip2 packs 200 MB of zeros into a few hundred bytes; deflate with a forged size
    bomb = dict(_members(good))
    bomb["params.npy"] = _npy(np.zeros(50_000_000, np.float32))
    add("bzip2-bomb", _write(folder / "bomb.npz", bomb, compression=zipfile.ZIP_BZIP2))
    add("declared-size", _forge_size(good, folder / "forged.npz", "update_thread.npy", 2**40))
    add("meta-escape", _with_meta(good, folder / "esc.npz",
                                  {**meta, "metadata": {"cpu_model": "\x1b]0;owned\x07\x1b[2J",
                                                        "git_revision": "$\\undefinedmacro$"}}))
    return cases


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _forge_size(good: Path, out: Path, member: str, size: int) -> Path:
    """Rewrite one member's declared uncompressed size in the central directory (a lying archive)."""
    data = bytearray(good.read_bytes())
    name = member.encode()
    pos = 0
    while True:  # find the central directory record of ``member``
        pos = data.find(b"PK\x01\x02", pos)
        assert pos >= 0
        n_name = int.from_bytes(data[pos + 28:pos + 30], "little")
        if bytes(data[pos + 46:pos + 46 + n_name]) == name:
            break
        pos += 4
    if int.from_bytes(data[pos + 24:pos + 28], "little") == 0xFFFFFFFF:  # zip64: size in the extra field
        n_name = int.from_bytes(data[pos + 28:pos + 30], "little")
        extra = pos + 46 + n_name
        data[extra + 4:extra + 12] = size.to_bytes(8, "little")
    else:
        data[pos + 24:pos + 28] = min(size, 0xFFFFFFFE).to_bytes(4, "little")
    out.write_bytes(bytes(data))
    return out


def test_hostile_results_files_are_refused_with_one_line(good_file, tmp_path):
    outcomes = {name: _expect_refused_or_valid(path) for name, path in _hostile_files(good_file, tmp_path)}
    refused = {name for name, what in outcomes.items() if what == "refused"}
    assert refused == set(outcomes) - {"meta-escape"}, outcomes
    escaped = describe(RunResult.load(tmp_path / "esc.npz"))
    assert "\\x1b]0;owned\\x07" in escaped and "\x1b" not in escaped


def test_truncated_and_bit_flipped_files_never_escape_the_loader(good_file, tmp_path):
    rng = random.Random(14)
    data = good_file.read_bytes()
    kinds = {"refused": 0, "valid": 0}
    for i in range(150):
        cut = tmp_path / f"cut{i}.npz"
        cut.write_bytes(data[:rng.randrange(len(data))])
        kinds[_expect_refused_or_valid(cut)] += 1
    for i in range(250):
        flipped = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 8))):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{i}.npz"
        path.write_bytes(bytes(flipped))
        kinds[_expect_refused_or_valid(path)] += 1
    assert kinds["refused"] >= 150  # every truncation at least; most flips break the CRC
    assert COUNTS["broken"] == 0


BAD_OPTIONS = {
    "--updates": ["0", "-3", "1000000000000", "nan", "1e3"],
    "--threads": ["0", "-1", "100000000"],
    "--seed": ["-1", "99999999999999999999999"],
    "--persistence": ["nan", "1e30", "-1", "2.5", "lots"],
    "--lr": ["nan", "inf", "-1", "0"],
    "--hidden": ["0", "-4", "1000000", "a,b"],
    "--dim": ["0", "-7", "99999999999999"],
    "--batch-size": ["0", "-64"],
    "--evaluations": ["-1", "10000000"],
    "--epochs": ["0", "10000000"],
}
SIM_OPTIONS = {
    "--samples": ["0", "100000000"],
    "--copy-fraction": ["nan", "2", "-0.5"],
    "--bus-contention": ["inf", "-1"],
    "--compute-time": ["gamma:mean=1ms,cv=1e200", "const:nan", "exp:mean=inf", "const:1e400s",
                       "lognormal:mean=1ms,cv=-1"],
}


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


def test_bad_command_lines_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base_sim = ["simulate", "--threads", "2", "--compute-time", "const:1ms", "--update-time", "const:10us",
                "--updates", "100", "--out", "s.npz", "--quiet"]
    base_train = ["train", "--model", "mlp", "--hidden", "16", "--updates", "400", "--out", "t.npz",
                  "--quiet"]
    tried = 0
    for base in (base_sim, base_train):
        options = {**BAD_OPTIONS, **(SIM_OPTIONS if base is base_sim else {})}
        for option, values in options.items():
            if base is base_train and option in ("--dim",):
                continue
            for value in values:
                argv = [*base, option, value]
                status, err = _main(argv, capsys)
                tried += 1
                COUNTS["inputs"] += 1
                lines = [line for line in err.splitlines() if line.strip()]
                ok = status == 2 and len(lines) == 1 and lines[0].startswith("leashed: error: ")
                if not ok:
                    COUNTS["broken"] += 1
                assert ok, (argv, status, err)
                assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused command left a file behind"
    assert tried >= 70


def test_fit_files_are_validated_before_they_become_step_tables(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fits = {
        "list.json": [1, 2],
        "results-int.json": {"format": "leashed-staleness-fit", "format_version": 1, "results": [1]},
        "poisson-negative.json": {"model": "poisson", "params": {"lam": -3}, "n": 10, "loglik": -1.0,
                                  "n_params": 1},
        "poisson-nan.json": {"model": "poisson", "params": {"lam": None}, "n": 10, "loglik": -1.0,
                             "n_params": 1},
        "geometric-big.json": {"model": "geometric", "params": {"q": 3}, "n": 10, "loglik": -1.0,
                               "n_params": 1},
        "pmf-2d.json": {"model": "empirical", "params": {"pmf": [[0.5, 0.5]]}, "n": 10, "loglik": -1.0,
                        "n_params": 1},
        "pmf-negative.json": {"model": "empirical", "params": {"pmf": [-1, 2]}, "n": 10, "loglik": -1.0,
                              "n_params": 1},
    }
    for name, data in fits.items():
        (tmp_path / name).write_text(json.dumps(data))
        status, err = _main(["train", "--model", "mlp", "--hidden", "16", "--updates", "400",
                             "--step-policy", "normalised", "--staleness-model", name, "--out", "t.npz",
                             "--quiet"], capsys)
        COUNTS["inputs"] += 1
        assert status == 2 and err.count("\n") == 1 and err.startswith("leashed: error: "), (name, err)
        assert name in err
    assert not (tmp_path / "t.npz").exists()


def test_empirical_timing_files_are_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "two-d.npy", np.ones((3, 4)))
    np.save(tmp_path / "empty.npy", np.zeros(0))
    np.save(tmp_path / "negative.npy", -np.ones(5))
    (tmp_path / "empty.txt").write_text("")
    for name in ("two-d.npy", "empty.npy", "negative.npy", "empty.txt"):
        status, err = _main(["simulate", "--threads", "2", "--compute-time", f"empirical:{name}",
                             "--update-time", "const:10us", "--updates", "100", "--out", "s.npz"], capsys)
        COUNTS["inputs"] += 1
        assert status == 2 and err.count("\n") == 1 and err.startswith("leashed: error: "), (name, err)
        assert "Warning" not in err
    assert not (tmp_path / "s.npz").exists()


def test_the_promise_holds_for_real_processes(good_file, tmp_path):
    (tmp_path / "meta-list.npz").write_bytes(_with_meta(good_file, tmp_path / "m.npz", [1]).read_bytes())
    (tmp_path / "m.npz").unlink()
    cases = [
        (["simulate", "--threads", "2", "--compute-time", "const:1ms", "--update-time", "const:10us",
          "--updates", "1000000000000", "--out", "s.npz"], "largest allowed value"),
        (["train", "--persistence", "nan", "--out", "t.npz"], "persistence"),
        (["inspect", "meta-list.npz"], "meta.json"),
        (["fit", "meta-list.npz", "--out", "fit.json"], "meta.json"),
        (["simulate", "--calibrate-from", "meta-list.npz", "--threads", "4", "--out", "p.npz"], "meta.json"),
    ]
    for argv, needle in cases:
        before = set(tmp_path.iterdir())
        proc = run_cli(*argv, cwd=tmp_path, timeout=120)
        COUNTS["inputs"] += 1
        assert_one_line_error(proc, needle)
        assert set(tmp_path.iterdir()) == before


def test_terminal_escapes_are_made_visible():
    assert safe_text("a\x1b[2Jb\x07\tc\n") == "a\\x1b[2Jb\\x07\tc\n"
    assert safe_text("\x9b31m") == "\\x9b31m"


def test_report_counts():
    """Printed with ``pytest -s``: the fuzz counts of this session (the closing note of issue 14)."""
    print(f"\nfuzz: {COUNTS['inputs']} inputs tried, promise broken {COUNTS['broken']} times")
    assert COUNTS["broken"] == 0
