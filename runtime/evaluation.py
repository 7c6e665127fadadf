"""Evaluate a run's parameter snapshots in parallel once its workers have joined (papers.md §2; README).

A run takes about ``spec.evaluations`` parameter snapshots while it trains (:mod:`leashed.runtime.run`);
each gets a training loss and a test accuracy. Evaluating them used to cost more than the training
itself (20 snapshots of the CNN, 10,000 training and 10,000 test rows each, one core: about 60 s after a
4 s run), so this module evaluates them

* **after the join**, so that evaluation never takes a core from a measured worker thread;
* **in parallel** on every usable core (``os.sched_getaffinity``): the forward pass,
  :meth:`leashed.models._kernels.Model.evaluate`, releases the GIL, so a thread pool runs one chunk of
  rows per core with BLAS held to one thread per caller (threadpoolctl);
* **in chunks that suit the model** (:func:`chunk_rows`): a convolutional model's forward workspace
  (about 60 KB a row for the CNN) is kept near :data:`WORKSPACE_BYTES`, 16 rows instead of 1,000: about
  28 µs a row instead of 90 µs on the 2-core VM; dense models keep 1,000-row chunks, whose matrix
  products amortise the weights (about 6 µs a row for the MLP, 14 µs at 284 rows);
* **on fewer rows**: the *final* snapshot, whose numbers ``leashed train`` prints and the report's first
  table shows, is evaluated on the full test set and on :data:`EVAL_FINAL_TRAIN_ROWS` (5,000) of the
  :data:`~leashed.workload.EVAL_TRAIN_ROWS` (10,000) seeded training rows every engine shares; the
  intermediate snapshots, which only draw the curve, on :data:`EVAL_CURVE_ROWS` (250) rows of each, a
  seeded subset of the same rows (nested, so the curve does not jump at its last point).

Trade-off, stated: the forward pass costs about 0.45 of a training step per row, and one epoch of
MNIST-sized data is 60,000 training rows, so 21 snapshots on 20,000 rows each (the old rule) cost about
as much as the training; the rule above evaluates about 25,000 rows in all (about 19 % of one epoch's
training). The price: an intermediate point's test accuracy has a standard error of about 2.5
percentage points at 80 % accuracy (√(p(1−p)/250)) and its loss about 10 %; the final accuracy ±0.4
points (all 10,000 test rows), the final loss about ±1 %. More epochs make evaluation relatively cheaper
(the snapshot count is fixed); ``--evaluations 0`` skips it.

Measured on the 2-core VM (``leashed train --model cnn --dataset fashion-mnist --algorithm hogwild
--threads 2 --epochs 1``, 21 snapshots): docs/analysis.md, "Evaluation cost".
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leashed.workload import EVAL_TRAIN_ROWS, evaluation_rows

__all__ = ["DENSE_CHUNK_ROWS", "EVAL_CURVE_ROWS", "EVAL_FINAL_TRAIN_ROWS", "EVAL_TRAIN_ROWS", "TASK_ROWS",
           "WORKSPACE_BYTES", "Evaluation", "chunk_rows", "evaluate_snapshots", "loading", "usable_cores"]

#: training rows and test rows on which every snapshot but the final one is evaluated
EVAL_CURVE_ROWS = 250
#: training rows of the final snapshot's loss (a seeded subset of leashed.workload.evaluation_rows)
EVAL_FINAL_TRAIN_ROWS = 5_000
#: target size of one forward workspace (a chunk of rows), bytes: about the L2 cache of the 2-core VM
WORKSPACE_BYTES = 1 << 20
#: rows per forward chunk of a dense model
DENSE_CHUNK_ROWS = 1_000
#: rows per task of the thread pool: small enough that the final snapshot's rows spread over all cores
TASK_ROWS = 2_000


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def chunk_rows(model: Any) -> int:
    """Rows per forward chunk: for a convolutional model (one with an ``input_shape``) the forward-only
    workspace near :data:`WORKSPACE_BYTES` (at least 8 rows), else :data:`DENSE_CHUNK_ROWS`."""
    if getattr(model, "input_shape", None) is None:
        return DENSE_CHUNK_ROWS
    per_row = max(model.work_floats(100, False) / 100.0, 1.0)
    return int(min(DENSE_CHUNK_ROWS, max(8, WORKSPACE_BYTES // (4 * per_row))))


@dataclass
class Evaluation:
    """Per snapshot (in the order given): training loss, test accuracy (NaN where not evaluated or not
    defined), and how many snapshots a stop request left unevaluated; ``rows`` records the row counts."""

    loss: np.ndarray
    accuracy: np.ndarray
    skipped: int = 0
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class _Part:
    snapshot: int
    kind: str  # "loss" or "accuracy"
    X: np.ndarray
    y: Any


def _subset(n: int, k: int, seed: Any) -> np.ndarray:
    """Sorted k of range(n) without replacement, drawn from ``default_rng(seed)`` (all of them if k >= n)."""
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _bar(total: int, desc: str, enabled: bool | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="row", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
                leave=False, disable=(None if enabled is None else not enabled), mininterval=0.2)


@contextmanager
def loading(name: str, enabled: bool | None, verb: str = "loading") -> Iterator[None]:
    """A one-line label (``loading mnist``) on stderr while the data set loads; cleared when done."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=f"{verb} {name}", bar_format="{desc} ...", file=sys.stderr, leave=False,
               disable=(None if enabled is None else not enabled))
    bar.refresh()
    try:
        yield
    finally:
        bar.close()


