"""leashed: asynchronous parallel SGD on shared memory -- simulate, run and analyse.

Subpackages: ``leashed.runtime`` (Cython executor), ``leashed.sim`` (SimPy simulator), ``leashed.models``
(nogil models and data sets), ``leashed.analysis`` (staleness models, step sizes, plots),
``leashed.benchmarks`` (the scripts ``leashed bench`` runs). The Python API, with a walkthrough from an
:class:`ExperimentSpec` to a report, is docs/api.md (``leashed docs api``); the design is
docs/architecture.md.
"""

from leashed.errors import LeashedError
from leashed.spec import ALGORITHMS, STEP_POLICIES, ExperimentSpec

#: the release, also ``leashed --version``; equal to pyproject.toml's version (tests/test_wheel.py)
__version__ = "0.1.0"
__all__ = ["ALGORITHMS", "STEP_POLICIES", "ExperimentSpec", "LeashedError", "__version__"]
