"""leashed.runtime: the real executor (papers.md §2): worker threads without the GIL, real atomic CAS.

``leashed.runtime.run(spec)`` trains an :class:`~leashed.spec.ExperimentSpec` and returns a
:class:`~leashed.results.RunResult`; ``leashed.runtime.reference`` is the pure-Python twin of every
algorithm. The compiled parts are ``_store`` (versioned parameter store) and ``_workers`` (nogil loops).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def run(spec: Any, **kwargs: Any) -> Any:
    """Train ``spec`` for real; see :func:`leashed.runtime.run.run`."""
    from leashed.runtime.run import run as _run

    return _run(spec, **kwargs)
