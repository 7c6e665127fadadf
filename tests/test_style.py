import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_clean():
    proc = subprocess.run(["ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_pyx_has_a_stub():
    for pyx in ROOT.glob("*/*.pyx"):
        assert pyx.with_suffix(".pyi").exists(), f"{pyx} has no .pyi type stub beside it"
