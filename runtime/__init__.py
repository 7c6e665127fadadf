"""leashed.runtime: the real executor (papers.md §2): worker threads without the GIL, real atomic CAS.

``leashed.runtime.run(spec)`` trains an :class:`~leashed.spec.ExperimentSpec` and returns a
:class:`~leashed.results.RunResult`; ``leashed.runtime.reference`` is the pure-Python twin of every
algorithm. The compiled parts are ``_store`` (versioned parameter store) and ``_workers`` (nogil loops).
"""

from leashed.runtime.run import run  # binds the function over the submodule of the same name

__all__ = ["run"]
