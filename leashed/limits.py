"""Bounds before allocation, and numeric options checked before any work (docs/errors.md, "Limits").

Every size a user gives (``--updates``, ``--samples``, ``--hidden``, ``--dim``, ``--threads``, ...) is held
against a stated limit (:data:`LIMITS`) and, where it sizes an allocation, against the memory available
now (``MemAvailable`` of ``/proc/meminfo``): a request that cannot fit is refused at once with one line
that names the largest allowed value, instead of growing until the kernel kills the process. Every
numeric option refuses NaN, inf and out-of-range values (:func:`check_args`, called by the command line
right after parsing), and timing strings (``gamma:mean=2ms,cv=0.2``) are checked number by number
(:func:`check_timing`).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from leashed.errors import SpecError

__all__ = ["DEFAULT_DIVERGENCE_FACTOR", "LIMITS", "NO_LOSS_LIMIT", "available_memory", "check_args",
           "check_empirical_npy", "check_memory", "check_sizes", "check_timing", "loss_limit"]

#: option -> (smallest, largest) allowed value; the largest is a stated, documented limit (docs/errors.md)
LIMITS: dict[str, tuple[float, float]] = {
    "threads": (1, 65_536),
    "updates": (1, 10**10),
    "samples": (1, 10**7),
    "hidden": (1, 65_536),
    "dim": (1, 2**31 - 1),
    "epochs": (1, 10**6),
    "batch_size": (1, 2**31 - 1),
    "evaluations": (0, 100_000),
    "seed": (0, 2**63 - 1),
    "lr": (0, math.inf),  # finite; a huge step diverges (docs/errors.md "Divergence")
    "copy_fraction": (0, 1),
    "bus_contention": (0, 1e6),
    "sparse_update_factor": (0, 1),
    "divergence_factor": (1, math.inf),
    "persistence": (0, 2**31 - 1),
}
#: options whose value must be strictly above the lower limit
_OPEN_BELOW = {"lr", "divergence_factor"}
#: float options that may be inf
_MAY_BE_INF = {"divergence_factor"}
#: bytes per gradient of the engines' per-update records and the arrays built from them (measured: the
#: runtime keeps 57 B of records and two reordered copies; the simulator 88 B of records, the update log
#: and the casts from it)
BYTES_PER_UPDATE = {"train": 200, "simulate": 320}
#: bytes per periodic sample (five float64/int columns, a sorted copy and the grid)
BYTES_PER_SAMPLE = 120
#: longest time in a timing string, seconds; largest coefficient of variation
MAX_TIME_S = 1e6
MAX_CV = 1e3
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)
_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated now without swapping (``MemAvailable``), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


#: the words the spec's own messages use for an option (leashed/spec.py)
_WORDS = {"lr": "learning rate", "batch_size": "batch size", "copy_fraction": "copy fraction",
          "bus_contention": "bus contention", "sparse_update_factor": "sparse update factor",
          "divergence_factor": "divergence factor", "hidden": "hidden layer width"}


def _check_number(name: str, value: Any) -> None:
    lo, hi = LIMITS[name]
    if isinstance(value, bool):
        return
    words = f"{_flag(name)}: {_WORDS.get(name, name.replace('_', ' '))}"
    if isinstance(value, float):
        if math.isnan(value) or (math.isinf(value) and name not in _MAY_BE_INF):
            raise SpecError(f"{words} must be a finite number, not {value}")
    if not (value > lo if name in _OPEN_BELOW else value >= lo):
        if isinstance(value, int) and lo == 1:
            kind = "a positive integer"
        elif name in _OPEN_BELOW:
            kind = f"a positive finite number{'' if lo == 0 else f' above {lo:g}'}"
        else:
            kind = f"at least {lo:g}"
        raise SpecError(f"{words} must be {kind}, not {value!r}")
    if value > hi:
        span = f"({lo:g}, {hi:g}]" if name in _OPEN_BELOW else f"[{lo:g}, {hi:g}]"
        raise SpecError(f"{words} must be in {span}, not {value!r}: the largest allowed value is {hi:g}")


def _persistence(value: Any) -> None:
    text = str(value).strip().lower()
    if text in ("inf", "infinity", "+inf"):
        return
    try:
        number = float(text)
    except ValueError:
        raise SpecError(f"--persistence must be a non-negative integer or inf, not {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise SpecError(f"--persistence must be a non-negative integer or inf, not {value!r}")
    _check_number("persistence", int(number))


def _hidden(value: Any) -> list[int]:
    widths = []
    for part in str(value).split(","):
        if not part.strip():
            continue
        try:
            widths.append(int(part))
        except ValueError:
            raise SpecError(f"--hidden must be comma-separated integers like 128 or 128,64, not "
                            f"{value!r}") from None
    for w in widths:
        _check_number("hidden", w)
    return widths


def check_timing(text: str | None, option: str) -> None:
    """Every number of a timing string is finite and in range (times <= 1e6 s, cv <= 1000); an
    ``empirical:FILE.npy`` file is checked with :func:`check_empirical_npy`."""
    if not text:
        return
    kind, _, rest = str(text).partition(":")
    if kind.strip() == "empirical":
        path = Path(rest.strip()).expanduser()
        if path.suffix == ".npy" and path.exists():
            check_empirical_npy(path, option)
        elif path.suffix != ".npz" and path.is_file() and not path.read_bytes()[:4096].strip():
            raise SpecError(f"{option}: empirical times file {path} is empty; give seconds, one per line")
        return
    for part in re.split(r"[,:]", rest):
        key, eq, val = part.rpartition("=")
        key = key.strip() if eq else ""
        val = val.strip()
        match = re.fullmatch(r"(.*?)(ms|us|µs|ns|s)?", val)
        number_text, unit = (match.group(1), match.group(2)) if match else (val, None)
        if not _NUMBER.fullmatch(number_text.strip() or "x"):
            continue  # malformed: the timing parser says how
        number = float(number_text)
        scale = _UNIT.get(unit or "s", 1.0)
        if not math.isfinite(number):
            raise SpecError(f"{option} {text!r}: {key or 'the time'} must be a finite number, "
                            f"not {number_text}")
        if key == "cv":
            if not 0 <= number <= MAX_CV:
                raise SpecError(f"{option} {text!r}: cv must be in [0, {MAX_CV:g}], not {number_text}")
        elif abs(number * scale) > MAX_TIME_S:
            raise SpecError(f"{option} {text!r}: {key or 'the time'} {val} is above the largest allowed "
                            f"time, {MAX_TIME_S:g} s")


def check_empirical_npy(path: Path, option: str) -> None:
    """An ``empirical:FILE.npy`` of times: a non-empty 1-d array of finite seconds >= 0 (a 2-d array is
    refused rather than flattened); read as a memory map, so a huge file costs nothing."""
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SpecError(f"{option}: cannot read empirical times from {path} ({type(exc).__name__}); give a "
                        f".npy of seconds") from None
    if values.ndim != 1:
        raise SpecError(f"{option}: empirical times in {path} must be a 1-d array, not shape {values.shape}")
    if values.size == 0:
        raise SpecError(f"{option}: empirical times file {path} is empty")
    if values.dtype.kind not in "iuf":
        raise SpecError(f"{option}: empirical times in {path} must be numbers, not {values.dtype}")
    sample = np.asarray(values[: 10**7], dtype=np.float64)
    if not np.all(np.isfinite(sample)) or np.any(sample < 0):
        raise SpecError(f"{option}: empirical times in {path} must be finite seconds >= 0")


def check_args(args: argparse.Namespace) -> None:
    """Every numeric option of a parsed command line: finite, in range (:data:`LIMITS`); timing strings
    number by number. Called before any work (one :class:`SpecError` line)."""
    for name, value in vars(args).items():
        if value is None:
            continue
        if name == "persistence":
            _persistence(value)
        elif name == "hidden":
            _hidden(value)
        elif name in ("compute_time", "update_time"):
            check_timing(value, _flag(name))
        elif name in LIMITS and isinstance(value, (int, float)):
            _check_number(name, value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{_flag(name)} must be a finite number, not {value}")


def check_memory(what: str, need_bytes: float, per_unit: float, value: int,
                 available: int | None = None) -> None:
    """Refuse ``what`` (e.g. ``--updates 10**12``) when ``need_bytes`` exceed the available memory, with
    the largest value that would fit (``per_unit`` bytes each)."""
    available = available_memory() if available is None else available
    if available is None or need_bytes <= available:
        return
    largest = max(int(available // max(per_unit, 1)), 0)
    raise SpecError(f"{what} {value} needs about {_gib(need_bytes)} of memory, more than the "
                    f"{_gib(available)} available now; the largest allowed value here is about {largest}")


def check_sizes(spec: Any, command: str, *, samples: int = 0, features: int | None = None,
                gradients: bool = True) -> None:
    """The sizes of ``spec`` against :data:`LIMITS` and the available memory, before allocation.

    ``command`` is ``train`` or ``simulate`` (their per-update record costs differ); ``samples`` the
    simulator's periodic samples; ``features`` the data set's input width (default: MNIST's 784);
    ``gradients=False`` (timing-only simulation) allocates no parameters."""
    for name in ("threads", "epochs", "batch_size", "evaluations", "seed"):
        value = getattr(spec, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            _check_number(name, value)
    if spec.updates is not None:
        _check_number("updates", spec.updates)
    if getattr(spec, "dim", None) is not None:
        _check_number("dim", spec.dim)
    for width in getattr(spec, "hidden", ()) or ():
        _check_number("hidden", width)
    available = available_memory()
    per_update = BYTES_PER_UPDATE.get(command, 320)
    updates = spec.updates or 0
    fixed = samples * BYTES_PER_SAMPLE
    n_params = _n_params(spec, features)
    copies = 2 * spec.threads + 4 + max(spec.evaluations, 0) if gradients else 0
    params_bytes = 4.0 * n_params * copies
    if updates:
        check_memory("--updates", updates * per_update + fixed + params_bytes, per_update, updates, available)
    if samples:
        check_memory("--samples", fixed + updates * per_update + params_bytes, BYTES_PER_SAMPLE, samples,
                     available)
    if n_params and copies:
        what = "--dim" if spec.model in ("counter", "quadratic") else "--hidden"
        value = spec.dim if what == "--dim" else max(spec.hidden or (0,))
        per_width = params_bytes / max(value or 1, 1)
        check_memory(what, params_bytes + updates * per_update + fixed, per_width, int(value or 0), available)


def _n_params(spec: Any, features: int | None) -> int:
    """A model's parameter count from the spec alone (an estimate for data sets not known here)."""
    if spec.model == "counter":
        return int(spec.dim or 0)
    if spec.model == "quadratic":
        return int(spec.dim or 0)
    width = features or (3072 if str(spec.dataset).startswith("cifar10") else 784)
    classes = 10
    if spec.model == "softmax":
        return (width + 1) * classes
    if spec.model == "mlp":
        sizes = [width, *(spec.hidden or ()), classes]
        return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return 27_354 if spec.model == "cnn" else 0


#: the default divergence factor (``--divergence-factor``, docs/errors.md "Divergence")
DEFAULT_DIVERGENCE_FACTOR = 10.0
#: "no limit" for the runtime's nogil threshold (a double compared in note_loss)
NO_LOSS_LIMIT = 1e308


def loss_limit(model: str, n_classes: int, initial_loss: float | None, factor: float) -> float:
    """The training loss above which a run counts as diverged (besides NaN/inf; docs/errors.md):
    ``factor`` x ln(classes) for a classifier, ``factor`` x the initial loss otherwise; no limit for the
    counter model (its loss, -mean(theta), falls without bound by design), an infinite factor, or an
    initial loss that is not positive."""
    if not math.isfinite(factor) or model == "counter":
        return NO_LOSS_LIMIT
    if n_classes >= 2:
        return factor * math.log(n_classes)
    if initial_loss is None or not math.isfinite(initial_loss) or initial_loss <= 0:
        return NO_LOSS_LIMIT
    return min(factor * initial_loss, NO_LOSS_LIMIT)
