"""Validation of the files leashed reads: results files and staleness fit files (docs/errors.md, "Files").

A file written by someone else is untrusted input. Before a results file becomes a
:class:`~leashed.results.RunResult` (:func:`read_results`, used by ``RunResult.load`` and so by all six
readers: ``inspect``, ``fit``, ``report``, ``compare``, ``train --from``, ``simulate --calibrate-from``):

* the archive: only STORED or DEFLATED members (what numpy writes), each member's declared size matched
  against its ``.npy`` header and its compressed size (deflate cannot expand more than about 1032x), and
  the sum of declared sizes against a stated limit and the available memory, all *before* any array is
  decompressed;
* ``meta.json``: a JSON object of the right types (``spec``, ``totals``, ``metadata``, ``extra``);
* the arrays: 1-d, of the documented kinds, of one length per group; staleness ``>= 0`` for committed
  updates and below their count, versions ``>= 0`` and committed versions non-decreasing in commit order.

Anything else is one :class:`~leashed.errors.ResultsFileError` line naming the file and the field. Strings
read from a file are escaped for terminals (:func:`safe_text`: control characters, escape sequences
included, become ``\\xNN``); plots render untrusted text without mathtext (:func:`plain_text_plots`).
Fit files get the same treatment (:func:`check_fit_document`) before they become step tables.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from leashed.errors import LeashedError, ResultsFileError
from leashed.limits import available_memory

__all__ = ["MAX_ARCHIVE_BYTES", "MAX_META_BYTES", "check_fit_document", "plain_text_plots", "read_fit_json",
           "check_spec_dict", "read_results", "safe_text", "safe_tree"]

#: largest sum of the declared (decompressed) sizes of a results file's members
MAX_ARCHIVE_BYTES = 16 * 2**30
#: largest meta.json member; largest fit file
MAX_META_BYTES = 64 * 2**20
#: largest declared/compressed ratio of a deflated member (deflate's own limit is about 1032)
MAX_DEFLATE_RATIO = 1100
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_KINDS = {np.int32: "iu", np.int64: "iu", np.bool_: "bu", np.float64: "fiu", np.float32: "f"}


def safe_text(text: Any) -> str:
    """``text`` with every control character (ESC, CSI, BEL, ...; not tab/newline) as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def safe_tree(value: Any) -> Any:
    """:func:`safe_text` applied to every string (keys included) of a JSON tree."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(k): safe_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_tree(v) for v in value]
    return value


def plain_text_plots() -> None:
    """Render all text of this process's matplotlib figures literally (no mathtext: a ``$\\undefined$``
    in a file name or label from a file is shown, not parsed). A no-op without matplotlib."""
    from leashed.interrupts import protected_import

    try:
        matplotlib = protected_import("matplotlib")  # a signal must not cut the import short
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the analysis extra
        return
    if "text.parse_math" in matplotlib.rcParams:
        matplotlib.rcParams["text.parse_math"] = False


# ------------------------------------------------------------------------------------------- results files
def _fail(path: Path, field: str, problem: str) -> ResultsFileError:
    return ResultsFileError(f"results file {safe_text(path)}: {field} {problem}; it is corrupt or was not "
                            f"written by leashed (rerun the experiment to recreate it)")


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) of one ``.npy`` member, read without decompressing the data."""
    name = info.filename
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=10_000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=10_000)
        else:
            raise _fail(path, name, f"has .npy version {version}")
        offset = fh.tell()
    if dtype.hasobject:
        raise _fail(path, name, "holds Python objects")
    return tuple(int(s) for s in shape), dtype, offset


