"""Helpers of the simulator tests (a unique module name: the test folders are not packages)."""

from __future__ import annotations

from typing import Any

import numpy as np

from leashed.sim.simulate import Simulation, run_simulation
from leashed.spec import ExperimentSpec


def spec_of(algorithm: str, m: int, n: int, compute: str, update: str, persistence: Any = "inf",
            seed: int = 0, **fields: Any) -> ExperimentSpec:
    fields.setdefault("model", "counter")
    fields.setdefault("dataset", "none")
    return ExperimentSpec(algorithm=algorithm, threads=m, updates=n, persistence=persistence,
                          compute_time=compute, update_time=update, seed=seed, **fields)


def sim(algorithm: str, m: int, n: int, compute: str, update: str, persistence: Any = "inf", seed: int = 0,
        samples: int = 50, **fields: Any) -> Simulation:
    """A timing-only simulation without machine metadata (fast)."""
    spec = spec_of(algorithm, m, n, compute, update, persistence, seed, **fields)
    return run_simulation(spec, samples=samples, metadata=False)


def exited_before(sim_: Simulation, instants: np.ndarray, committer: np.ndarray) -> np.ndarray:
    """For each instant, how many threads other than ``committer`` had finished their last gradient at
    or before it (they hold no open read->commit window any more)."""
    u = sim_.result.updates
    m = sim_.result.spec.threads
    last = np.array([u.t_commit[u.thread == i].max() for i in range(m)])
    counts = np.searchsorted(np.sort(last), instants, side="right")
    own = last[committer] <= instants
    return counts - own


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)
