"""Atomic file output shared by every writer of leashed (architecture.md, "Command line": a temporary file
in the same folder, then one rename, so a reader never sees a half-written file and a failed write leaves
nothing behind: neither the temporary file nor a folder the write created; docs/errors.md).

* :func:`write_atomic` -- the one writer; an OS failure becomes one :class:`OutputError` line naming the
  path and the OS reason. The write runs in an :func:`leashed.interrupts.protected` section: a first
  Ctrl-C/SIGTERM lets it finish, a second aborts it and the temporary file is still removed.
* :func:`check_writable` -- checked before any work (training, simulating, fitting): would a file (or a
  folder) at this path be creatable? Nothing is left behind by the check.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from leashed import interrupts
from leashed.errors import LeashedError

__all__ = ["OutputError", "check_writable", "make_parents", "public_mode", "remove_empty", "write_atomic"]


class OutputError(LeashedError):
    """An output that cannot be written (permission, read-only or full disk, a file in the path)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or (errno.errorcode.get(exc.errno or 0) if exc.errno else None) or str(exc)


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


def _existing_ancestor(path: Path) -> Path:
    here = path.parent
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def check_writable(path: str | os.PathLike[str], what: str = "--out", *, directory: bool = False) -> Path:
    """Refuse, with one :class:`OutputError` line, an output path that cannot be written: an existing
    folder where a file is wanted (or a file where a folder is), a regular file among its parents, a
    parent folder without write permission, a read-only file system. A probe file is created in the
    nearest existing parent and removed at once; folders are not created. Returns ``path``."""
    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise OutputError(f"{what} {path} exists and is not a folder; choose another {what}")
        if not directory and path.is_dir():
            raise OutputError(f"{what} {path} is a folder; give a file name like {path / 'out'}")
    parent = _existing_ancestor(path)
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: {parent} is not a folder; choose another {what}")
    with interrupts.deferred():  # a signal between the probe's creation and its removal waits for both
        try:
            fd, probe = tempfile.mkstemp(prefix=".leashed-probe.", suffix=".tmp", dir=parent)
        except OSError as exc:
            raise OutputError(f"cannot write {what} {path}: {_reason(exc)} ({parent}); choose another "
                              f"{what}") from None
        os.close(fd)
        os.unlink(probe)
    return path


def make_parents(folder: Path) -> list[Path]:
    """mkdir -p that returns the folders it created (outermost first), to remove them on failure."""
    missing = []
    here = folder
    while not here.exists():
        missing.append(here)
        if here == here.parent:
            break
        here = here.parent
    missing.reverse()
    for one in missing:
        one.mkdir(exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    for one in reversed(folders):
        try:
            one.rmdir()
        except OSError:
            pass


def write_atomic(path: str | os.PathLike[str], fill: Callable[[IO[bytes]], object]) -> Path:
    """Create ``path``'s folder, let ``fill`` write the bytes into a temporary file beside it, give the file
    the mode a plain ``open`` would, and rename it over ``path``; on any error remove the temporary file
    and the folders created for it and re-raise (an OS error as one :class:`OutputError` line).
    Returns ``path``."""
    path = Path(path)
    with interrupts.protected():
        created: list[Path] = []
        tmp: str | None = None
        try:
            created = make_parents(path.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
            public_mode(tmp)
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            remove_empty(created)
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
            raise
    return path
