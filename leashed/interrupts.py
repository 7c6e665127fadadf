"""The one interrupt path of every leashed command (docs/errors.md, "Signals").

SIGINT (Ctrl-C) and SIGTERM both mean *stop, keep what was measured*:

* the **first** signal is recorded (:func:`signalled`). Outside a protected section it raises
  :class:`KeyboardInterrupt` in the main thread, which the training loops (runtime, simulator) turn into
  a prompt stop with a partial result. Inside a :func:`protected` section (evaluation, assembly,
  plotting, saving: the work after training) it only sets the flag: that code checks
  :func:`requested` where it can skip work (remaining evaluations), finishes the save, and the command
  exits with :func:`exit_status` (130 for SIGINT, 143 for SIGTERM: 128 + the signal number);
* a **second** signal aborts at once: it raises :class:`Aborted` (a :class:`BaseException`, so no
  ``except Exception`` swallows it); the atomic writers (``leashed/_files.py``, ``analysis/_io.py``)
  remove their temporary files on the way out. Further signals are ignored while that happens.

:func:`handling` installs the handlers around one command (``leashed/cli.py``); it is a no-op outside
the main thread, where Python cannot install signal handlers.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["Aborted", "deferred", "exit_status", "handling", "protected", "protected_import", "requested",
           "reset", "signalled"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Aborted(BaseException):
    """A second signal: stop at once (temporary files are still removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)  # args == (signum,): SimPy re-raises events as type(exc)(*exc.args)
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"aborted by a second {signal.Signals(self.signum).name}"


class _State:
    signum: int | None = None
    aborting = False
    depth = 0  # nesting of protected() sections
    installed = 0


_state = _State()


def _handler(signum: int, frame: Any) -> None:
    if _state.aborting:
        return  # already unwinding after a second signal: let the clean-up finish
    if _state.signum is None:
        _state.signum = signum
        if _state.depth > 0:
            return  # after training: noted; the command finishes its save, then exits 130/143
        raise KeyboardInterrupt
    _state.aborting = True
    raise Aborted(signum)


def signalled() -> int | None:
    """The number of the first signal received (SIGINT or SIGTERM), or None."""
    return _state.signum


def requested() -> bool:
    """True once a stop was asked for (skip what can be skipped, keep what was measured)."""
    return _state.signum is not None


def exit_status(default: int = 130) -> int:
    """128 + the first signal's number (130 SIGINT, 143 SIGTERM); ``default`` without a signal."""
    return default if _state.signum is None else 128 + int(_state.signum)


def active() -> bool:
    """Whether a command's handlers are installed (:func:`handling`)."""
    return _state.installed > 0


def reset() -> None:
    """Forget any recorded signal (a new command in the same process; tests)."""
    _state.signum = None
    _state.aborting = False
    _state.depth = 0


@contextlib.contextmanager
def protected() -> Iterator[None]:
    """A section whose first signal is only recorded, not raised (post-training work, saving).

    A signal that arrived before the section is not raised again inside it."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A short section that a first signal must not cut in two (a temporary file created and not yet
    registered for removal): the signal is recorded during it (:func:`protected`) and raised as
    :class:`KeyboardInterrupt` right after it, unless an enclosing protected section keeps it."""
    with protected():
        yield
    if requested() and _state.depth == 0 and not _state.aborting:
        raise KeyboardInterrupt


def protected_import(name: str) -> ModuleType:
    """``importlib.import_module(name)`` with the first signal only recorded (:func:`protected`).

    An import that KeyboardInterrupt cuts short leaves the submodules it had finished in ``sys.modules``
    without their parent; a later import in the same process then fails (matplotlib: "module
    'matplotlib' has no attribute '_docstring'"). The lazily imported plotting modules go through here. A
    signal recorded during the import is raised after it, outside any other protected section."""
    with deferred():
        module = importlib.import_module(name)
    return module


def _quiet_unraisable(previous: Any) -> Any:
    """An unraisable hook that drops the interrupt our handler raised where Python cannot raise (a weakref
    callback, a ``__del__``): no "Exception ignored" traceback; the signal stays recorded, so the command
    stops at its next check of :func:`requested` and exits 130/143."""

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, (KeyboardInterrupt, Aborted)):
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for one command, and restore the previous ones after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.installed == 0:
        reset()
    previous = {}
    hook = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable(hook)
    for sig in SIGNALS:
        try:
            previous[sig] = signal.signal(sig, _handler)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            pass
    _state.installed += 1
    try:
        yield
    finally:
        _state.installed -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)
        sys.unraisablehook = hook
