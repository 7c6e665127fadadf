"""How the scheduler rotates a model's own threads when they outnumber the cores (``leashed calibrate --from
RUN.npz``; issue 13, docs/machine.md ``rotation_jitter``).

With more busy threads than cores a real scheduler does not keep an exact rotation: on the 2-core VM
about one off-core gap in nine of 4 MLP threads lasted two slices where the rotation has one. How often
depends on what the threads do (4 threads that only read the clock or copy a vector broke the rotation
in about half their gaps; docs/simulator.md, "The machine model"), so no workload-free micro-benchmark
can measure it. This module runs RUN's own spec again with 2P threads on the P usable cores and
reads the share of irregular gaps off their commit times and the simulator's rotation jitter off
that (:func:`leashed.sim.calibration.rotation_readings`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: algorithms whose threads never block, so that their gaps are the scheduler's (papers.md §2)
ROTATING = ("leashed", "hogwild")
#: the longest rotation run (seconds of RUN's rate); RUN's own length below it
MAX_SECONDS = 5.0
#: rotation runs in all: about this many seconds of them, and between MIN_RUNS and MAX_RUNS runs
TOTAL_SECONDS = 6.0
MIN_RUNS, MAX_RUNS = 3, 12


def rotation_run_updates(result: Any, cores: int, max_seconds: float = MAX_SECONDS) -> int | None:
    """Updates of one rotation run: RUN's own (None: keep its spec's length), or about ``max_seconds`` of
    RUN's commit rate when RUN ran longer. The length matters: the kernel's rotation settles over a
    second or so (in 3-epoch MLP runs at m = 4 on the 2-core VM 19.5 %, 16 % and 11 % of the gaps of
    their first, second and last thirds were irregular, and 3 % in a 2.4 s run), so the rotation is
    measured over runs as long as the runs predicted."""
    wall = float(result.totals.get("wall_time_s") or 0.0)
    applied = int(result.totals.get("updates_applied") or 0)
    if wall <= max_seconds or applied <= 0:
        return None
    return max(400, int(applied / wall * max_seconds))


def rotation_repeats(result: Any, max_seconds: float = MAX_SECONDS,
                     total_seconds: float = TOTAL_SECONDS) -> int:
    """How many rotation runs: about ``total_seconds`` of them at RUN's length (:func:`rotation_run_updates`),
    at least MIN_RUNS, at most MAX_RUNS. The irregular share varies far more between runs than its
    count of gaps suggests: twelve 0.45 s runs of 4 MLP threads on the 2-core VM read 0 to 0.31 (mean
    0.10, standard deviation 0.09, one run in a separate process each time and one in-process: both
    means 0.10-0.11), so three runs put the share within about ±0.05 and the jitter within about
    ±0.17 (one standard error), twelve within ±0.026 and ±0.09."""
    wall = float(result.totals.get("wall_time_s") or 0.0)
    length = min(wall, max_seconds) if wall > 0 else max_seconds
    return int(min(MAX_RUNS, max(MIN_RUNS, round(total_seconds / length))))


def rotation_runs(result: Any, cores: int, repeats: int | None,
                  say: Callable[[str], None]) -> tuple[list[Any], dict[str, Any]]:
    """``repeats`` runs (None: :func:`rotation_repeats`) of RUN's spec with 2P threads on the P cores, each
    as long as RUN (:func:`rotation_run_updates`), and their notes; no runs (and a note why) when RUN's
    algorithm blocks its threads or RUN is not a threads-backend run. Ctrl-C or SIGTERM during a run
    raises KeyboardInterrupt (nothing is written).

    ``leashed calibrate`` makes these runs before its micro-benchmarks: made after them, in the same
    process, the runs' gaps were irregular more often (pooled shares 0.115 and 0.136 against 0.081 and
    0.086, twelve runs each, 4 MLP threads on the 2-core VM; separate ``leashed train`` processes read
    0.05 and 0.09)."""
    from leashed import interrupts
    from leashed.runtime.run import run

    spec = result.spec
    if spec.algorithm not in ROTATING:
        return [], {"rotation": f"not measured: {spec.algorithm} threads block (leashed or hogwild runs "
                                f"only)"}
    if spec.backend != "threads":
        return [], {"rotation": f"not measured: a {spec.backend} run (threads backend runs only)"}
    threads = 2 * cores
    if repeats is None:
        repeats = rotation_repeats(result)
    updates = rotation_run_updates(result, cores)
    length = updates or int(result.totals.get("updates_applied") or 0)
    say(f"scheduler rotation: {repeats} x {threads} threads of {spec.algorithm} {spec.model} on {cores} "
        f"cores ({length} updates{'' if updates else ', as RUN'})")
    runs = []
    for k in range(repeats):
        changes: dict[str, Any] = {"threads": threads, "evaluations": 0, "seed": spec.seed + 7919 + k}
        if updates:
            changes["updates"] = updates
        shared = run(spec.replace(**changes), progress=False)
        if shared.totals.get("interrupted") or interrupts.requested():
            raise KeyboardInterrupt
        runs.append(shared)
    notes = {"rotation_run": {"algorithm": spec.algorithm, "model": spec.model, "threads": threads,
                              "runs": repeats,
                              "updates": [int(r.totals.get("updates_applied") or 0) for r in runs],
                              "wall_time_s": [float(r.totals.get("wall_time_s") or 0.0) for r in runs]}}
    return runs, notes


def read_rotation(runs: list[Any], cores: int, time_slice_s: float,
                  notes: dict[str, Any]) -> tuple[float | None, float | None, dict[str, Any]]:
    """(irregular share, rotation jitter, notes) of the :func:`rotation_runs`, their gaps read with the time
    slice ``time_slice_s`` (:func:`leashed.sim.calibration.rotation_readings`); (None, None, notes) when
    there were none or nothing time-shared."""
    from leashed.sim.calibration import pooled_jitter, rotation_readings

    notes = dict(notes)
    if not runs:
        return None, None, notes
    readings = rotation_readings(runs, cores, time_slice_s)
    if not readings:
        notes["rotation"] = "not measured: the rotation runs' threads did not time-share the cores"
        return None, None, notes
    gaps = sum(g for _, g, _ in readings)
    notes["rotation_run"] = {**notes["rotation_run"], "gaps": gaps}
    return sum(share * g for share, g, _ in readings) / gaps, pooled_jitter(readings), notes

