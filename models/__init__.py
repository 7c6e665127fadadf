"""leashed.models: flat-parameter models (softmax, mlp, cnn, counter, quadratic) with nogil kernels."""

from leashed.models.registry import MODEL_NAMES, BoundModel, Model, build_model

__all__ = ["MODEL_NAMES", "BoundModel", "Model", "build_model"]
