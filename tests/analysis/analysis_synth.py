"""Synthetic RunResults for the analysis tests (no simulator or runtime needed)."""

from __future__ import annotations

import numpy as np

from leashed.results import RunResult, Samples, UpdateLog
from leashed.spec import ExperimentSpec


def make_run(staleness: np.ndarray | None = None, *, algorithm: str = "leashed", threads: int = 4,
             source: str = "runtime", wall: float = 2.0, seed: int = 0, n_samples: int = 12,
             drop_every: int = 0, attempts: np.ndarray | None = None, loss_scale: float = 1.0,
             extra: dict | None = None, step_policy: str = "constant") -> RunResult:
    """A RunResult whose committed staleness is ``staleness`` (default: geometric with mean m − 1)."""
    rng = np.random.default_rng(seed)
    if staleness is None:
        staleness = rng.geometric(1.0 / threads, 4000) - 1
    tau = np.asarray(staleness, dtype=np.int64)
    n = len(tau)
    dropped = np.zeros(n, bool)
    if drop_every:
        dropped[::drop_every] = True
    commit = np.cumsum(~dropped) - 1
    commit = np.where(dropped, -1, commit)
    if attempts is None:
        attempts = 1 + rng.geometric(0.7, n) - 1
    attempts = np.where(dropped, 3, attempts)
    t_commit = np.sort(rng.uniform(0, wall, n))
    updates = UpdateLog(thread=np.arange(n) % threads, version_read=np.where(dropped, 0, commit - tau),
                        version_commit=commit, staleness=np.where(dropped, -1, tau), attempts=attempts,
                        dropped=dropped, t_start=t_commit * 0.9, t_grad=t_commit * 0.95, t_commit=t_commit)
    t = np.linspace(0, wall, n_samples)
    loss = loss_scale * (2.3 * np.exp(-t / wall * 3) + 0.1 + 0.01 * rng.random(n_samples))
    acc = 1 - loss / 2.5
    loss[n_samples // 2] = np.nan  # NaN samples must be skipped
    samples = Samples(time=t, version=np.linspace(0, n, n_samples).astype(int),
                      live_vectors=rng.integers(1, threads + 2, n_samples), loss=loss, accuracy=acc)
    kwargs = {}
    if step_policy == "normalised":
        kwargs = {"step_table": (1.0, 0.5)}
    spec = ExperimentSpec(algorithm=algorithm, threads=threads, model="counter", dataset="none",
                          updates=n, seed=seed, step_policy=step_policy, **kwargs)
    applied = int((~dropped).sum())
    return RunResult(spec=spec, source=source, updates=updates, samples=samples,
                     params=np.zeros(3, np.float32),
                     totals={"updates_applied": applied, "updates_dropped": int(dropped.sum()),
                             "cas_failures": int(attempts.sum() - applied), "wall_time_s": wall,
                             "diverged_at": -1, "interrupted": False},
                     metadata={"cpu_model": "Synthetic CPU", "cpu_cores": 8}, extra=extra or {})
