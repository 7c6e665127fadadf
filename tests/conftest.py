"""Shared fixtures: every test gets its own data cache and never touches the user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # One cache per test session: the MNIST conversion happens at most once per run.
    os.environ.setdefault("LEASHED_CACHE_DIR", str(tmp_path_factory.mktemp("leashed-cache")))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m leashed ARGS`` as a user would, capturing output."""
    return subprocess.run([sys.executable, "-m", "leashed", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str = "") -> None:
    """Bad input: exit 2, exactly one ``leashed: error:`` line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("leashed: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
