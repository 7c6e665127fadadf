"""Model registry: ``build_model(name, ...)`` validates a model description and returns a
:class:`~leashed.models._kernels.Model` (a layout over one flat float32 parameter vector).

Models (``MODEL_NAMES``); all classification models use the mean softmax cross-entropy over the batch:

- ``softmax``: softmax regression D -> C; blocks ``fc1.W`` (D, C), ``fc1.b`` (C,).
- ``mlp``: dense layers D -> hidden... -> C with ReLU; per layer ``fc{k}.W`` (fan_in, fan_out), ``fc{k}.b``.
  Default hidden (128,) gives 784-128-10 = 101,770 parameters on MNIST.
- ``cnn``: the Leashed-SGD authors' small CNN: conv3x3 cin->4 + ReLU, maxpool 2, conv3x3 4->8 + ReLU,
  maxpool 2 (floor), then the dense stack flat -> hidden... -> C (default hidden (128,)). Input rows are
  (C, H, W) images, ``input_shape`` default (1, 28, 28) for 784 features (27,354 parameters), (3, 32, 32)
  for 3072 features. Conv weights are HWIO (3, 3, in, out); pooled features are flattened (h, w, c).
- ``counter``: test model with ``dim`` parameters (default n_features; pass ``dim`` when the data has no
  features): loss = -sum(theta)/dim; the gradient it writes is exactly -1 in every coordinate (dim times
  the true gradient of that loss, so N updates with lr 1 make every parameter N and the loss -N); data
  ignored.
- ``quadratic``: least squares without bias, w of dim n_features: loss = 0.5 * mean_i (x_i . w - y_i)^2
  with float32 targets y.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leashed.errors import SpecError

if TYPE_CHECKING:
    from leashed.models._kernels import BoundModel, Model

__all__ = ["DATALESS_MODELS", "DEFAULT_DATASET", "MODELS", "MODEL_NAMES", "TARGET_CLASSES", "TARGET_NONE",
           "TARGET_REGRESSION", "BoundModel", "Model", "ModelDescriptor", "build_model", "model_descriptor"]

#: what a model's targets y are: class labels (int32, accuracy is measured), float32 values, or none
TARGET_CLASSES = "classes"
TARGET_REGRESSION = "regression"
TARGET_NONE = "none"
#: the data set of ExperimentSpec's default; a model with another ``default_dataset`` uses its own then
DEFAULT_DATASET = "mnist"


@dataclass(frozen=True)
class ModelDescriptor:
    """What the engines need to know about one model besides its kernel (the module docstring has the
    layouts): every engine asks the descriptor instead of testing the model's name."""

    name: str
    #: one line for help texts
    summary: str
    #: TARGET_CLASSES, TARGET_REGRESSION or TARGET_NONE
    target: str
    #: the data set it trains on when the spec keeps the default (``mnist``)
    default_dataset: str = DEFAULT_DATASET
    #: its gradient depends on the batch's rows (False: the engines pass no batch schedule, no targets)
    reads_rows: bool = True
    #: ``hidden`` sets its dense layers
    uses_hidden: bool = False
    #: it takes image rows (C, H, W): ``input_shape`` from the data set
    uses_input_shape: bool = False
    #: its parameter count is the spec's ``dim`` (not derived from the data)
    params_from_dim: bool = False
    #: its gradient is -1 in every coordinate, so with lr 1 and constant steps every applied update adds
    #: exactly 1 everywhere and lost updates are counted (the "+1 counter" of papers.md §6.2, T9)
    counts_updates: bool = False

    def layout(self, n_features: int, n_classes: int, hidden: Sequence[int] = (128,),
               input_shape: Sequence[int] | None = None, dim: int | None = None) -> list[tuple[str, tuple]]:
        """The named blocks (name, shape) of its flat parameter vector for data of this shape."""
        return build_model(self.name, n_features, n_classes, hidden, input_shape, dim).layout()

    def parameter_count(self, n_features: int, n_classes: int, hidden: Sequence[int] = (128,),
                        input_shape: Sequence[int] | None = None, dim: int | None = None) -> int:
        """d, the length of its parameter vector for data of this shape."""
        return int(build_model(self.name, n_features, n_classes, hidden, input_shape, dim).n_params)


MODELS: tuple[ModelDescriptor, ...] = (
    ModelDescriptor("softmax", "softmax regression", TARGET_CLASSES),
    ModelDescriptor("mlp", "dense ReLU layers (default 784-128-10)", TARGET_CLASSES, uses_hidden=True),
    ModelDescriptor("cnn", "the authors' small CNN, then dense layers", TARGET_CLASSES, uses_hidden=True,
                    uses_input_shape=True),
    ModelDescriptor("counter", "test model: gradient -1 everywhere (counts updates)", TARGET_NONE,
                    default_dataset="none", reads_rows=False, params_from_dim=True, counts_updates=True),
    ModelDescriptor("quadratic", "least squares without bias", TARGET_REGRESSION,
                    default_dataset="synthetic"),
)
_BY_NAME = {d.name: d for d in MODELS}
#: the one list of built-in model names (``leashed.spec.MODELS`` is this tuple)
MODEL_NAMES: tuple[str, ...] = tuple(d.name for d in MODELS)
#: models without a data set of their own: the data set they use when the spec keeps the default
DATALESS_MODELS: dict[str, str] = {d.name: d.default_dataset for d in MODELS
                                   if d.default_dataset != DEFAULT_DATASET}


