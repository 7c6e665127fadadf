"""The README's tour, run as written: every command after the two set-up commands, in order, in one folder."""

import os
import re
import shlex
import shutil
import subprocess
import sys

from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8, "README lost its examples"
    setup, tour = blocks[:2], blocks[2:]
    assert [b.strip() for b in setup] == ["bash .ci/install && leashed demo",
                                          "bash .ci/install && python3 -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup[1].strip() in ci, ".ci/run must run the README's test command verbatim"
    return [line.strip() for block in tour for line in block.splitlines() if line.strip()]


def test_readme_tour_runs_as_written(tmp_path):
    commands = readme_commands()
    assert any(c.startswith("leashed train") for c in commands)
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    ran = 0
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "mpiexec":
            if mpiexec is None:
                continue
            argv = [mpiexec, *argv[1:3], sys.executable, "-m", "leashed", *argv[4:]]
        else:
            assert argv[0] == "leashed", command
            argv = [sys.executable, "-m", "leashed", *argv[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ran += 1
    assert ran >= len(commands) - 1
    for name in ("seq.npz", "seq.png", "leashed-m2.npz", "sim-m16.npz", "fit.json", "fit.png",
                 "normalised.npz", "sparse.npz", "report/index.html"):
        assert (tmp_path / name).exists(), name
