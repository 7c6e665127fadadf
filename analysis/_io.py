"""Atomic output for the analysis commands (architecture.md, "Command line": temporary file, then rename).

* :func:`write_text_atomic` -- one file: written to a temporary file in the same folder, then renamed.
* :func:`atomic_directory` -- an output folder (report, comparison): built in a temporary sibling folder,
  then renamed into place, so a reader never sees a half-written folder. An existing folder is replaced
  only if it is empty or was written by leashed (it holds the marker file ``.leashed-output``);
  anything else is refused with a one-line error rather than deleted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leashed import interrupts
from leashed._files import OutputError, check_writable, make_parents, public_mode, remove_empty, write_atomic
from leashed.errors import LeashedError

MARKER = ".leashed-output"


def leashed_version() -> str:
    """The installed leashed version (also when the package is imported as a bare namespace)."""
    try:
        from leashed import __version__

        return str(__version__)
    except ImportError:
        try:
            from importlib.metadata import version

            return version("leashed-sgd")
        except Exception:  # noqa: BLE001 - unknown is fine in a report
            return "unknown"


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """A figure's path; its suffix picks the format (``.png`` or ``.svg``)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise LeashedError(f"plot file {path} must end in .png or .svg")
    return check_writable(path, "--plot")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file in the same folder and an atomic rename."""
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def json_safe(value: Any) -> Any:
    """Replace NaN/inf by None (strict JSON has neither) and numpy scalars by Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Strict JSON (no NaN), indented, written atomically."""
    return write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def check_output_dir(out: str | os.PathLike[str]) -> Path:
    """Refuse an output folder that exists and was not written by leashed (checked before any work)."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise LeashedError(f"output {out} exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise LeashedError(f"output folder {out} exists and was not written by leashed; "
                               f"choose another --out or empty it")
    check_writable(out, "--out", directory=True)  # its parent must take the temporary folder
    return out


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out`` in one rename (see module docstring)."""
    out = check_output_dir(out)
    created = make_parents(out.parent)
    tmp: Path | None = None
    try:
        with interrupts.deferred():  # a signal just after mkdtemp would leave the folder unregistered
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        remove_empty(created)
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise
    try:
        yield tmp
        with interrupts.protected():  # the swap: the marker, the rename, the previous output's removal
            (tmp / MARKER).write_text("written by leashed; this folder is replaced as a whole on rewrite\n")
            public_mode(tmp, directory=True)
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, old / "previous")
            try:
                os.replace(tmp, out)
            except OSError:
                if old is not None:  # put the previous output back
                    os.replace(old / "previous", out)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:  # a second SIGINT/SIGTERM included: no temporary folder left behind
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
        raise
