"""A user's own model: the descriptor (:class:`UserModel`), loading ``FILE.py:NAME``, validation.

The model ABI is documented in docs/models.md (the C declaration is models/user_abi.h). A user model is
one C function ``loss_grad`` of that signature, given as a numba ``@cfunc`` (the optional extra
``leashed-sgd[numba]``), a ctypes function pointer, or a PyCapsule named :data:`USER_CAPSULE_NAME` (C,
Cython), plus a few facts: its parameter count, its workspace, how to initialise it. The engines use it
exactly as they use a built-in model (:mod:`leashed.models._user` wraps it into a ``leashed_model_t``):
the runtime's worker loops call it without the GIL, the simulator's with-gradients mode calls it per
simulated gradient.

A model is named in a spec either ``path/to/file.py:NAME`` (the file is imported once per process, its
attribute ``NAME`` must be a :class:`UserModel`) or ``user:NAME`` once :func:`register` made it known
from the Python API; either form is a valid spec without loading anything, so results files of user
models stay readable where the model is not.

Failures are one ``ModelError`` line, never a crash: a wrong signature or capsule name before anything
runs; a non-zero return code or an exception inside the function (numba reports those to
Python's unraisable hook, which :func:`_unraisable` catches) after the loop that met it; a non-finite
loss or gradient at the initial parameters after a run that diverged.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leashed.errors import LeashedError, SpecError
from leashed.models.registry import DEFAULT_DATASET, TARGET_CLASSES, TARGET_NONE, ModelDescriptor

__all__ = ["USER_CAPSULE_NAME", "USER_SIGNATURE", "ModelError", "UserModel", "build_user_model",
           "function_address", "is_user_model_name", "load_user_model", "register", "registered",
           "resolve", "unregister", "user_descriptor"]

#: the PyCapsule name of a C / Cython user function (models/user_abi.h LEASHED_USER_CAPSULE_NAME)
USER_CAPSULE_NAME = "leashed_user_loss_grad_v1"
#: the signature, as numba spells it (``numba.cfunc(USER_SIGNATURE)``); docs/models.md explains it
USER_SIGNATURE = ("int32(CPointer(float32), int64, CPointer(float32), CPointer(int32), int64, int64, "
                  "CPointer(int64), int64, CPointer(float32), CPointer(float32), CPointer(int32), "
                  "CPointer(float64))")
_P = ctypes.POINTER
#: the same signature as ctypes types (argument types, return type)
_CTYPES_ARGS = (_P(ctypes.c_float), ctypes.c_int64, _P(ctypes.c_float), _P(ctypes.c_int32), ctypes.c_int64,
                ctypes.c_int64, _P(ctypes.c_int64), ctypes.c_int64, _P(ctypes.c_float), _P(ctypes.c_float),
                _P(ctypes.c_int32), _P(ctypes.c_double))
_CTYPES_RESTYPE = ctypes.c_int32
_FILE_NAME = re.compile(r"^(?P<path>.+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")
#: a registered model's spec name: ``user:NAME`` (a results file of it stays readable in any process)
_REGISTERED_NAME = re.compile(r"^user:(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)$")
_TARGETS = (TARGET_CLASSES, TARGET_NONE)


class ModelError(LeashedError):
    """A user model that cannot be loaded or that failed while it ran (docs/models.md, "Errors")."""


@dataclass(frozen=True, eq=False)
class UserModel:
    """The descriptor of a user model (docs/models.md): the function and what the engines need to know.

    ``loss_grad`` is a numba ``@cfunc(USER_SIGNATURE)``, a ctypes function pointer of that signature, or
    a PyCapsule named ``leashed_user_loss_grad_v1``. Its workspace is ``work_fixed + work_per_row * n``
    floats for a batch of n rows. ``init(rng)`` returns the initial parameters (n_params floats) from a
    ``numpy.random.Generator`` seeded with the spec's seed; without it they are zeros. ``n_features`` /
    ``n_classes`` (None: any) are checked against the data set; ``target`` is ``classes`` (y holds int32
    labels, the model writes its predictions, accuracy is measured) or ``none`` (no labels; y is NULL).
    ``reads_rows`` False: the model ignores the batch (the engines pass no schedule). ``errors`` maps
    the model's non-zero return codes to messages; ``layout`` names its parameter blocks (name, shape).
    """

    name: str
    loss_grad: Any
    n_params: int
    init: Callable[[np.random.Generator], Any] | None = None
    work_per_row: int = 0
    work_fixed: int = 0
    n_features: int | None = None
    n_classes: int | None = None
    target: str = TARGET_CLASSES
    dataset: str = DEFAULT_DATASET
    reads_rows: bool = True
    layout: Sequence[tuple[str, tuple[int, ...]]] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    summary: str = "a user model (docs/models.md)"

    def __post_init__(self) -> None:
        what = f"user model {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ModelError("a user model needs a non-empty name")
        for attr in ("n_params", "work_per_row", "work_fixed"):
            value = getattr(self, attr)
            least = int(attr == "n_params")
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
                raise ModelError(f"{what}: {attr} must be an integer >= {least}, got {value!r}")
        if self.target not in _TARGETS:
            raise ModelError(f"{what}: target must be one of {', '.join(_TARGETS)}, got {self.target!r}")
        if self.target == TARGET_CLASSES and not self.reads_rows:
            raise ModelError(f"{what}: a model that predicts classes reads its batch's rows: set "
                             f"reads_rows=True, or target='none'")
        if self.init is not None and not callable(self.init):
            raise ModelError(f"{what}: init must be a function rng -> parameters, got "
                             f"{type(self.init).__name__}")
        if self.layout:
            total = sum(int(np.prod(shape)) for _, shape in self.layout)
            if total != self.n_params:
                raise ModelError(f"{what}: its layout holds {total} parameters, n_params is {self.n_params}")
        function_address(self.loss_grad, what)  # the signature, before anything runs

    def source_files(self) -> set[str]:
        """The files of its Python function (numba), for telling its exceptions from others'."""
        fn = getattr(self.loss_grad, "__wrapped__", None) or getattr(self.loss_grad, "_pyfunc", None)
        code = getattr(fn, "__code__", None)
        return {os.path.abspath(code.co_filename)} if code is not None else set()


