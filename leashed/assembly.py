"""Rules both real engines (the threaded runtime, the MPI backend) share when they turn their workers'
per-update records into a result: the commit order of the update log and the counter model's lost updates.

The engines used to keep one copy each (``runtime/run.py`` and ``runtime/mpi_backend.py``); the copies had
drifted: the runtime placed a dropped gradient one commit too late. Both now call these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from leashed.results import UPDATE_FIELDS, UpdateLog
from leashed.spec import ExperimentSpec

__all__ = ["commit_order", "lost_updates"]


def commit_order(parts: Sequence[Mapping[str, np.ndarray]]) -> UpdateLog:
    """The workers' records (``parts``: one dict of equal-length arrays per worker or one for all, with the
    fields of :data:`leashed.results.UPDATE_FIELDS`, times in seconds) as one :class:`UpdateLog` in commit
    order: committed updates by version at commit (ties, e.g. a sync round's, keep their order in the
    concatenation: the runtime passes its records in ticket order); each dropped gradient is placed by the
    time it was abandoned, after the commits made by then (papers.md §2.1)."""
    if not parts:  # e.g. every MPI worker's records lost (runtime/mpi_health.py)
        return UpdateLog(**{name: np.zeros(0, dtype) for name, dtype in UPDATE_FIELDS.items()})
    cat = {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}
    dropped = np.asarray(cat["dropped"], dtype=bool)
    committed = np.flatnonzero(~dropped)
    committed = committed[np.argsort(cat["version_commit"][committed], kind="stable")]
    gone = np.flatnonzero(dropped)
    gone = gone[np.argsort(cat["t_commit"][gone], kind="stable")]
    times = np.maximum.accumulate(cat["t_commit"][committed]) if len(committed) else np.zeros(0)
    where = np.searchsorted(times, cat["t_commit"][gone], side="right")
    order = np.insert(committed, where, gone) if len(gone) else committed
    out = {name: values[order] for name, values in cat.items()}
    out["dropped"] = out["dropped"].astype(bool)
    return UpdateLog(**out)


def lost_updates(spec: ExperimentSpec, params: np.ndarray, applied: int, theta0: np.ndarray | None = None,
                 sparse: Mapping[str, np.ndarray] | None = None) -> tuple[float | None, dict]:
    """Counter model, lr 1, constant steps (papers.md §6.2 T9): every applied step adds exactly 1 to every
    coordinate, so a coordinate short of ``applied`` lost that many updates (HOGWILD!'s racing stores);
    returns (mean lost, {min, max}) or (None, {}) when the rule does not apply.

    Sparse runs (papers.md §5) need ``theta0`` and the threads' applied mass ``sparse["applied_sum"]`` (an
    applied step adds its selected values' magnitudes to K coordinates only): the result is the mean lost
    per coordinate, (applied mass − gained mass) / d, which equals the dense definition's mean; no min /
    max. A sparse run without them (the MPI backend) is not counted."""
    from leashed.models.registry import model_descriptor

    if (not model_descriptor(spec.model).counts_updates or spec.step_policy != "constant" or spec.lr != 1.0
            or not len(params)):
        return None, {}
    if applied >= 2**24 or not np.all(np.isfinite(params)):
        return None, {}
    if spec.sparsifier != "none":
        if sparse is None or theta0 is None:
            return None, {}
        expected = float(theta0.astype(np.float64).sum() - np.sum(sparse["applied_sum"]))
        return (expected - float(params.astype(np.float64).sum())) / len(params), {}
    lost = applied - params.astype(np.float64)
    return float(lost.mean()), {"lost_updates_min": float(lost.min()), "lost_updates_max": float(lost.max())}