def model_descriptor(name: str) -> ModelDescriptor:
    """The descriptor of model ``name`` (a built-in one, or a user model: ``FILE.py:NAME`` or
    ``user:NAME``, docs/models.md); SpecError naming the known models for an unknown one."""
    try:
        return _BY_NAME[name]
    except KeyError:
        pass
    from leashed.models import user

    if user.is_user_model_name(name):
        return user.user_descriptor(name)
    raise SpecError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}, or a user model "
                    f"FILE.py:NAME or user:NAME (docs/models.md)")


def __getattr__(name: str) -> Any:
    # The compiled kernels (and SciPy's BLAS) load on first use, so that leashed.spec can read the model
    # names without them.
    if name in ("Model", "BoundModel", "MAX_DENSE_LAYERS"):
        from leashed.models import _kernels

        return getattr(_kernels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _as_int(value: object, what: str) -> int:
    try:
        out = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be an integer, got {value!r}") from None
    if out != value:
        raise SpecError(f"{what} must be an integer, got {value!r}")
    return out


def build_model(
    name: str,
    n_features: int,
    n_classes: int,
    hidden: Sequence[int] = (128,),
    input_shape: Sequence[int] | None = None,
    dim: int | None = None,
) -> Model:
    """Validate and build a model; bad input raises ``SpecError`` with a one-line fix.

    ``hidden`` is used by ``mlp`` and by the dense part of ``cnn`` (``softmax`` ignores it);
    ``input_shape`` (C, H, W) only by ``cnn``; ``dim`` only by ``counter``.
    """
    from leashed.models._kernels import MAX_DENSE_LAYERS, Model

    desc = model_descriptor(name)
    if name not in _BY_NAME:  # a user model (leashed/models/user.py): its own descriptor's sizes
        from leashed.models.user import build_user_model

        return build_user_model(name, _as_int(n_features, "n_features"), _as_int(n_classes, "n_classes"))
    n_features = _as_int(n_features, "n_features")
    n_classes = _as_int(n_classes, "n_classes")
    if n_features < 0:
        raise SpecError(f"n_features must be >= 0, got {n_features}")
    if desc.params_from_dim:
        d = n_features if dim is None else _as_int(dim, "dim")
        if d < 1:
            raise SpecError("the counter model needs dim >= 1: pass dim=... (or data with features)")
        return Model(name, n_features, n_classes, (), None, d)
    if dim is not None:
        raise SpecError(f"dim is only for the counter model, not {name!r}: drop it")
    if n_features < 1:
        raise SpecError(f"model {name!r} needs data with at least one feature, got n_features={n_features}")
    if desc.target == TARGET_REGRESSION:
        return Model(name, n_features, n_classes, (), None, 0)
    if n_classes < 2:
        raise SpecError(f"model {name!r} needs n_classes >= 2, got {n_classes}")
    hid: tuple[int, ...] = ()
    if desc.uses_hidden:
        if isinstance(hidden, int | str):
            hidden = (hidden,)  # type: ignore[assignment]
        hid = tuple(_as_int(h, "hidden width") for h in hidden)
        if any(h < 1 for h in hid):
            raise SpecError(f"hidden widths must be >= 1, got {hid}: e.g. hidden=(128,)")
        if name == "mlp" and not hid:
            raise SpecError("an mlp needs at least one hidden layer: e.g. hidden=(128,), or use softmax")
        if len(hid) + 1 > MAX_DENSE_LAYERS:
            raise SpecError(f"at most {MAX_DENSE_LAYERS - 1} hidden layers, got {len(hid)}")
    if not desc.uses_input_shape:
        if input_shape is not None and _prod(input_shape) != n_features:
            raise SpecError(f"input_shape {tuple(input_shape)} does not match n_features={n_features}")
        return Model(name, n_features, n_classes, hid, None, 0)
    if input_shape is None:
        if n_features == 784:
            input_shape = (1, 28, 28)
        elif n_features == 3072:
            input_shape = (3, 32, 32)
        else:
            raise SpecError(f"the cnn needs image input (1x28x28 = 784 or 3x32x32 = 3072 features), got "
                            f"n_features={n_features}: use mnist-like data or pass input_shape=(C, H, W)")
    shape = tuple(_as_int(v, "input_shape entry") for v in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] < 1:
        raise SpecError(f"the cnn needs input_shape (C, H, W), got {tuple(input_shape)}")
    if _prod(shape) != n_features:
        raise SpecError(f"the cnn input_shape {shape} has {_prod(shape)} values but the data has "
                        f"n_features={n_features}: pass a matching input_shape")
    if min(shape[1], shape[2]) < 10:
        raise SpecError(f"the cnn needs images of at least 10x10 (two conv3x3 + pool2 stages), got {shape}")
    return Model(name, n_features, n_classes, hid, shape, 0)


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
