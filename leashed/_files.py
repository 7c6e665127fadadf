"""Atomic file output shared by every writer of leashed (architecture.md, "Command line": a temporary file
in the same folder, then one rename, so a reader never sees a half-written file and a failed write leaves
nothing behind)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["public_mode", "write_atomic"]


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Give a ``mkstemp``/``mkdtemp`` result (0600/0700) the mode a plain ``open``/``mkdir`` would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_atomic(path: str | os.PathLike[str], fill: Callable[[IO[bytes]], object]) -> Path:
    """Create ``path``'s folder, let ``fill`` write the bytes into a temporary file beside it, give the file
    the mode a plain ``open`` would, and rename it over ``path``; on any error remove the temporary file
    and re-raise. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
