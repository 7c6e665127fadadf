"""Replicate simulations: the same spec under several seeds, for the intervals of ``leashed compare``.

A simulation is cheap, so a prediction is simulated under R seeds (``seed``, ``seed + 1``, ...). The file
keeps the first replicate's records and, in ``extra["replicates"]``, one summary per replicate (keys
``seed``, ``updates_per_s``, ``cas_failure_fraction`` (None without CAS), ``staleness_mean``,
``staleness_var``, ``staleness_hist``); ``leashed compare`` treats them as replicate runs of the predicted
side (docs/analysis.md). ``extra["replicates_resample_calibration"]`` is True when each seed replays its
own resample of several calibration runs (:mod:`leashed.sim.timeline`): the replicates' spread is then
the prediction's own uncertainty.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leashed import algorithms
from leashed.sim.simulate import Simulation, run_simulation
from leashed.sim.timeline import Timeline
from leashed.spec import ExperimentSpec

__all__ = ["replicate_summary", "run_replicates"]


def replicate_summary(result: Any) -> dict[str, Any]:
    """The per-replicate summary stored in ``extra["replicates"]``."""
    tau = result.staleness
    attempts = float(result.updates.attempts.sum())
    applied = float(result.updates.committed.sum())
    has_cas = algorithms.algorithm(result.spec.algorithm).has_cas
    return {
        "seed": int(result.spec.seed),
        "updates_per_s": result.summary().get("updates_per_s"),
        "cas_failure_fraction": ((attempts - applied) / attempts) if has_cas and attempts > 0 else None,
        "staleness_mean": float(tau.mean()) if len(tau) else None,
        "staleness_var": float(tau.var()) if len(tau) else None,
        "staleness_hist": np.bincount(tau).tolist() if len(tau) else [],
    }


def run_replicates(spec: ExperimentSpec, timing: Any, *, replicates: int = 1, gradients: bool = False,
                   samples: int = 500, progress: bool = False) -> Simulation:
    """Simulate ``spec`` under ``replicates`` seeds; the first one's Simulation, with every replicate's
    summary in ``result.extra["replicates"]`` (module docstring)."""
    first = run_simulation(spec, timing, gradients=gradients, samples=samples, progress=progress)
    summaries = [replicate_summary(first.result)]
    for r in range(1, replicates):
        other = run_simulation(spec.replace(seed=spec.seed + r), timing, gradients=gradients, samples=samples,
                               progress=progress, metadata=False)
        summaries.append(replicate_summary(other.result))
    first.result.extra["replicates"] = summaries
    # a calibrated prediction whose seeds replay resamples of several runs (leashed.sim.timeline): the
    # replicates' spread is the prediction's uncertainty (leashed compare, docs/analysis.md)
    compute = getattr(timing, "compute", None)
    first.result.extra["replicates_resample_calibration"] = bool(
        replicates >= 2 and isinstance(compute, Timeline) and len(compute.runs) > 1)
    return first