# ------------------------------------------------------------------------------------------ function pointers
def function_address(fn: Any, what: str = "the user model") -> tuple[int, Any]:
    """(address, object keeping it alive) of a user ABI function; ModelError for a wrong signature, a
    wrong capsule name, or an object that is none of a numba cfunc, a ctypes pointer, a PyCapsule."""
    if type(fn).__name__ == "PyCapsule":
        from leashed.models import _user

        try:
            return int(_user.capsule_address(fn)), fn
        except SpecError as exc:
            raise ModelError(f"{what}: {exc}") from None
    if hasattr(fn, "ctypes") and hasattr(fn, "address") and type(fn).__module__.startswith("numba"):
        proto = fn.ctypes  # a numba cfunc: its ctypes view states the compiled signature
        _check_ctypes(tuple(proto.argtypes), proto.restype, what, getattr(fn, "_sig", None))
        return int(fn.address), fn
    if isinstance(fn, ctypes._CFuncPtr):  # type: ignore[attr-defined]
        _check_ctypes(tuple(fn.argtypes or ()), fn.restype, what, None)
        return int(ctypes.cast(fn, ctypes.c_void_p).value or 0), fn
    raise ModelError(f"{what}: loss_grad must be a numba @cfunc, a ctypes function pointer or a PyCapsule "
                     f"named {USER_CAPSULE_NAME!r}, got {type(fn).__name__} (docs/models.md)")


def _check_ctypes(args: tuple, restype: Any, what: str, shown: Any) -> None:
    if args == _CTYPES_ARGS and restype is _CTYPES_RESTYPE:
        return
    names = ", ".join(getattr(a, "__name__", str(a)) for a in args)
    got = str(shown) if shown is not None else f"({names}) -> {getattr(restype, '__name__', restype)}"
    raise ModelError(f"{what}: loss_grad has the signature {got}, leashed calls {USER_SIGNATURE} "
                     f"(docs/models.md: @cfunc(leashed.models.user.USER_SIGNATURE))")


