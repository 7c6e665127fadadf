"""Helpers shared by the benchmark scripts in this folder (and by ``leashed bench``).

Nothing here is timed: tables, FLOP counts, time-to-target from loss curves, data subsets, machine notes.
The scripts import it as ``_common`` (this folder is on ``sys.path`` when a script runs, and
``leashed.bench`` puts it there before importing them).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: rows of the training set on which "training loss" is measured at checkpoints (fixed, seeded)
LOSS_SUBSET_ROWS = 10_000


# ------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A result table: named columns, one dict per row, free-text notes printed under it."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def cells(self) -> list[list[str]]:
        return [[fmt(row.get(col)) for col in self.columns] for row in self.rows]

    def to_text(self) -> str:
        cells = self.cells()
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = [self.title, "  ".join(c.rjust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
               "|" + "|".join("---:" for _ in self.columns) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.cells()]
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                       for r in self.cells())
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<h3>{html.escape(self.title)}</h3>\n<table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>\n" + (f"<ul>{notes}</ul>\n" if notes else ""))

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({c: _plain(row.get(c)) for c in self.columns})
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "notes": self.notes,
                "rows": [{k: _plain(v) for k, v in row.items()} for row in self.rows]}

    def write(self, folder: str | os.PathLike[str], stem: str) -> list[Path]:
        """Write ``stem.csv`` and ``stem.json`` into folder; returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
        _atomic_write(csv_path, self.to_csv())
        _atomic_write(json_path, json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        return [csv_path, json_path]


def fmt(value: Any) -> str:
    """Human cell text: None -> '-', floats with 3 significant digits (more for large ones)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3g}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.3g}"
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _atomic_write(path: Path, text: str) -> None:
    from leashed._files import write_atomic

    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, None when either is missing or theirs is 0."""
    if ours is None or theirs is None or theirs == 0 or not math.isfinite(theirs):
        return None
    return float(ours) / float(theirs)


# ------------------------------------------------------------------------------------------- curves
def time_to_target(times: Sequence[float], losses: Sequence[float], target: float) -> float | None:
    """Wall time of the first checkpoint whose loss is <= target (None if never; NaN losses never count).

    Checkpoint resolution bounds the precision: the true crossing lies between this checkpoint and
    the one before it.
    """
    for t, loss in zip(times, losses, strict=True):
        if loss is not None and math.isfinite(loss) and loss <= target:
            return float(t)
    return None


def loss_subset(n_rows: int, seed: int, size: int = LOSS_SUBSET_ROWS) -> np.ndarray:
    """Indices of the fixed training subset on which checkpoint losses are measured: the rows leashed's
    runtime evaluates its sampled training loss on (``leashed.runtime.run._assemble``: ``size`` rows
    drawn without replacement by ``default_rng([seed, 3])``, sorted)."""
    rng = np.random.default_rng([seed, 3])
    return np.sort(rng.choice(n_rows, size=min(n_rows, size), replace=False)).astype(np.int64)


def finite_curve(times: Sequence[float], losses: Sequence[float]) -> tuple[list[float], list[float]]:
    """The (time, loss) samples that carry a loss (runtime results interleave live-vector-only samples
    whose loss is NaN)."""
    pairs = [(float(t), float(v)) for t, v in zip(times, losses, strict=True) if math.isfinite(v)]
    return [t for t, _ in pairs], [v for _, v in pairs]


def diverged(result: Any) -> bool:
    """A run diverged: the runtime flagged a non-finite loss (``diverged_at`` >= 0; the simulator uses
    None for "no"), or its final parameters are not finite."""
    at = result.totals.get("diverged_at")
    if at is not None and int(at) >= 0:
        return True
    return bool(len(result.params)) and not bool(np.all(np.isfinite(result.params)))


# ------------------------------------------------------------------------------------------- FLOPs
def mlp_gemm_shapes(batch: int, widths: Sequence[int]) -> list[tuple[str, int, int, int, bool, bool]]:
    """The row-major GEMMs ``C[M,N] = op(A)[M,K] @ op(B)[K,N]`` of one MLP forward + backward, as the
    leashed kernel runs them: (name, M, N, K, transpose A, transpose B).

    Forward: one ``act[l] @ W[l]`` per layer. Backward: ``act[l]^T @ delta`` (weight gradient) per layer
    and ``delta @ W[l]^T`` (delta of the layer below) for every layer but the first: the gradient with
    respect to the input pixels is never needed, so it is not computed.
    """
    shapes = []
    for layer in range(len(widths) - 1):
        fi, fo = widths[layer], widths[layer + 1]
        shapes.append((f"fwd{layer + 1}", batch, fo, fi, False, False))
    for layer in reversed(range(len(widths) - 1)):
        fi, fo = widths[layer], widths[layer + 1]
        shapes.append((f"dW{layer + 1}", fi, fo, batch, True, False))
        if layer > 0:
            shapes.append((f"dA{layer}", batch, fi, fo, False, True))
    return shapes


def gemm_flops(shapes: Iterable[tuple[str, int, int, int, bool, bool]]) -> int:
    """2·M·N·K summed over the GEMMs."""
    return sum(2 * m * n * k for _, m, n, k, _, _ in shapes)


def mlp_nominal_flops(batch: int, widths: Sequence[int]) -> int:
    """The textbook count: forward 2·B·Σ fan_in·fan_out, backward twice that (it includes the input
    gradient of the first layer, which training never needs)."""
    forward = 2 * batch * sum(widths[i] * widths[i + 1] for i in range(len(widths) - 1))
    return 3 * forward


# ------------------------------------------------------------------------------------------- machine
def load_note() -> str:
    """One line about the machine and how busy it is (timings on a busy machine are noisy)."""
    try:
        load1, load5, _ = os.getloadavg()
        load = f"load average {load1:.2f} (1 min), {load5:.2f} (5 min)"
    except OSError:
        load = "load average unknown"
    return f"{platform.node()}: {os.cpu_count()} cores, {load}, {time.strftime('%Y-%m-%d %H:%M:%S')}"


def under_load(threshold: float = 0.5) -> bool:
    """True when the 1-minute load average exceeds ``threshold`` runnable tasks per core."""
    try:
        return os.getloadavg()[0] > threshold * (os.cpu_count() or 1)
    except OSError:
        return False


def torch_or_none() -> Any:
    """The torch module, or None when it is not installed (it is never a dependency of leashed)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def blas_note() -> str:
    """Which BLAS numpy/scipy use and with how many threads (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS: unknown (threadpoolctl missing)"
    parts = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            parts.append(f"{info.get('internal_api')} {info.get('version')} "
                         f"({info.get('architecture') or '?'}, {info.get('num_threads')} threads, "
                         f"{Path(str(info.get('filepath'))).name})")
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    text = "BLAS: " + ("; ".join(parts) if parts else "none loaded")
    return text + (f"; env {env}" if env else "")


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, text)
    return path


# ------------------------------------------------------------------------------------------- runtime
def run_runtime(spec: Any, data: Any = None) -> Any:
    """Run one ExperimentSpec on leashed's threaded runtime (on ``data`` if given) and return its
    RunResult, without a progress bar."""
    from leashed.runtime.run import run

    return run(spec, dataset=data, progress=False)


def save_loss_panels(fig: Any, axes: Any, used: int, ylabel: str, title: str, path: Path) -> Path:
    """Finish a grid of loss-against-wall-time panels (paper_comparison, vs_pytorch_hogwild): labels, log
    scale, grid and legend on the first ``used`` panels, the rest hidden; title; PNG at 110 dpi."""
    import matplotlib.pyplot as plt

    flat = list(axes.flat)
    for ax in flat[:used]:
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in flat[used:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def script_main(main: Callable[[], Any], name: str) -> int:
    """Run a benchmark script's ``main`` as the leashed CLI runs a command: a LeashedError (a missing data
    set, a bad spec) is one ``NAME: error: ...`` line and status 2, Ctrl-C one line and status 130."""
    from leashed.errors import LeashedError

    try:
        out = main()
        return out if isinstance(out, int) else 0
    except LeashedError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
