"""How the scheduler rotates a model's own threads when they outnumber the cores (``leashed calibrate --from
RUN.npz``; issue 13, docs/machine.md ``rotation_jitter``).

With more busy threads than cores a real scheduler does not keep an exact rotation: on the 2-core VM
about one off-core gap in nine of 4 MLP threads lasted two slices where the rotation has one. How often
depends on what the threads do (4 threads that only read the clock or copy a vector broke the rotation
in about half their gaps; docs/simulator.md, "The machine model"), so no workload-free micro-benchmark
can measure it. This module runs RUN's own spec for a moment with 2P threads on the P usable cores and
reads the share of irregular gaps off their commit times (:func:`leashed.sim.calibration.run_irregular_share`)
and the simulator's rotation jitter off that (:func:`leashed.sim.calibration.measured_rotation_jitter`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: algorithms whose threads never block, so that their gaps are the scheduler's (papers.md §2)
ROTATING = ("leashed", "hogwild")
#: the largest rotation run (updates), whatever RUN's rate
MAX_UPDATES = 50_000


def rotation_run_updates(result: Any, cores: int, seconds: float) -> int:
    """Updates for about ``seconds`` of 2P threads: RUN's commit rate (per usable core) times P."""
    wall = float(result.totals.get("wall_time_s") or 0.0)
    applied = int(result.totals.get("updates_applied") or 0)
    per_core = applied / wall / max(1, min(int(result.spec.threads), cores)) if wall > 0 else 0.0
    return int(min(MAX_UPDATES, max(400, per_core * cores * seconds)))


def measure_rotation(result: Any, cores: int, time_slice_s: float, seconds: float,
                     say: Callable[[str], None]) -> tuple[float | None, float | None, dict[str, Any]]:
    """(irregular share, rotation jitter, notes) of RUN's model with 2P threads on the P cores for about
    ``seconds``; (None, None, notes) when RUN's algorithm blocks its threads or nothing time-shared.
    Ctrl-C or SIGTERM during the run raises KeyboardInterrupt (nothing is written)."""
    from leashed import interrupts
    from leashed.runtime.run import run
    from leashed.sim.calibration import measured_rotation_jitter, run_irregular_share

    spec = result.spec
    if spec.algorithm not in ROTATING:
        return None, None, {"rotation": f"not measured: {spec.algorithm} threads block (leashed or hogwild "
                                        f"runs only)"}
    threads = 2 * cores
    updates = rotation_run_updates(result, cores, seconds)
    say(f"scheduler rotation: {threads} threads of {spec.algorithm} {spec.model} on {cores} cores "
        f"({updates} updates)")
    shared = run(spec.replace(threads=threads, updates=updates, evaluations=0, seed=spec.seed + 7919),
                 progress=False)
    if shared.totals.get("interrupted") or interrupts.requested():
        raise KeyboardInterrupt
    notes = {"rotation_run": {"algorithm": spec.algorithm, "model": spec.model, "threads": threads,
                              "updates": int(shared.totals.get("updates_applied") or 0),
                              "wall_time_s": float(shared.totals.get("wall_time_s") or 0.0)}}
    measured = run_irregular_share(shared, cores, time_slice_s)
    if measured is None:
        notes["rotation"] = "not measured: the rotation run's threads did not time-share the cores"
        return None, None, notes
    notes["rotation_run"]["gaps"] = measured[1]
    jitter, _ = measured_rotation_jitter([shared], cores, time_slice_s)
    return measured[0], jitter, notes