# ------------------------------------------------------------------------------------------ names
_REGISTERED: dict[str, UserModel] = {}
_LOADED: dict[tuple[str, str], tuple[float, UserModel]] = {}
_LOCK = threading.Lock()


def register(model: UserModel) -> str:
    """Make ``model`` known to the specs of this process; returns its spec name ``user:NAME``
    (``ExperimentSpec(model=register(model))``). Names must be identifiers (letters, digits, ``_.-``)."""
    if not isinstance(model, UserModel):
        raise ModelError(f"register() takes a leashed.models.user.UserModel, got {type(model).__name__}")
    spec_name = f"user:{model.name}"
    if not _REGISTERED_NAME.match(spec_name):
        raise ModelError(f"cannot register a user model named {model.name!r}: use letters, digits, '_', '.' "
                         f"and '-', starting with a letter or '_'")
    _install_hook()
    with _LOCK:
        _REGISTERED[spec_name] = model
        _SOURCES.update(model.source_files())
    return spec_name


def unregister(name: str) -> None:
    """Forget a registered user model, by its spec name ``user:NAME`` (no error if it is not there)."""
    with _LOCK:
        _REGISTERED.pop(name, None)


def registered() -> tuple[str, ...]:
    """Spec names (``user:NAME``) of the registered user models."""
    return tuple(_REGISTERED)


def is_user_model_name(name: object) -> bool:
    """Whether ``name`` has a user model's form, ``FILE.py:NAME`` or ``user:NAME`` (nothing is loaded:
    a spec naming one stays valid where the file or the registration is missing)."""
    return isinstance(name, str) and (_FILE_NAME.match(name) is not None
                                      or _REGISTERED_NAME.match(name) is not None)


