"""SIGINT and SIGTERM at seeded random instants into train, simulate and demo (docs/errors.md, "Signals").

The promise: exit 130 (SIGINT) or 143 (SIGTERM); a valid results file whenever the signal came after
training (or simulating) had started its loop; never a ``.tmp`` file left behind. Most instants are sent
in-process (``leashed.cli.main`` in the main thread, the signal from a timer thread, so no interpreter
start-up per instant); a few into real processes, including a second signal that aborts.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from leashed import cli
from leashed.results import RunResult

COUNTS = {"instants": 0, "broken": 0}
TRAIN = ["train", "--model", "mlp", "--hidden", "16", "--updates", "400", "--evaluations", "10", "--quiet"]
SIMULATE = ["simulate", "--threads", "4", "--compute-time", "exp:mean=1ms", "--update-time", "const:50us",
            "--quiet", "--updates", "60000"]
BIG_SIMULATE = [*SIMULATE[:-1], "5000000", "--out", "s.npz"]


@pytest.fixture
def quiet_signals():
    """A no-op handler outside ``main`` so that a signal arriving just after it returned is harmless."""
    old = {s: signal.signal(s, lambda *a: None) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in old.items():
        signal.signal(s, h)


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]


def _signal_main(argv: list[str], sig: int, delay: float, marks: dict[str, float]) \
        -> tuple[int, float, float]:
    """Run ``cli.main(argv)`` and send ``sig`` to this process after ``delay`` s; (status, sent, ended)."""
    sent: list[float] = []

    def fire() -> None:
        sent.append(time.perf_counter())
        os.kill(os.getpid(), sig)

    start = time.perf_counter()
    timer = threading.Timer(delay, fire)
    timer.start()
    try:
        status = cli.main(argv)
    finally:
        ended = time.perf_counter()
        timer.cancel()
        timer.join()
    time.sleep(0.01)
    return status, (sent[0] - start) if sent else float("inf"), ended - start


def _loop_started(monkeypatch, module: str, name: str, marks: dict[str, float]) -> None:
    """Record (relative to the run's start) when ``module.name`` is entered: the loop starts after it."""
    import importlib

    mod = importlib.import_module(module)
    original = getattr(mod, name)

    def wrapped(*args, **kwargs):
        marks.setdefault("loop", time.perf_counter())
        return original(*args, **kwargs)

    monkeypatch.setattr(mod, name, wrapped)


def _check(status: int, sig: int, sent: float, ended: float, loop: float | None, out: Path,
           folder: Path) -> None:
    COUNTS["instants"] += 1
    ok = True
    if sent < ended - 0.02:  # delivered while the command ran
        ok &= status == 128 + sig
        if loop is not None and sent > loop + 0.02:
            ok &= out.exists()
    else:
        ok &= status in (0, 128 + sig)
    if out.exists():
        RunResult.load(out)  # valid
    ok &= not _temporaries(folder)
    if not ok:
        COUNTS["broken"] += 1
    assert ok, (status, sig, sent, ended, loop, out.exists(), _temporaries(folder))


def _instants(command: list[str], tmp_path: Path, monkeypatch, n: int, seed: int, hook: tuple[str, str],
              extra: list[str] | None = None) -> None:
    rng = random.Random(seed)
    monkeypatch.chdir(tmp_path)
    marks: dict[str, float] = {}
    _loop_started(monkeypatch, *hook, marks)
    t0 = time.perf_counter()
    assert cli.main([*command, "--out", "warm.npz"]) == 0  # warm caches; measure the length of a run
    length = time.perf_counter() - t0
    for i in range(n):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        out = tmp_path / f"run{i}.npz"
        argv = [*command, *(extra if extra and i % 3 == 0 else []), "--out", out.name]
        marks.clear()
        start = time.perf_counter()
        status, sent, ended = _signal_main(argv, sig, rng.uniform(0, 1.1 * length), marks)
        loop = marks["loop"] - start if "loop" in marks else None
        _check(status, sig, sent, ended, loop, out, tmp_path)


def test_train_keeps_what_was_measured_at_random_instants(tmp_path, monkeypatch, quiet_signals):
    _instants(TRAIN, tmp_path, monkeypatch, 13, seed=1, hook=("leashed.runtime._workers", "Run"),
              extra=["--plot", "p.png"])


def test_simulate_saves_its_partial_result_at_random_instants(tmp_path, monkeypatch, quiet_signals):
    _instants(SIMULATE, tmp_path, monkeypatch, 12, seed=2, hook=("leashed.sim.simulate", "_run"))


def test_signal_during_the_save_keeps_the_completed_run(tmp_path, monkeypatch, quiet_signals):
    """The first signal inside write_atomic is only noted: the file is complete, the status is 143."""
    from leashed import results

    monkeypatch.chdir(tmp_path)
    original = results.write_atomic

    def slow(path, fill):
        def filled(fh):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            fill(fh)
        return original(path, filled)

    monkeypatch.setattr(results, "write_atomic", slow)
    status = cli.main([*TRAIN, "--out", "saved.npz"])
    COUNTS["instants"] += 1
    assert status == 143
    result = RunResult.load(tmp_path / "saved.npz")
    assert result.totals["updates_applied"] == 400  # training had finished: nothing lost
    assert not _temporaries(tmp_path)


def test_demo_stops_at_the_interrupted_step(tmp_path, monkeypatch, quiet_signals):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(3)
    for i, sig in enumerate((signal.SIGINT, signal.SIGTERM)):
        out = tmp_path / f"demo{i}"
        status, sent, ended = _signal_main(["demo", "--quick", "--out", str(out)], sig,
                                           rng.uniform(0.2, 6.0), {})
        COUNTS["instants"] += 1
        ok = status == 128 + sig if sent < ended else status in (0, 128 + sig)
        ok &= not _temporaries(tmp_path)
        for path in (out / "runs").glob("*.npz") if out.exists() else ():
            RunResult.load(path)
        if not ok:
            COUNTS["broken"] += 1
        assert ok, (status, sig, sent, ended)


def _process(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "leashed", *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_loop(proc: subprocess.Popen[str], seconds: float) -> None:
    time.sleep(seconds)
    assert proc.poll() is None, proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_real_processes_exit_130_or_143_and_save(tmp_path, sig):
    proc = _process(BIG_SIMULATE, tmp_path)
    _wait_for_loop(proc, 3.0)  # start-up is about 1-2 s: the step loop runs
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    COUNTS["instants"] += 1
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert RunResult.load(tmp_path / "s.npz").totals["interrupted"] is True
    assert not _temporaries(tmp_path)


def test_a_second_signal_aborts_and_leaves_no_temporary(tmp_path):
    proc = _process(BIG_SIMULATE, tmp_path)
    _wait_for_loop(proc, 3.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    COUNTS["instants"] += 2
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not _temporaries(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_bench_stops_at_the_interrupted_step(tmp_path, sig):
    """`leashed bench` stops at the step a signal interrupts, with that step's status, one line, no trace."""
    proc = subprocess.Popen([sys.executable, "-m", "leashed", "bench", "--quick", "--no-torch", "--out",
                             str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    time.sleep(4.0)  # past start-up: inside the first benchmark
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    COUNTS["instants"] += 1
    assert proc.returncode == 128 + sig, (out[-2000:], err[-2000:])
    assert "Traceback" not in err
    assert not _temporaries(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_paper_run_subprocess_gets_the_signal_and_is_not_orphaned(tmp_path, sig):
    """benchmarks/paper_comparison.py runs each configuration as a child (``leashed train``). A signal
    sent to the parent alone (``kill``, a job manager) is passed on to the child, which saves what it
    measured and stops before the parent exits: no orphaned run left writing, no temporary file."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    out, log = tmp_path / "run.npz", tmp_path / "run.log"
    train = ["train", "--model", "counter", "--dataset", "none", "--dim", "100000", "--algorithm", "lock",
             "--threads", "2", "--updates", "1000000", "--evaluations", "0", "--out", str(out)]
    code = (f"import sys\nsys.path.insert(0, {str(bench)!r})\nfrom pathlib import Path\n"
            f"from leashed import interrupts\nimport paper_comparison as pc\n"
            f"with interrupts.handling():\n"
            f"    try:\n        pc.run_subprocess({train!r}, Path({str(log)!r}), 600)\n"
            f"    except KeyboardInterrupt:\n        sys.exit(interrupts.exit_status())\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    time.sleep(4.0)  # the child (no data to load) is training by then
    parent.send_signal(sig)
    _, err = parent.communicate(timeout=120)
    COUNTS["instants"] += 1
    assert parent.returncode == 128 + sig, err
    children = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert not children, f"an orphaned run is still going: {children}"
    assert not _temporaries(tmp_path)
    assert RunResult.load(out).totals["interrupted"] is True  # the child saved what it measured


def test_report_counts():
    print(f"\nsignals: {COUNTS['instants']} instants signalled, promise broken {COUNTS['broken']} times")
    assert COUNTS["broken"] == 0


def test_a_signal_during_a_lazy_import_waits_for_it(tmp_path, monkeypatch, quiet_signals):
    """A package whose import a signal would cut short (a submodule done, the parent not) imports whole
    through protected_import, and the signal is raised after it (matplotlib cut short this way failed
    every later import in the process: "module 'matplotlib' has no attribute '_docstring'")."""
    from leashed import interrupts

    pkg = tmp_path / "slowpkg"
    pkg.mkdir()
    (pkg / "part.py").write_text("VALUE = 1\n")
    (pkg / "__init__.py").write_text("import time\nfrom slowpkg import part\ntime.sleep(0.3)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    with interrupts.handling():
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            interrupts.protected_import("slowpkg")
        timer.join()
        # the import ran to its end before the signal was raised (cut short, it would not be in sys.modules)
        assert sys.modules["slowpkg"].DONE and sys.modules["slowpkg"].part.VALUE == 1
    interrupts.reset()
    for name in ("slowpkg", "slowpkg.part"):
        sys.modules.pop(name, None)


def test_a_signal_inside_the_temporary_windows_leaves_nothing(tmp_path, monkeypatch):
    """The few instructions between creating a temporary and registering it for removal: the write probe
    of check_writable (mkstemp ... unlink) and atomic_directory's mkdtemp. A first signal there is held
    until the temporary is gone or registered, then raised: nothing is left (CI once found one)."""
    import tempfile

    from leashed import _files, interrupts
    from leashed.analysis import _io

    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def mkstemp_then_signal(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode, here
        return made

    def mkdtemp_then_signal(*args, **kwargs):
        made = real_mkdtemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return made

    for patch, call in ((("mkstemp", mkstemp_then_signal), lambda: _files.check_writable(tmp_path / "a.npz")),
                        (("mkdtemp", mkdtemp_then_signal), lambda: _io.atomic_directory(tmp_path / "out")
                         .__enter__())):
        monkeypatch.setattr(tempfile, *patch)
        interrupts.reset()
        with interrupts.handling(), pytest.raises(KeyboardInterrupt):
            call()
        monkeypatch.setattr(tempfile, patch[0], real_mkstemp if patch[0] == "mkstemp" else real_mkdtemp)
        assert not _temporaries(tmp_path), _temporaries(tmp_path)
        COUNTS["instants"] += 1
    interrupts.reset()