def _check_members(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    members = {}
    total = 0
    for info in zf.infolist():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(path, info.filename, f"uses compression method {info.compress_type} (leashed and "
                                             f"numpy write only stored or deflated members)")
        if info.compress_type == zipfile.ZIP_DEFLATED and \
                info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1) + 1024:
            raise _fail(path, info.filename, f"declares {info.file_size} bytes from {info.compress_size} "
                                             f"compressed ones, more than deflate can expand (a zip bomb?)")
        total += info.file_size
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        members[name] = info
    limit = MAX_ARCHIVE_BYTES
    free = available_memory()
    if free is not None:
        limit = min(limit, free // 2)
    if total > limit:
        raise _fail(path, "the archive", f"declares {total} bytes decompressed, more than the limit of "
                                         f"{limit} (min({MAX_ARCHIVE_BYTES}, half the available memory))")
    return members


def _read_meta(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> dict[str, Any]:
    if info.file_size > MAX_META_BYTES:
        raise _fail(path, "meta.json", f"declares {info.file_size} bytes (limit {MAX_META_BYTES})")
    shape, dtype, offset = _header(zf, info, path)
    if len(shape) != 1 or dtype != np.uint8:
        raise _fail(path, "meta.json", f"is a {dtype} array of shape {shape}, not 1-d uint8")
    with zf.open(info) as fh:
        raw = np.lib.format.read_array(fh, allow_pickle=False)
    try:
        meta = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail(path, "meta.json", "is not valid UTF-8 JSON") from None
    if not isinstance(meta, dict):
        raise _fail(path, "meta.json", f"is a JSON {type(meta).__name__}, not an object")
    return meta


def _check_meta(meta: dict[str, Any], path: Path, format_name: str, format_version: int) -> dict[str, Any]:
    if meta.get("format") != format_name:
        raise ResultsFileError(f"{safe_text(path)} is not a leashed results file "
                               f"(format {safe_text(repr(meta.get('format'))[:80])})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(path, "format_version", f"is {safe_text(repr(version)[:40])}, not a positive integer")
    if version > format_version:
        raise ResultsFileError(f"{safe_text(path)} has results format version {version}; this leashed "
                               f"reads up to version {format_version}: upgrade leashed")
    if meta.get("source") not in ("runtime", "sim"):
        raise _fail(path, "source", f"is {safe_text(repr(meta.get('source'))[:40])}, not 'runtime' or 'sim'")
    if not isinstance(meta.get("spec"), dict):
        raise _fail(path, "spec", "is missing or not an object")
    for key in ("totals", "metadata", "extra"):
        if key in meta and meta[key] is not None and not isinstance(meta[key], dict):
            raise _fail(path, key, f"is a {type(meta[key]).__name__}, not an object")
    totals = meta.get("totals") or {}
    for key in ("updates_applied", "updates_dropped", "cas_failures"):
        value = totals.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise _fail(path, f"totals.{key}", f"is {safe_text(repr(value)[:40])}, not a count >= 0")
    if totals.get("diverged_at") is not None and (isinstance(totals["diverged_at"], bool)
                                                   or not isinstance(totals["diverged_at"], int)):
        raise _fail(path, "totals.diverged_at", f"is {safe_text(repr(totals['diverged_at'])[:40])}, "
                                                f"not an integer")
    for key in ("wall_time_s", "lost_updates"):
        value = totals.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _fail(path, f"totals.{key}", f"is {safe_text(repr(value)[:40])}, not a number")
    wall = totals.get("wall_time_s")
    if wall is not None and not (math.isfinite(wall) and wall >= 0):
        raise _fail(path, "totals.wall_time_s", f"is {wall}, not a finite time >= 0")
    if totals.get("interrupted") is not None and not isinstance(totals["interrupted"], bool):
        raise _fail(path, "totals.interrupted", "is not true or false")
    return safe_tree(meta)


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, field: str, dtype: Any) -> np.ndarray:
    shape, have, offset = _header(zf, info, path)
    if len(shape) != 1:
        raise _fail(path, field, f"has shape {shape}, not 1-d")
    if have.kind not in _KINDS[dtype]:
        raise _fail(path, field, f"has dtype {have}, expected {np.dtype(dtype)}")
    if offset + shape[0] * have.itemsize != info.file_size:
        raise _fail(path, field, f"declares {info.file_size} bytes, but its header says "
                                 f"{offset + shape[0] * have.itemsize}")
    with zf.open(info) as fh:
        arr = np.lib.format.read_array(fh, allow_pickle=False)
    if arr.dtype.kind == "f" and np.dtype(dtype).kind in "iub":
        raise _fail(path, field, "holds floats")
    return arr


def read_results(path: Path, update_fields: dict[str, Any], optional_fields: dict[str, Any],
                 sample_fields: dict[str, Any], format_name: str,
                 format_version: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a results file, validated as the module docstring says; the arrays are named as
    in the file (``update_thread``, ...). Raises one :class:`ResultsFileError` line on any problem."""
    try:
        if not path.is_file():
            raise ResultsFileError(f"results file {safe_text(path)} is not a file; check the path")
        with zipfile.ZipFile(path) as zf:
            members = _check_members(zf, path)
            if "meta.json" not in members:
                raise ResultsFileError(f"{safe_text(path)} is not a leashed results file "
                                       f"(no meta.json entry)")
            meta = _check_meta(_read_meta(zf, members["meta.json"], path), path, format_name, format_version)
            data: dict[str, np.ndarray] = {}
            wanted = {**{f"update_{n}": d for n, d in update_fields.items()},
                      **{f"sample_{n}": d for n, d in sample_fields.items()}, "params": np.float32}
            for name, dtype in wanted.items():
                if name not in members:
                    raise _fail(path, name, "is missing")
                data[name] = _read_array(zf, members[name], path, name, dtype)
            for n, dtype in optional_fields.items():
                if f"update_{n}" in members:
                    data[f"update_{n}"] = _read_array(zf, members[f"update_{n}"], path, f"update_{n}", dtype)
    except ResultsFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - zlib.error, struct.error, BadZipFile...: all mean "corrupt"
        raise ResultsFileError(f"cannot read results file {safe_text(path)}: it is truncated or corrupt "
                               f"({type(exc).__name__}); rerun the experiment to recreate it") from None
    _check_arrays(data, path, update_fields, optional_fields, sample_fields)
    return meta, data


def _check_arrays(data: dict[str, np.ndarray], path: Path, update_fields: dict[str, Any],
                  optional_fields: dict[str, Any], sample_fields: dict[str, Any]) -> None:
    for prefix, fields in (("update_", {**update_fields, **{k: v for k, v in optional_fields.items()
                                                           if f"update_{k}" in data}}),
                           ("sample_", sample_fields)):
        lengths = {name: len(data[prefix + name]) for name in fields}
        if len(set(lengths.values())) > 1:
            raise _fail(path, f"{prefix}* arrays", f"have different lengths {lengths}")
    for name in ("update_t_start", "update_t_grad", "update_t_commit", "sample_time"):
        if not np.all(np.isfinite(data[name])):
            raise _fail(path, name, "holds NaN or infinite times")
    dropped = data["update_dropped"].astype(bool)
    committed = ~dropped
    n_committed = int(committed.sum())
    tau = data["update_staleness"][committed]
    if len(tau) and (int(tau.min()) < 0 or int(tau.max()) >= max(n_committed, 1)):
        raise _fail(path, "update_staleness", f"has committed values in [{int(tau.min())}, "
                                              f"{int(tau.max())}], outside [0, {n_committed - 1}] "
                                              f"({n_committed} committed updates)")
    if np.any(data["update_staleness"][dropped] < -1):
        raise _fail(path, "update_staleness", "has dropped values below -1")
    commit = data["update_version_commit"][committed]
    if len(commit) and (int(commit.min()) < 0 or np.any(np.diff(commit) < 0)):
        raise _fail(path, "update_version_commit", "is negative or decreases along the commit order")
    for name in ("update_thread", "update_attempts", "sample_version", "sample_live_vectors"):
        arr = data[name]
        if len(arr) and int(arr.min()) < 0:
            raise _fail(path, name, "has negative values")


_SPEC_STR = ("algorithm", "model", "dataset", "step_policy", "sparsifier", "backend")
_SPEC_OPT_STR = ("staleness_model", "compute_time", "update_time")
_SPEC_INT = ("threads", "dim", "batch_size", "epochs", "seed", "evaluations")


def check_spec_dict(spec: Any, path: Path) -> None:
    """The types and ranges of a stored spec (strings are strings, counts are integers within
    ``leashed.limits.LIMITS``), so that nothing downstream meets a list where it expects a name."""
    from leashed.limits import LIMITS

    if not isinstance(spec, dict):
        raise _fail(path, "spec", "is not an object")
    for key in _SPEC_STR:
        if key in spec and not isinstance(spec[key], str):
            raise _fail(path, f"spec.{key}", f"is a {type(spec[key]).__name__}, not a string")
    for key in _SPEC_OPT_STR:
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise _fail(path, f"spec.{key}", f"is a {type(spec[key]).__name__}, not a string")
    for key in (*_SPEC_INT, "updates"):
        value = spec.get(key)
        if value is None and key in ("updates", "dim"):
            continue
        if key in spec and (isinstance(value, bool) or not isinstance(value, int)
                            or not LIMITS[key][0] <= value <= LIMITS[key][1]):
            raise _fail(path, f"spec.{key}", f"is {safe_text(repr(value)[:40])}, not an integer in "
                                             f"[{LIMITS[key][0]:g}, {LIMITS[key][1]:g}]")
    hidden = spec.get("hidden", [])
    if not isinstance(hidden, list) or len(hidden) > 64 or not all(
            isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= LIMITS["hidden"][1] for h in hidden):
        raise _fail(path, "spec.hidden", "is not a short list of positive integer widths")
    lr = spec.get("lr", 0.2)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
        raise _fail(path, "spec.lr", "is not a finite number")
    persistence = spec.get("persistence", "inf")
    if not (persistence == "inf" or (isinstance(persistence, int) and not isinstance(persistence, bool)
                                     and 0 <= persistence <= LIMITS["persistence"][1])
            or (isinstance(persistence, str) and persistence.isdigit() and len(persistence) <= 10)):
        raise _fail(path, "spec.persistence", f"is {safe_text(repr(persistence)[:40])}, not a count or 'inf'")
    table = spec.get("step_table")
    if table is not None and (not isinstance(table, list) or len(table) > MAX_PMF or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in table)):
        raise _fail(path, "spec.step_table", "is not a flat list of numbers")
    if "error_memory" in spec and not isinstance(spec["error_memory"], bool):
        raise _fail(path, "spec.error_memory", "is not true or false")
    if "extra" in spec and not isinstance(spec["extra"], dict):
        raise _fail(path, "spec.extra", "is not an object")


# ------------------------------------------------------------------------------------------- fit files
#: parameter -> (low, high, low open?) of each fitted model (papers.md §4)
FIT_PARAMS: dict[str, dict[str, tuple[float, float, bool]]] = {
    "poisson": {"lam": (0.0, 1e9, True)},
    "geometric": {"q": (0.0, 1.0, True)},
    "cmp": {"lam": (0.0, 1e9, True), "nu": (0.0, 1e3, False)},
    "negbin": {"r": (0.0, 1e12, True), "p": (0.0, 1.0, True)},
}
#: longest empirical pmf in a fit file
MAX_PMF = 10**7


def read_fit_json(path: Any) -> Any:
    """The JSON of a fit file, size-checked before reading (one :class:`LeashedError` line)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return None  # the fit reader says that the file is missing
    if size > MAX_META_BYTES:
        raise LeashedError(f"staleness model file {safe_text(path)} is {size} bytes, more than a fit file "
                           f"can be ({MAX_META_BYTES})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LeashedError(f"cannot read staleness model file {safe_text(path)}: not valid JSON "
                           f"({type(exc).__name__})") from None


def _fit_problem(path: Any, where: str, problem: str) -> LeashedError:
    return LeashedError(f"staleness model file {safe_text(path)}: {where} {problem}; write it again with "
                        f"`leashed fit RESULT --out FIT.json`")


def _check_fit(fit: Any, path: Any, where: str) -> None:
    if not isinstance(fit, dict):
        raise _fit_problem(path, where, f"is a {type(fit).__name__}, not an object")
    model = fit.get("model")
    params = fit.get("params")
    if model == "empirical":
        pmf = params.get("pmf") if isinstance(params, dict) else None
        if not isinstance(pmf, list) or not pmf or len(pmf) > MAX_PMF:
            raise _fit_problem(path, f"{where}.params.pmf", "is not a non-empty list")
        if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pmf):
            raise _fit_problem(path, f"{where}.params.pmf", "must be a flat list of numbers (a 1-d pmf)")
        values = np.asarray(pmf, dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or not values.sum() > 0:
            raise _fit_problem(path, f"{where}.params.pmf", "must hold finite probabilities >= 0, not all 0")
        return
    if model not in FIT_PARAMS:
        raise _fit_problem(path, f"{where}.model", f"is {safe_text(repr(model)[:40])}, not one of "
                                                   f"{', '.join([*FIT_PARAMS, 'empirical'])}")
    if not isinstance(params, dict):
        raise _fit_problem(path, f"{where}.params", "is not an object")
    for name, (lo, hi, open_low) in FIT_PARAMS[model].items():
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not (value > lo if open_low else value >= lo) or value > hi:
            bound = "(" if open_low else "["
            raise _fit_problem(path, f"{where}.params.{name}", f"of the {model} model is "
                                                               f"{safe_text(repr(value)[:40])}, not in "
                                                               f"{bound}{lo:g}, {hi:g}]")
    if model == "cmp" and params["nu"] == 0 and params["lam"] >= 1:
        raise _fit_problem(path, f"{where}.params", "of the cmp model have nu = 0 and lam >= 1 (no pmf)")
    for key in ("n", "n_params"):
        if key in fit and (isinstance(fit[key], bool) or not isinstance(fit[key], int) or fit[key] < 0):
            raise _fit_problem(path, f"{where}.{key}", "is not a count >= 0")


def check_fit_document(data: Any, path: Any) -> None:
    """A fit file's JSON (``leashed fit --out``, or one bare fit): every run an object with a list of fits,
    every fit a known model with parameters in range (a Poisson λ = −3 is refused). One
    :class:`LeashedError` line naming the file and the field."""
    if data is None:
        return
    if isinstance(data, dict) and "model" in data and "params" in data:
        _check_fit(data, path, "the fit")
        return
    if not isinstance(data, dict):
        raise _fit_problem(path, "the file", f"is a JSON {type(data).__name__}, not an object")
    runs = data.get("results")
    if not isinstance(runs, list):
        return  # the fit reader says what is missing
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise _fit_problem(path, f"results[{i}]", f"is a {type(run).__name__}, not an object")
        fits = run.get("fits")
        if fits is None:
            continue
        if not isinstance(fits, list):
            raise _fit_problem(path, f"results[{i}].fits", "is not a list")
        for j, fit in enumerate(fits):
            _check_fit(fit, path, f"results[{i}].fits[{j}]")