def evaluate_snapshots(model: Any, thetas: Sequence[np.ndarray], dataset: Any, seed: int, *,
                       progress: bool | None = None, threads: int | None = None,
                       stop: Callable[[], bool] | None = None,
                       curve_rows: int = EVAL_CURVE_ROWS,
                       final_train_rows: int = EVAL_FINAL_TRAIN_ROWS) -> Evaluation:
    """Training loss and test accuracy of every snapshot in ``thetas`` (module docstring).

    The last snapshot is the final one (the full test set, ``final_train_rows`` of
    :func:`leashed.workload.evaluation_rows`); the others use ``curve_rows`` of each. A snapshot with a
    non-finite parameter gets NaN; once ``stop()`` is true no new chunk starts, and the snapshots not
    finished are NaN and counted in ``skipped``.
    ``threads`` defaults to :func:`usable_cores`; ``progress`` shows a tqdm bar (None: on a terminal).
    """
    from threadpoolctl import threadpool_limits

    n = len(thetas)
    loss = np.full(n, math.nan)
    acc = np.full(n, math.nan)
    shared = evaluation_rows(seed, int(dataset.X_train.shape[0]))
    rows = shared[_subset(len(shared), final_train_rows, [seed, 6])]
    X_final = dataset.X_train[rows]
    y_final = None if dataset.y_train is None else dataset.y_train[rows]
    curve = _subset(len(rows), curve_rows, [seed, 4])
    X_curve = X_final[curve]
    y_curve = None if y_final is None else y_final[curve]
    has_test = (dataset.X_test is not None and len(dataset.X_test) > 0 and getattr(dataset, "n_classes", 0))
    X_test = y_test = X_test_curve = y_test_curve = None
    if has_test:
        X_test, y_test = dataset.X_test, dataset.y_test
        tcurve = _subset(len(X_test), curve_rows, [seed, 5])
        X_test_curve, y_test_curve = X_test[tcurve], y_test[tcurve]
    info = {"eval_train_rows": int(len(rows)), "eval_test_rows": int(len(X_test)) if has_test else 0,
            "eval_curve_train_rows": int(len(curve)),
            "eval_curve_test_rows": int(len(X_test_curve)) if has_test else 0}
    parts: list[_Part] = []
    for i, theta in enumerate(thetas):
        if not np.all(np.isfinite(theta)):
            continue
        final = i == n - 1
        sets = [("loss", X_final, y_final) if final else ("loss", X_curve, y_curve)]
        if has_test:
            sets.append(("accuracy", X_test, y_test) if final else ("accuracy", X_test_curve, y_test_curve))
        for kind, X, y in sets:
            for a in range(0, max(len(X), 1), TASK_ROWS):
                parts.append(_Part(i, kind, X[a:a + TASK_ROWS], None if y is None else y[a:a + TASK_ROWS]))
    chunk = chunk_rows(model)
    sums = np.zeros((n, 2))
    counts = np.zeros((n, 2))
    missing = np.zeros(n, dtype=bool)

    def work(part: _Part) -> tuple[_Part, float, float] | None:
        if stop is not None and stop():
            return None
        value_loss, value_acc = model.evaluate(thetas[part.snapshot], part.X, part.y, chunk=chunk)
        return part, float(value_loss), float(value_acc)

    total_rows = sum(max(len(p.X), 1) for p in parts)
    bar = _bar(total_rows, f"evaluate {n} snapshot{'s' * (n != 1)}", progress)
    try:
        with threadpool_limits(limits=1, user_api="blas"), \
                ThreadPoolExecutor(max_workers=threads or usable_cores(),
                                   thread_name_prefix="leashed-eval") as pool:
            for part, got in zip(parts, pool.map(work, parts), strict=True):
                if got is None:
                    missing[part.snapshot] = True
                    continue
                _, value_loss, value_acc = got
                w = max(len(part.X), 1)
                col = 0 if part.kind == "loss" else 1
                sums[part.snapshot, col] += w * (value_loss if col == 0 else value_acc)
                counts[part.snapshot, col] += w
                bar.update(w)
    finally:
        bar.close()
    with np.errstate(invalid="ignore", divide="ignore"):
        done = ~missing
        loss[done] = np.where(counts[done, 0] > 0, sums[done, 0] / counts[done, 0], math.nan)
        acc[done] = np.where(counts[done, 1] > 0, sums[done, 1] / counts[done, 1], math.nan)
    return Evaluation(loss, acc, int(missing.sum()), info)
