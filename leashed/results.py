"""RunResult and the leashed results file format (version 1).

A results file is one ``.npz`` archive (numpy's zip of ``.npy`` arrays, readable without leashed) holding

* ``meta.json`` -- a uint8 array of UTF-8 JSON: ``format`` (``"leashed-results"``), ``format_version`` (1),
  ``source`` (``"runtime"`` or ``"sim"``), ``spec`` (the full ExperimentSpec), ``totals``, ``metadata``
  (CPU model, cores, Python/numpy/scipy/Cython/simpy/leashed versions, BLAS library and thread count,
  git revision, seed, start time, host) and ``extra`` (engine-specific notes, e.g. the timing model);
* per-update arrays, one entry per computed gradient (dropped ones included), in commit order:
  ``update_thread`` (int32), ``update_version_read`` (int64), ``update_version_commit`` (int64, -1 if
  dropped), ``update_staleness`` (int64, -1 if dropped), ``update_attempts`` (int32, CAS attempts or 1),
  ``update_dropped`` (bool), ``update_t_start``, ``update_t_grad``, ``update_t_commit`` (float64 seconds
  since the run started; simulated seconds for ``source == "sim"``; ``t_commit`` of a dropped update is
  the time it was abandoned), and ``update_t_attempt`` (float64, the start of the update's last attempt:
  after leashed's failed ones; seqlock: the end of its successful snapshot copy, before the gradient;
  else ``t_grad``; optional: files without it read it as ``t_grad``);
* periodic samples: ``sample_time`` (float64 s), ``sample_version`` (int64, updates applied),
  ``sample_live_vectors`` (int32), ``sample_loss`` (float64 training loss, NaN if not evaluated),
  ``sample_accuracy`` (float64 test accuracy in [0, 1], NaN if not evaluated);
* ``params`` -- the final parameter vector (float32; empty for timing-only simulations).

Large float arrays are stored, the others deflated at zlib level 1 (``numpy.load`` reads both).

Files are written atomically (temporary file, then rename). Loading checks the format name and version
and refuses a newer, truncated or corrupt file with a one-line :class:`ResultsFileError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leashed import algorithms
from leashed._files import write_atomic
from leashed.errors import LeashedError, ResultsFileError
from leashed.schema import check_spec_dict, read_results, safe_text
from leashed.spec import ExperimentSpec

FORMAT_NAME = "leashed-results"
FORMAT_VERSION = 1

UPDATE_FIELDS: dict[str, Any] = {
    "thread": np.int32, "version_read": np.int64, "version_commit": np.int64, "staleness": np.int64,
    "attempts": np.int32, "dropped": np.bool_, "t_start": np.float64, "t_grad": np.float64,
    "t_commit": np.float64,
}
SAMPLE_FIELDS: dict[str, Any] = {
    "time": np.float64, "version": np.int64, "live_vectors": np.int32, "loss": np.float64,
    "accuracy": np.float64,
}
#: per-update arrays that older files may lack: ``t_attempt`` (start of the update's last attempt; leashed's
#: retries make it later than ``t_grad``; seqlock: the end of its snapshot), read as ``t_grad`` when absent
OPTIONAL_UPDATE_FIELDS: dict[str, Any] = {"t_attempt": np.float64}
TOTAL_KEYS = ("updates_applied", "updates_dropped", "cas_failures", "wall_time_s", "diverged_at",
              "interrupted", "lost_updates")


def _write_npz(fh: Any, arrays: dict[str, np.ndarray]) -> None:
    """The archive ``numpy.savez_compressed`` would write (``numpy.load`` reads it), faster: integer and
    boolean arrays deflated at zlib level 1, large float arrays stored (measured timestamps gain 25 % from
    deflate at 90 ms per 3 MB: at numpy's default level, compressing took a third of a 400,000-update
    simulation's run time)."""
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1,
                         allowZip64=True) as archive:
        for name, array in arrays.items():
            array = np.asanyarray(array)
            stored = array.dtype.kind == "f" and array.nbytes > (1 << 16)
            archive.compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED  # for this member
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _as(array: Any, dtype: Any) -> np.ndarray:
    out = np.ascontiguousarray(np.asarray(array, dtype=dtype))
    if out.ndim != 1:
        raise ValueError(f"expected a 1-d array, got shape {out.shape}")
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class UpdateLog:
    """Per-update records, one entry per computed gradient, in commit order."""

    thread: np.ndarray
    version_read: np.ndarray
    version_commit: np.ndarray
    staleness: np.ndarray
    attempts: np.ndarray
    dropped: np.ndarray
    t_start: np.ndarray
    t_grad: np.ndarray
    t_commit: np.ndarray
    #: start of the last attempt of each update (leashed: after the failed ones); None: ``t_grad``
    t_attempt: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = None
        if self.t_attempt is None:
            object.__setattr__(self, "t_attempt", self.t_grad)
        for name, dtype in {**UPDATE_FIELDS, **OPTIONAL_UPDATE_FIELDS}.items():
            arr = _as(getattr(self, name), dtype)
            object.__setattr__(self, name, arr)
            if n is not None and len(arr) != n:
                raise ValueError(f"update field {name} has {len(arr)} entries, expected {n}")
            n = len(arr)

    def __len__(self) -> int:
        return len(self.thread)

    @classmethod
    def empty(cls) -> UpdateLog:
        return cls(**{name: np.zeros(0, dtype) for name, dtype in UPDATE_FIELDS.items()})

    @property
    def committed(self) -> np.ndarray:
        return ~self.dropped