def load_user_model(path: str, attr: str) -> UserModel:
    """Import ``path`` (once per process and modification time) and return its attribute ``attr``, a
    UserModel; ModelError for a missing file, an import that fails, or a missing / wrong attribute."""
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ModelError(f"user model file {path!r} not found (give --model path/to/file.py:NAME)")
    mtime = os.path.getmtime(full)
    with _LOCK:
        hit = _LOADED.get((full, attr))
    if hit is not None and hit[0] == mtime:
        return hit[1]
    # a stable module name per file: numba's on-disk cache (cache=True) refers to the module by name
    module_name = "leashed_user_model_" + hashlib.sha1(os.path.realpath(full).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(module_name, full)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import user model file {path!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _install_hook()
    try:
        spec.loader.exec_module(module)
    except LeashedError as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(f"user model file {path!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: one line, not a traceback
        sys.modules.pop(module_name, None)
        hint = ""
        if isinstance(exc, ImportError) and getattr(exc, "name", "") in ("numba", "llvmlite"):
            hint = ": install the extra with pip install 'leashed-sgd[numba]'"
        elif isinstance(exc, ModuleNotFoundError):  # numba's cache=True names the module that compiled it
            hint = (": if the file's numba cache was written by another import of it, delete its "
                    "__pycache__ folder")
        raise ModelError(f"cannot import user model file {path!r}: {type(exc).__name__}: {exc}{hint}") \
            from None
    model = getattr(module, attr, None)
    if not isinstance(model, UserModel):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, UserModel))
        have = f"it defines {', '.join(found)}" if found else "it defines no UserModel"
        got = "missing" if model is None else f"a {type(model).__name__}"
        raise ModelError(f"{path}:{attr} is {got}, not a leashed.models.user.UserModel ({have})")
    with _LOCK:
        _LOADED[(full, attr)] = (mtime, model)
        _SOURCES.update(model.source_files())
    return model


def resolve(name: str) -> UserModel:
    """The UserModel a spec's model name stands for (``user:NAME``: registered in this process;
    ``FILE.py:NAME``: loaded from the file)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if isinstance(name, str) and _REGISTERED_NAME.match(name):
        raise ModelError(f"user model {name!r} is not registered in this process: call "
                         f"leashed.models.user.register(model) first")
    match = _FILE_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise SpecError(f"unknown model {name!r}: not a built-in model, user:NAME or FILE.py:NAME")
    return load_user_model(match["path"], match["attr"])


def user_descriptor(name: str) -> ModelDescriptor:
    """The :class:`~leashed.models.registry.ModelDescriptor` of a user model (what the engines ask)."""
    model = resolve(name)
    return ModelDescriptor(name, model.summary, model.target, default_dataset=model.dataset,
                           reads_rows=model.reads_rows)


def build_user_model(name: str, n_features: int, n_classes: int) -> Any:
    """The :class:`~leashed.models._user.UserKernelModel` of user model ``name`` for data of this shape;
    SpecError when the data does not fit the descriptor's n_features / n_classes."""
    from leashed.models._user import UserKernelModel

    model = resolve(name)
    if model.n_features is not None and int(n_features) != model.n_features:
        raise SpecError(f"user model {name!r} takes {model.n_features} features but the data has "
                        f"{n_features}: choose a matching --dataset")
    classes = model.target == TARGET_CLASSES
    if classes and model.n_classes is not None and int(n_classes) != model.n_classes:
        raise SpecError(f"user model {name!r} predicts {model.n_classes} classes but the data has "
                        f"{n_classes}: choose a matching --dataset")
    if classes and int(n_classes) < 2:
        raise SpecError(f"user model {name!r} predicts classes but the data set has none: choose a data set "
                        f"with labels, or target='none'")
    address, owner = function_address(model.loss_grad, f"user model {name!r}")
    _install_hook()  # again: a test harness may have swapped the hook since the model was loaded
    layout = [(str(k), tuple(int(v) for v in s)) for k, s in model.layout] or [("theta", (model.n_params,))]
    return UserKernelModel(name, address, owner, int(model.n_params), int(n_features),
                           int(n_classes) if classes else 0, classes, int(model.work_fixed),
                           int(model.work_per_row), layout, model.init, _failure_reporter(name, model), model)


# ------------------------------------------------------------------------------------------ failures
_SOURCES: set[str] = set()
_RAISED: list[str] = []  # the last exception of a user model, as one line
_PREVIOUS_HOOK: Any = None


def _failure_reporter(name: str, model: UserModel) -> Callable[[int, int, str], None]:
    def report(status: int, raised: int, where: str) -> None:
        who = f"user model {name!r}"
        if where == "nonfinite-loss":
            raise ModelError(f"{who} returned a non-finite loss at the initial parameters: check its loss "
                             f"(e.g. a log of 0) and its init (docs/models.md, Errors)")
        if where == "nonfinite-grad":
            raise ModelError(f"{who} returned a non-finite gradient at the initial parameters: check its "
                             f"gradient and its init (docs/models.md, Errors)")
        if status != 0:
            msg = model.errors.get(status, "the model's errors give no message for this code")
            raise ModelError(f"{who} returned error code {status} during {where}: {msg}")
        last = _RAISED[-1] if _RAISED else "an exception"
        raise ModelError(f"{who} raised {last} during {where} ({raised} call(s) failed); the run was stopped")
    return report


def _unraisable(info: Any) -> None:
    """sys.unraisablehook: an exception inside a numba cfunc of a user model (numba reports it here,
    in the failing thread, and returns 0) is counted for the trampoline and kept as one line; any other
    unraisable exception goes to the previous hook."""
    tb = info.exc_traceback
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    files = {os.path.abspath(f.tb_frame.f_code.co_filename) for f in frames}
    if "numba" not in repr(info.object) and not (files & _SOURCES):
        (_PREVIOUS_HOOK or sys.__unraisablehook__)(info)
        return
    from leashed.models import _user

    _user.note_raised()
    where = f" at {os.path.basename(frames[-1].tb_frame.f_code.co_filename)}:{frames[-1].tb_lineno}" \
        if frames else ""
    _RAISED[:] = [f"{getattr(info.exc_type, '__name__', 'an exception')}: {info.exc_value}{where}"]


def _install_hook() -> None:
    global _PREVIOUS_HOOK
    if sys.unraisablehook is not _unraisable:
        _PREVIOUS_HOOK = sys.unraisablehook
        sys.unraisablehook = _unraisable
