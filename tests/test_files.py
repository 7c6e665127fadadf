"""leashed._files.write_atomic: the one atomic writer behind results files, JSON/text, figures, benchmarks."""

import os
import stat

import pytest

from leashed._files import write_atomic


def test_write_atomic_writes_with_the_mode_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_atomic(tmp_path / "sub" / "a.bin", lambda fh: fh.write(b"abc"))
    finally:
        os.umask(old)
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~umask, not mkstemp's 0o600
    assert [p.name for p in path.parent.iterdir()] == ["a.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
