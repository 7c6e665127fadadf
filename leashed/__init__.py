"""leashed: asynchronous parallel SGD on shared memory -- simulate, run and analyse.

Subpackages: ``leashed.runtime`` (Cython executor), ``leashed.sim`` (SimPy simulator), ``leashed.models``
(nogil models and data sets), ``leashed.analysis`` (staleness models, step sizes, plots).
"""

from leashed.errors import LeashedError
from leashed.spec import ALGORITHMS, STEP_POLICIES, ExperimentSpec

__version__ = "0.1.0"
__all__ = ["ALGORITHMS", "STEP_POLICIES", "ExperimentSpec", "LeashedError", "__version__"]
