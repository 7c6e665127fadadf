"""Calibration of the simulator from runtime results and a machine file (docs/simulator.md, "Calibrated
predictions").

:func:`calibrate` turns one or more runtime results files of one algorithm (typically runs at m = 1 and
m = 2) plus, optionally, a ``leashed calibrate`` machine file into the simulator's timing model and
machine model for a prediction at m threads:

* **compute** C: the measured t_grad − t_start of the calibration runs whose concurrency is closest to
  the predicted one, min(m, cores) (ties: the larger), over the replicate runs of that thread count,
  because a gradient's time depends on what the other cores do meanwhile (a concurrent run's gradients
  are slower while another core copies the vector they read). By default (``compute_resampling=
  "timeline"``) they are replayed in time order, one block of a run shared by all simulated threads
  (:class:`~leashed.sim.timeline.Timeline`: the machine's speed drifts over milliseconds, for every
  thread alike); ``"pooled"`` draws them independently from the pool of those runs. When the closest
  runs have one thread and the prediction more, the machine file's ``read_slowdown`` (``leashed
  calibrate``) slows a gradient by that share of the time other threads copy its vector, in the
  simulation.
  :func:`read_slowdown_estimate` (one-thread against two-thread runs) is kept in the notes as a check.
* **update**, leashed: the measured durations of *completed* attempts (t_commit − t_attempt of every
  committed update), split by who wrote the vector the attempt copied: the thread itself (*local*: the
  copy comes from its own cache) or another thread (*remote*). Abandoned attempts are not resampled: the
  simulator ends them itself at the competing commit (runtime attempt model), and their measured times
  are kept in the notes as a check. Without remote samples (only m = 1 runs), the remote law is the local
  one scaled by the machine file's axpy_remote_s / axpy_local_s (copy_… for a sparse run, whose attempt is
  a copy), or the local one.
  seqlock: one snapshot try plus the apply, (t_attempt − t_start)/tries + t_commit − t_grad, with the
  copy fraction measured (their share of the copy) unless one is given, and compute = t_grad −
  t_attempt (the runtime records the end of the snapshot as t_attempt). Other algorithms: the
  per-attempt share of t_commit − t_grad of the closest run.
* **machine**: cores from ``--cores``, else the machine file, else the runs' recorded usable cores; the
  background load the runs recorded (``background_load_cores``) unless ``ignore_load``, carried over to
  the thread count predicted as the fair share of the competing threads that took it
  (:func:`carried_load`; ``load_model="fixed"``: their mean), or an explicit value, against the core
  share the compute times' own runs had (``calibrated_share``: the same load at the same concurrency
  adds nothing); time slice and copy concurrency from the machine
  file; the read slowdown given (``read_slowdown``; a concurrent run's compute times then have it taken
  out), else the machine file's when the compute times come from one-thread runs, else 0.

Nothing here looks at the run being predicted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from leashed.algorithms import algorithm as algorithm_entry
from leashed.errors import SpecError
from leashed.sim.machine import DEFAULT_TIME_SLICE_S, Machine, Scheduler, longest_regular_gap, rotation_jitter
from leashed.sim.timeline import Timeline, attempt_timelines, compute_timeline
from leashed.sim.timing import Empirical, Scaled, TimingModel, from_result, measured_copy_fraction

__all__ = ["attempt_masks", "attempt_times", "calibrate", "recorded_machine"]

#: floats a leashed copy handles between two looks at the published word (runtime/_phases.pxd COPY_CHUNK)
COPY_CHUNK_FLOATS = 4096


def attempt_masks(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """Leashed: (local, remote) masks of the committed updates whose completed attempt copied a vector
    the thread itself (or nobody: the initial one) wrote, or another thread."""
    return _attempt_split(result)[:2]


def attempt_times(result: Any) -> dict[str, np.ndarray]:
    """Leashed: completed-attempt durations split by the writer of the copied vector (``local``,
    ``remote``), and the mean abandoned-attempt duration of every update that failed (``abandoned``)."""
    local, remote, done, abandoned = _attempt_split(result)
    return {"local": done[local], "remote": done[remote], "abandoned": abandoned}


def _attempt_split(result: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    log = result.updates
    ok = ~np.asarray(log.dropped, dtype=bool)
    t_attempt = np.asarray(log.t_attempt, dtype=np.float64)
    done = np.asarray(log.t_commit, dtype=np.float64) - t_attempt
    # writer of version v = the thread of the committed update with version_commit == v − 1
    vc = np.asarray(log.version_commit, dtype=np.int64)
    thread = np.asarray(log.thread, dtype=np.int64)
    committed_v = vc[ok]
    writer_of = np.full(int(committed_v.max()) + 2 if len(committed_v) else 1, -1, dtype=np.int64)
    if len(committed_v):
        writer_of[committed_v + 1] = thread[ok]
    base = np.clip(vc, 0, len(writer_of) - 1)
    writer = np.where(ok, writer_of[base], -1)
    local = ok & ((writer == thread) | (writer == -1))
    remote = ok & (writer >= 0) & (writer != thread)
    attempts = np.asarray(log.attempts, dtype=np.int64)
    failed = attempts > 1
    abandoned = np.where(failed, (t_attempt - np.asarray(log.t_grad)) / np.maximum(attempts - 1, 1), np.nan)
    keep = np.isfinite(done) & (done >= 0)
    return local & keep, remote & keep, done, abandoned[failed & ok & np.isfinite(abandoned)]


def read_overlaps(result: Any) -> np.ndarray:
    """Per update: the time other threads' completed attempts spent copying the vector its gradient read
    (the intersection of [t_attempt, t_commit] of every other thread's committed update that copied version
    ``version_read`` with this update's [t_start, t_grad]); seconds."""
    log = result.updates
    ok = ~np.asarray(log.dropped, dtype=bool)
    vr = np.asarray(log.version_read, dtype=np.int64)
    vc = np.asarray(log.version_commit, dtype=np.int64)
    thread = np.asarray(log.thread, dtype=np.int64)
    ts, tg = np.asarray(log.t_start, dtype=np.float64), np.asarray(log.t_grad, dtype=np.float64)
    ta, tc = np.asarray(log.t_attempt, dtype=np.float64), np.asarray(log.t_commit, dtype=np.float64)
    overlap = np.zeros(len(vr))
    order = np.argsort(vr, kind="stable")
    sorted_vr = vr[order]
    for j in np.nonzero(ok)[0]:
        lo, hi = np.searchsorted(sorted_vr, vc[j], "left"), np.searchsorted(sorted_vr, vc[j], "right")
        for g in order[lo:hi]:
            if thread[g] != thread[j]:
                span = min(tg[g], tc[j]) - max(ts[g], ta[j])
                if span > 0:
                    overlap[g] += span
    return overlap


def _bulk_mean(values: np.ndarray) -> float:
    """Mean of the values within 5 median absolute deviations above the median (descheduled phases out)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return float(values[values <= median + 5 * max(mad, 1e-12)].mean())


def read_slowdown_estimate(concurrent: Any, single: Any) -> tuple[float, float]:
    """(s, mean overlap): the slowdown of a gradient per second another thread spends copying its vector,
    s = (E[C | concurrent run] − E[C | one-thread run]) / E[overlap | concurrent run] (bulk means,
    :func:`_bulk_mean`; overlaps from :func:`read_overlaps`), clipped to [0, 1]: a copy never speeds a
    gradient up, nor costs it more than the time it overlaps. 0 when nothing overlaps."""
    c_many = _bulk_mean(np.asarray(concurrent.updates.t_grad - concurrent.updates.t_start, dtype=np.float64))
    c_one = _bulk_mean(np.asarray(single.updates.t_grad - single.updates.t_start, dtype=np.float64))
    overlap = float(read_overlaps(concurrent).mean()) if len(concurrent.updates) else 0.0
    if not (overlap > 0 and math.isfinite(c_many) and math.isfinite(c_one)):
        return 0.0, overlap
    return min(max((c_many - c_one) / overlap, 0.0), 1.0), overlap


def recorded_machine(result: Any) -> dict[str, Any]:
    """The machine record a runtime run carries (``metadata["machine"]``), or {}."""
    record = (result.metadata or {}).get("machine")
    return record if isinstance(record, dict) else {}


def switch_cost(profile: Any, time_slice_s: float) -> float:
    """The switch cost of a machine file: its ``switch_gap_s`` (one thread's last clock read in its turn
    to the next thread's first, docs/machine.md), if it is under a tenth of the time slice. A longer gap
    is other processes that ran in between (a loaded machine), which the background load already
    accounts for: 0 then."""
    gap = float(_profile_value(profile, "switch_gap_s", 0.0) or 0.0)
    return gap if 0.0 < gap < 0.1 * time_slice_s else 0.0


def _time_shared_share(result: Any, cores: int) -> float:
    """The core share of a run's threads for reading its gaps: min(1, (P − L)/m) with its recorded load L,
    taken as 0 when under a tenth of the cores (the load probe's resolution is a 10 ms tick per core,
    and a small L would move the rotation's longest gap from 1 slice to 2)."""
    load = float(recorded_machine(result).get("background_load_cores") or 0.0)
    return Scheduler.thread_share(int(result.spec.threads), cores, load if load >= 0.1 * cores else 0.0)


def run_irregular_share(result: Any, cores: int, time_slice_s: float) -> tuple[float, int] | None:
    """(share, gaps) of a runtime run's off-core gaps that are longer than the exact rotation keeps a
    thread off (:func:`leashed.sim.machine.irregular_share`), or None when its threads did not time-share
    the cores. A gap is read off each thread's commit times: an interval k slices (q = ``time_slice_s``)
    longer than the thread's median interval, k = round(excess / q) ≥ 1."""
    m = int(result.spec.threads)
    share = _time_shared_share(result, cores)
    if share >= 1.0 or len(result.updates) < 2:
        return None
    longest = longest_regular_gap(share)
    gaps = long = 0
    u = result.updates
    for j in range(m):
        times = np.sort(np.asarray(u.t_commit[(u.thread == j) & ~u.dropped], dtype=np.float64))
        if len(times) < 3:
            continue
        intervals = np.diff(times)
        slices = np.rint((intervals - np.median(intervals)) / time_slice_s)
        gaps += int(np.count_nonzero(slices >= 1))
        long += int(np.count_nonzero(slices > longest))
    return (long / gaps, gaps) if gaps else None


def rotation_readings(results: Sequence[Any], cores: int,
                      time_slice_s: float) -> list[tuple[float, int, float]]:
    """(irregular share, gaps, rotation jitter) of each run whose threads time-shared the cores: its
    :func:`run_irregular_share` and the jitter read off the model's curve at that run's thread count and
    share (:func:`leashed.sim.machine.rotation_jitter`)."""
    readings = []
    for r in results:
        measured = run_irregular_share(r, cores, time_slice_s)
        if measured is not None:
            share, gaps = measured
            jitter = rotation_jitter(share, int(r.spec.threads), _time_shared_share(r, cores))
            readings.append((share, gaps, jitter))
    return readings


def measured_rotation_jitter(results: Sequence[Any], cores: int,
                             time_slice_s: float) -> tuple[float, dict[str, Any]]:
    """The rotation jitter (:class:`~leashed.sim.machine.JitteredScheduler`) of the calibration runs whose
    threads time-shared the cores: their :func:`rotation_readings`, weighted by their gaps; (0, {}) when
    none time-shared. The jitter depends on what the threads do (on the 2-core VM about one gap in eight
    is irregular with 4 MLP threads, about one in two with 4 threads that only copy or spin), so it comes
    from runs of the model predicted, not from a micro-benchmark."""
    readings = rotation_readings(results, cores, time_slice_s)
    if not readings:
        return 0.0, {}
    shares = [round(share, 4) for share, _, _ in readings]
    return pooled_jitter(readings), {"rotation_irregular_share": shares}


def pooled_jitter(readings: Sequence[tuple[float, int, float]]) -> float:
    """The gap-weighted mean jitter of :func:`rotation_readings`."""
    return sum(jitter * gaps for _, gaps, jitter in readings) / sum(gaps for _, gaps, _ in readings)


def _profile_value(profile: Any, name: str, default: Any = None) -> Any:
    if profile is None:
        return default
    value = getattr(profile, name, None)
    return default if value is None else value


#: calibration runs whose recorded load is at least this share of the cores, and took their threads off
#: their cores, have their stalled phases taken out (:func:`leashed.sim.timeline.destall`)
LOADED_FRACTION = 0.1

#: how a recorded background load carries over to another thread count (``--load-model``)
LOAD_MODELS = ("competing", "fixed")


def competing_threads(load: float, threads: int, cores: int) -> float:
    """B, the busy threads of other processes that take ``load`` cores' worth from ``threads`` busy threads
    on ``cores`` cores when the kernel shares the cores fairly among all c + B of them: L = B while
    c + B <= P, else L = P·B/(c + B), so B = c·L/(P − L). A load of 0.9 P or more reads as 0.9 P."""
    if load <= 0 or cores < 1:
        return 0.0
    load = min(float(load), 0.9 * cores)
    if threads + load <= cores:
        return load
    return threads * load / (cores - load)


def competing_load(competitors: float, threads: int, cores: int) -> float:
    """The cores' worth ``competitors`` busy threads (:func:`competing_threads`) take from ``threads`` busy
    threads on ``cores`` cores, sharing them fairly."""
    if competitors <= 0 or cores < 1:
        return 0.0
    if threads + competitors <= cores:
        return float(competitors)
    return cores * competitors / (threads + competitors)


def carried_load(results: Sequence[Any], threads: int, cores: int | None,
                 model: str = "competing") -> tuple[float, dict[str, Any]]:
    """The background load for predicting ``threads`` threads from the loads the calibration runs recorded
    (0 when none did), and notes. ``fixed``: their mean, whatever the thread count. ``competing`` (the
    default): each run's load as the busy threads of other processes that took it
    (:func:`competing_threads`), their mean B, and the share B takes from ``threads`` threads. A
    CPU-bound competitor takes its fair share, one thread among m + B: a busy loop on one of 2 cores
    took 1.01, 0.66, 0.51, 0.42 and 0.25 cores from 1, 2, 3, 4 and 8 MLP threads (2B/(m + B) with B = 1:
    1, 0.67, 0.5, 0.4, 0.22), so a fixed load read off two-thread runs gives 8 threads 0.4 cores too
    little."""
    if model not in LOAD_MODELS:
        raise SpecError(f"load model must be one of {', '.join(LOAD_MODELS)}, not {model!r}")
    pairs = [(load, int(r.spec.threads)) for r in results if (load := _recorded_load(r)) is not None]
    if not pairs:
        return 0.0, {}
    recorded = float(np.mean([v for v, _ in pairs]))
    if model == "fixed" or not cores:
        return recorded, {"load_model": "fixed", "recorded_load": recorded}
    competitors = float(np.mean([competing_threads(v, c, cores) for v, c in pairs]))
    load = competing_load(competitors, threads, cores)
    return load, {"load_model": "competing", "recorded_load": recorded,
                  "competing_threads": competitors}


def _recorded_load(result: Any) -> float | None:
    """The background load (cores' worth) a run recorded; None where it recorded no valid one."""
    value = recorded_machine(result).get("background_load_cores")
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _recorded_loads(results: Sequence[Any]) -> list[float]:
    """The background load (cores' worth) each run recorded, where it recorded a valid one."""
    return [load for r in results if (load := _recorded_load(r)) is not None]


def stripe_scale(m_cal: int, m: int) -> float:
    """How much longer a sync thread's stripe is at m threads than at m_cal (papers.md §2, SYNC).

    Each of m threads applies 1/m of the n coordinates, but sums all m gradients over them: it reads n
    gradient floats (m stripes of n/m) and reads and writes n/m of θ, n·(1 + 2/m) floats in all
    (``runtime/_loops.pyx`` ``loop_sync``). So the stripe shrinks only from 2n at m = 2 to 1.25n at
    m = 8: ×0.625, not the ×0.25 of the coordinates alone, which predicted m = 8 on 2 cores 12 % fast
    (its 8 stripes of a round share the 2 cores)."""
    return (1.0 + 2.0 / m) / (1.0 + 2.0 / m_cal)


def calibrate(results: Sequence[Any], sources: Sequence[str], threads: int, *,
              copy_fraction: float | None = None,
              bus_contention: float = 0.0, profile: Any = None, cores: int | None = None,
              background_load: float | None = None, ignore_load: bool = False,
              machine_model: bool = True, compute_resampling: str = "timeline",
              read_slowdown: float | None = None,
              load_model: str = "competing") -> tuple[TimingModel, Machine]:
    """The timing and machine models for predicting ``threads`` threads (module docstring)."""
    if not results:
        raise SpecError("calibration needs at least one runtime results file")
    algorithms = {r.spec.algorithm for r in results}
    if len(algorithms) > 1:
        raise SpecError(f"calibration files must be of one algorithm, not {', '.join(sorted(algorithms))}")
    for r, src in zip(results, sources, strict=True):
        if r.source != "runtime":
            raise SpecError(f"{src} is a simulator result; calibrate from runtime results")
        if len(r.updates) == 0:
            raise SpecError(f"{src} has no recorded updates to calibrate from")
    # cores of the machine
    record_cores = [recorded_machine(r).get("usable_cores") for r in results]
    record_cores = [int(c) for c in record_cores if isinstance(c, int) and c > 0]
    if cores is None:
        cores = _profile_value(profile, "cores") or (min(record_cores) if record_cores else None)
    concurrency = min(threads, cores) if cores else threads
    by_closeness = sorted(range(len(results)),
                          key=lambda i: (abs(min(results[i].spec.threads, cores or 10**9) - concurrency),
                                         -results[i].spec.threads))
    closest = by_closeness[0]
    # the closest thread count's runs, pooled (replicate runs average out the machine's drift)
    group = [i for i in range(len(results)) if results[i].spec.threads == results[closest].spec.threads]
    fractions = [f for f in (measured_copy_fraction(results[i]) for i in group) if f is not None]
    measured_fraction = float(np.mean(fractions)) if fractions else None  # seqlock measures its copy
    if copy_fraction is None:  # the others split U at 0.5 unless one is given
        copy_fraction = 0.5 if measured_fraction is None else measured_fraction
    parts = [from_result(results[i], source=sources[i], copy_fraction=copy_fraction,
                         bus_contention=bus_contention) for i in group]
    base = parts[0]
    names = ", ".join(sources[i] for i in group)
    members = [results[i] for i in group]
    concurrent_group = results[closest].spec.threads > 1
    given = None  # an explicit read slowdown (machine model only)
    if machine_model and read_slowdown is not None:
        given = float(read_slowdown)
        if not (math.isfinite(given) and given >= 0):
            raise SpecError(f"read slowdown must be a number >= 0, not {read_slowdown!r}")
    # a load that took the compute times' own threads off their cores (a share of a core below 1): their
    # stalled phases are taken out and the scheduler puts the load back at the m predicted
    own = _recorded_loads(members)
    own_load = float(np.mean(own)) if own else 0.0
    slice_s = float(_profile_value(profile, "time_slice_s", DEFAULT_TIME_SLICE_S))
    own_share = Scheduler.thread_share(min(int(results[closest].spec.threads), cores), cores, own_load) \
        if cores else 1.0
    destall_s = slice_s / 2 if (machine_model and compute_resampling == "timeline" and cores
                                and own_load >= LOADED_FRACTION * cores and own_share < 1.0) else None
    stalls: list[int] = []
    if compute_resampling == "timeline":
        # a given slowdown: the concurrent runs' compute times hold it where copies overlapped them; take
        # it out, the simulator adds it back where the simulated copies overlap
        subtract = [given * read_overlaps(r) for r in members] if concurrent_group and given else None
        compute = compute_timeline(members, names, subtract=subtract, destall_s=destall_s, counts=stalls)
    elif compute_resampling == "pooled":
        compute = base.compute if len(parts) == 1 else Empirical(
            np.concatenate([p.compute.samples for p in parts]), f"{names} (compute)")
    else:
        raise SpecError(f"compute resampling must be 'timeline' or 'pooled', not {compute_resampling!r}")
    update = base.update if len(parts) == 1 else Empirical(
        np.concatenate([p.update.samples for p in parts]), f"{names} (update)")
    if algorithm_entry(results[0].spec.algorithm).versions_are_rounds \
            and int(results[closest].spec.threads) != threads:
        update = Scaled(update, stripe_scale(int(results[closest].spec.threads), threads))
    notes: dict[str, Any] = {**base.notes, "calibrated_from": ", ".join(sources), "compute_from": names,
                             "calibration_threads": [int(r.spec.threads) for r in results],
                             "calibration_samples": int(len(compute.samples)),
                             "compute_resampling": compute_resampling}
    if measured_fraction is not None:
        notes["copy_fraction_measured"] = measured_fraction
    if isinstance(compute, Timeline):
        notes["timeline_block_s"] = compute.block_s
    remote = None
    singles = [i for i, r in enumerate(results) if r.spec.threads == 1]
    if results[0].spec.algorithm == "leashed" and results[closest].spec.threads > 1 and singles:
        # information only: how much slower a concurrent run's gradients are, per second of overlap
        estimate, overlap = read_slowdown_estimate(results[closest], results[singles[0]])
        notes.update({"read_slowdown_estimated": estimate, "read_overlap_mean_s": overlap,
                      "read_slowdown_from": f"{sources[closest]} vs {sources[singles[0]]}"})
    if results[0].spec.algorithm == "leashed":
        pools = [attempt_times(r) for r in results]
        local = np.concatenate([p["local"] for p in pools])
        far = np.concatenate([p["remote"] for p in pools])
        abandoned = np.concatenate([p["abandoned"] for p in pools])
        if len(local) == 0 and len(far) == 0:
            raise SpecError("the calibration files have no completed leashed attempts")
        if len(local) == 0:
            local = far
        update = Empirical(local, f"{notes['calibrated_from']} (local attempts)")
        if len(far):
            remote = Empirical(far, f"{notes['calibrated_from']} (remote attempts)")
        else:
            # a dense attempt is one pass dst = L − α·g (axpy); a sparse one copies L, then applies K pairs
            kind = "axpy" if results[0].spec.sparsifier == "none" else "copy"
            ratio = (_profile_value(profile, f"{kind}_remote_s", 0.0)
                     / _profile_value(profile, f"{kind}_local_s", 1.0) if profile is not None else 1.0)
            notes["remote_law"] = f"local law x {kind}_remote_s / {kind}_local_s = {ratio:.3g}" \
                if profile is not None else "local law (no remote samples, no machine file)"
            remote = Scaled(update, float(ratio)) if ratio and ratio != 1.0 else None
        notes.update({"attempt_samples_local": int(len(local)), "attempt_samples_remote": int(len(far)),
                      "attempt_local_mean_s": float(local.mean()),
                      "attempt_remote_mean_s": float(far.mean()) if len(far) else None,
                      "abandoned_attempt_mean_s": float(abandoned.mean()) if len(abandoned) else None,
                      "abandoned_attempt_samples": int(len(abandoned))})
        d = int(results[0].extra.get("n_params") or len(results[0].params) or 0)
        if d:
            notes["copy_chunks"] = int(math.ceil(d / COPY_CHUNK_FLOATS))
    timing = TimingModel(compute, update, copy_fraction, bus_contention, notes=notes,
                         update_remote=remote)
    if isinstance(timing.compute, Timeline) and results[0].spec.algorithm == "leashed":
        # the attempts replayed on the compute times' block schedule: a machine's speed is the same for
        # its gradients and its copies, and the laws of one run differ from another's
        masks = [attempt_masks(r) for r in members]
        local, far = attempt_timelines(members, timing.compute, [k[0] for k in masks], [k[1] for k in masks],
                                       destall_s=destall_s, counts=stalls)
        if local is not None:
            remote_law = far if far is not None else timing.update_remote
            timing = replace(timing, update=local, update_remote=remote_law)
            timing.notes["attempt_resampling"] = "timeline"
    if not machine_model:
        return timing, Machine()
    load_notes: dict[str, Any] = {}
    if load_model not in LOAD_MODELS:
        raise SpecError(f"load model must be one of {', '.join(LOAD_MODELS)}, not {load_model!r}")
    if background_load is None:
        background_load = 0.0
        if not ignore_load:
            background_load, load_notes = carried_load(results, threads, cores, load_model)
    slowdown = given
    if slowdown is None:
        slowdown = 0.0  # a concurrent run's compute times hold it
        if not concurrent_group and concurrency > 1:
            slowdown = max(float(_profile_value(profile, "read_slowdown", 0.0)), 0.0)
    concurrent = tuple(float(v) for v in (_profile_value(profile, "copy_concurrent_s", ()) or ()))
    # the core share the compute times' own runs had (their recorded load, their concurrency); 1 once
    # their stalls are taken out
    calibrated_share = 1.0
    if cores and own and destall_s is None:
        calibrated_share = own_share
    if destall_s is not None:
        timing.notes["destalled"] = {"threshold_s": destall_s, "phases": int(sum(stalls)),
                                     "calibration_load": own_load}
    jitter, jitter_notes = 0.0, {}
    if cores and profile is not None:  # the slice is the machine file's: without one, no gap is measurable
        jitter, jitter_notes = measured_rotation_jitter(results, cores, slice_s)
        measured = _profile_value(profile, "rotation_jitter")
        if not jitter_notes and measured is not None:  # leashed calibrate --from RUN.npz measured it
            jitter, jitter_notes = float(measured), {"rotation_jitter_from": "machine file"}
    machine = Machine(cores=cores, time_slice_s=slice_s, switch_cost_s=switch_cost(profile, slice_s),
                      background_load=float(background_load), read_slowdown=slowdown,
                      copy_concurrency=concurrent,
                      calibrated_concurrency=max(1, min(max(r.spec.threads for r in results), cores or 1)),
                      calibrated_share=calibrated_share,
                      rotation_jitter=jitter,
                      notes={"machine_file": _profile_value(profile, "source", None) if profile else None,
                             **jitter_notes, **load_notes})
    return timing, machine
