"""leashed.models: flat-parameter models (softmax, mlp, cnn, counter, quadratic) with nogil kernels.

The descriptors (:mod:`leashed.models.registry`) import without the compiled kernels; ``Model`` and
``BoundModel`` load them on first use.
"""

from typing import Any

from leashed.models.registry import MODEL_NAMES, build_model, model_descriptor

__all__ = ["MODEL_NAMES", "BoundModel", "Model", "build_model", "model_descriptor"]


def __getattr__(name: str) -> Any:
    if name in ("Model", "BoundModel"):
        from leashed.models import _kernels

        return getattr(_kernels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