@dataclass(frozen=True)
class Samples:
    """Periodic samples taken during the run."""

    time: np.ndarray
    version: np.ndarray
    live_vectors: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for name, dtype in SAMPLE_FIELDS.items():
            arr = _as(getattr(self, name), dtype)
            object.__setattr__(self, name, arr)
            if n is not None and len(arr) != n:
                raise ValueError(f"sample field {name} has {len(arr)} entries, expected {n}")
            n = len(arr)

    def __len__(self) -> int:
        return len(self.time)

    @classmethod
    def empty(cls) -> Samples:
        return cls(**{name: np.zeros(0, dtype) for name, dtype in SAMPLE_FIELDS.items()})


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run of either engine; see the module docstring for the file format."""

    spec: ExperimentSpec
    source: str
    updates: UpdateLog
    samples: Samples
    params: np.ndarray
    totals: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in ("runtime", "sim"):
            raise ValueError(f"source must be 'runtime' or 'sim', not {self.source!r}")
        object.__setattr__(self, "params", _as(self.params, np.float32))
        totals = {key: None for key in TOTAL_KEYS}
        totals.update(self.totals)
        object.__setattr__(self, "totals", totals)

    # ---------------------------------------------------------------- derived quantities
    @property
    def staleness(self) -> np.ndarray:
        """Staleness τ of every committed update (papers.md §1)."""
        return self.updates.staleness[self.updates.committed]

    @property
    def staleness_histogram(self) -> np.ndarray:
        """Counts of committed updates by staleness: element τ is how many had staleness τ (int64)."""
        tau = self.staleness
        return np.bincount(tau) if len(tau) else np.zeros(0, dtype=np.int64)

    def staleness_hist(self) -> np.ndarray:
        """Deprecated: the property :attr:`staleness_histogram` (derived data on RunResult are properties)."""
        warnings.warn("RunResult.staleness_hist() is deprecated: use the property staleness_histogram",
                      DeprecationWarning, stacklevel=2)
        return self.staleness_histogram

    @property
    def dataset_used(self) -> str:
        """The data set the run trained on: the model's own (counter: none, quadratic: synthetic) while the
        spec keeps the default ``mnist``, which doubles as "unset" (:func:`leashed.workload.dataset_name`)."""
        from leashed.workload import dataset_name

        return dataset_name(self.spec)

    def summary(self) -> dict[str, Any]:
        """The keys of ``leashed inspect --json`` (None where not applicable)."""
        tau = self.staleness
        applied = self.totals.get("updates_applied")
        wall = self.totals.get("wall_time_s")
        has_updates = len(self.updates) > 0
        attempts = self.updates.attempts[self.updates.committed] if has_updates else np.zeros(0)
        entry = algorithms.algorithm(self.spec.algorithm)
        concurrent = not entry.single_thread

        def finite_last(values: np.ndarray) -> float | None:
            ok = values[np.isfinite(values)]
            return float(ok[-1]) if len(ok) else None

        return {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "algorithm": self.spec.algorithm,
            "threads": self.spec.threads,
            "persistence": self.spec.persistence_label if entry.has_persistence else None,
            "step_policy": self.spec.step_policy,
            "sparsifier": self.spec.sparsifier,
            "model": self.spec.model,
            "dataset": self.dataset_used,
            "updates_applied": applied,
            "updates_dropped": self.totals.get("updates_dropped"),
            "wall_time_s": wall,
            "updates_per_s": (applied / wall) if applied is not None and wall else None,
            "staleness_mean": float(tau.mean()) if len(tau) else None,
            "staleness_var": float(tau.var()) if len(tau) else None,
            "staleness_hist": self.staleness_histogram.tolist() if len(tau) else None,
            "cas_attempts_mean": float(attempts.mean()) if len(attempts) and concurrent else None,
            "cas_failures": self.totals.get("cas_failures"),
            # the store's exact peak where the engine kept one; the samples can miss a short peak
            "live_vectors_max": (self.extra["live_vectors_max"] if "live_vectors_max" in self.extra
                                 else int(self.samples.live_vectors.max()) if len(self.samples) else None),
            "final_train_loss": finite_last(self.samples.loss) if len(self.samples) else None,
            "final_test_accuracy": finite_last(self.samples.accuracy) if len(self.samples) else None,
            "diverged_at": self.totals.get("diverged_at"),
            "interrupted": self.totals.get("interrupted"),
            "lost_updates": self.totals.get("lost_updates"),
        }

    # ---------------------------------------------------------------- file format
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the results file atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "spec": self.spec.to_dict(),
            "totals": self.totals,
            "metadata": self.metadata,
            "extra": self.extra,
        }
        arrays: dict[str, np.ndarray] = {
            "meta.json": np.frombuffer(json.dumps(meta, default=_json_default, allow_nan=True)
                                       .encode("utf-8"), dtype=np.uint8),
            "params": self.params,
        }
        for name in (*UPDATE_FIELDS, *OPTIONAL_UPDATE_FIELDS):
            arrays[f"update_{name}"] = getattr(self.updates, name)
        for name in SAMPLE_FIELDS:
            arrays[f"sample_{name}"] = getattr(self.samples, name)
        return write_atomic(path, lambda fh: _write_npz(fh, arrays))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunResult:
        """Read a results file; any problem is one :class:`ResultsFileError` line."""
        path = Path(path)
        if not path.exists():
            raise ResultsFileError(f"results file {safe_text(path)} does not exist; check the path")
        meta, data = read_results(path, UPDATE_FIELDS, OPTIONAL_UPDATE_FIELDS, SAMPLE_FIELDS, FORMAT_NAME,
                                  FORMAT_VERSION)  # validated before any array is decompressed
        try:
            check_spec_dict(meta["spec"], path)
            return cls(
                spec=ExperimentSpec.from_dict(meta["spec"]),
                source=meta["source"],
                updates=UpdateLog(**{n: data[f"update_{n}"] for n in UPDATE_FIELDS},
                                  **{n: data[f"update_{n}"] for n in OPTIONAL_UPDATE_FIELDS
                                     if f"update_{n}" in data}),
                samples=Samples(**{n: data[f"sample_{n}"] for n in SAMPLE_FIELDS}),
                params=data["params"],
                totals=meta.get("totals") or {},
                metadata=meta.get("metadata") or {},
                extra=meta.get("extra") or {},
            )
        except ResultsFileError:
            raise
        except (KeyError, ValueError, TypeError, AttributeError, OverflowError, LeashedError) as exc:
            raise ResultsFileError(f"results file {safe_text(path)} is incomplete or inconsistent "
                                   f"({safe_text(exc)}); rerun the experiment to recreate it") from None

    def replace(self, **changes: Any) -> RunResult:
        return dataclasses.replace(self, **changes)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    raise TypeError(f"cannot store {type(value).__name__} in a results file")


# -------------------------------------------------------------------- machine metadata
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5, check=False).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing distribution is just "unknown"
        return None


def _blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info

        return [{k: info.get(k) for k in ("internal_api", "version", "num_threads", "filepath",
                                           "threading_layer", "architecture")}
                for info in threadpool_info() if info.get("user_api") == "blas"]
    except Exception:  # noqa: BLE001
        return []


def machine_metadata(seed: int | None = None, blas_threads: int | None = None) -> dict[str, Any]:
    """CPU, cores, library versions, BLAS, git revision, seed and start time, for a results file."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("numpy", "scipy", "Cython", "simpy", "matplotlib", "leashed-sgd")},
        "blas": _blas_info(),
        "blas_threads_in_workers": blas_threads,
        "git_revision": _git_revision(),
        "seed": seed,
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
