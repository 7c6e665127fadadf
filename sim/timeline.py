"""Measured compute times replayed on the simulated clock, shared by the threads (docs/simulator.md,
"Calibrated predictions").

Resampling measured gradient times independently (:class:`~leashed.sim.timing.Empirical`) keeps their
distribution but loses two facts of a real run: a machine's speed changes over milliseconds (a thread's
next gradient takes about as long as its last one: the short-term spread is about half the spread of
the whole run on the 2-core CI machine), and at any instant it changes for every thread alike. Both
decide how long two threads stay in step, and so how often a CAS attempt fails again after failing
(Leashed-SGD, papers.md §2.1: a thread that fails retries right after the competing commit, U behind
it, and fails again while the two gradient times differ by less than about U).

:class:`Timeline` replays the calibration runs instead. The simulated clock is cut into blocks of
``block_s`` seconds; every block draws one calibration run and one instant τ₀ of it (the same for all
threads: one generator from the seed; the runs are first resampled with replacement per seed, so that
replicate simulations carry the uncertainty of which runs calibrated them). At simulated time t in block
b, a simulated thread on core c draws the gradient time of that run's thread c mod k (k its threads) that
started first at or after τ₀ + (t − b·block_s), shifted ⌊c / k⌋ gradients on (cores beyond the run's own
threads take its threads' neighbouring gradients, not the same ones). Thread j is on core j when every
thread has a core; when threads time-share cores (:class:`~leashed.sim.machine.Scheduler`), it is on the
core :meth:`~leashed.sim.machine.Scheduler.core_of` gives for the time slice its draw starts in. The two
threads that share the machine at an instant then replay what the calibration run's two threads did at
one instant, whichever threads they are: the machine's speed is a matter of time and core, not of thread
number. A draw never looks at the run being predicted.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from leashed.errors import SpecError
from leashed.sim.timing import Distribution, gradient_starts

__all__ = ["DEFAULT_BLOCK_S", "Placement", "Timeline", "attempt_timelines", "compute_timeline", "destall"]

#: length of a replayed block of simulated time (about 90 gradients of the MNIST MLP at batch 64)
DEFAULT_BLOCK_S = 0.05

#: thread -> (the core it is on, the simulated instant its next phase starts there)
Placement = Callable[[int], tuple[int, float]]


class Timeline(Distribution):
    """Gradient times of calibration runs, replayed in time order (module docstring).

    ``runs``: one entry per calibration run, a sequence of (start instants, durations) per thread, in
    seconds; start instants in increasing order. As a :class:`Distribution` (mean, cv, :meth:`sample`,
    one thread's :meth:`stream`) it is the pool of all the durations."""

    name = "timeline"

    def __init__(self, runs: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], source: str = "runs",
                 block_s: float = DEFAULT_BLOCK_S, frame: Timeline | None = None) -> None:
        if not (isinstance(block_s, (int, float)) and math.isfinite(block_s) and block_s > 0):
            raise SpecError(f"the replayed block length must be a positive number of seconds, "
                            f"not {block_s!r}")
        kept: list[list[tuple[array, array]]] = []
        spans: list[tuple[float, float]] = []
        for run in runs:
            threads = []
            for starts, durations in run:
                t = np.asarray(starts, dtype=np.float64).ravel()
                c = np.asarray(durations, dtype=np.float64).ravel()
                ok = np.isfinite(t) & np.isfinite(c) & (c >= 0)
                t, c = t[ok], c[ok]
                if len(t) == 0:
                    continue
                order = np.argsort(t, kind="stable")  # 8 bytes a value; bisect reads them directly
                threads.append((array("d", t[order].tobytes()), array("d", c[order].tobytes())))
            if threads:
                kept.append(threads)
                spans.append((min(th[0][0] for th in threads), max(th[0][-1] for th in threads)))
        if not kept:
            raise SpecError(f"timeline timing from {source} has no finite measured gradient times")
        if frame is not None:  # replayed on another timeline's block schedule (runs in the same order)
            if len(frame.runs) != len(kept):
                raise SpecError(f"timeline timing from {source}: {len(kept)} runs with samples, but its "
                                f"frame has {len(frame.runs)}")
            spans, block_s = frame.spans, frame.block_s
        self.frame = frame
        self.runs = kept
        self.spans = spans
        self.source = source
        self.block_s = float(block_s)
        pool = np.concatenate([np.asarray(c) for run in kept for _, c in run])
        pool.setflags(write=False)
        self.samples = pool

    @property
    def mean(self) -> float:
        return float(self.samples.mean())

    @property
    def cv(self) -> float:
        mean = self.mean
        return float(self.samples.std() / mean) if mean > 0 else 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.samples[rng.integers(0, len(self.samples), n)]

    def describe(self) -> str:
        return f"timeline:{self.source}"

    def joint_streams(self, seed: Any, m: int, clock: Callable[[], float],
                      place: Placement | None = None) -> list[Iterator[float]]:
        """m endless iterators of durations; a draw reads ``clock()`` (the simulated time) when it is
        taken, or with ``place``, ``place(j)`` = (core of thread j, the instant its phase starts on it)
        (module docstring). One block schedule from ``seed`` (anything ``numpy.random.default_rng``
        takes): timelines on one frame (``frame``, or each other's) draw the same blocks from the same
        seed."""
        schedule = _Schedule(self, np.random.default_rng(seed))
        return [_thread_draws(self, schedule, j, clock, place) for j in range(m)]


class _Schedule:
    """Block b -> (run index, instant of that run at the block's start); drawn in block order, so
    the schedule is a function of the seed alone, whatever order the threads ask in. With several runs,
    a seed first draws a bootstrap resample of them (as many runs, with replacement) and blocks come from
    the resample, in proportion to the gradients each holds: replicate simulations (other seeds) then
    differ as much as the choice of calibration runs can make them, and ``leashed compare``'s interval of
    the prediction holds that uncertainty too."""

    __slots__ = ("origins", "rng", "timeline", "weights")

    def __init__(self, timeline: Timeline, rng: np.random.Generator) -> None:
        self.timeline = timeline
        self.rng = rng
        base = timeline.frame if timeline.frame is not None else timeline
        sizes = np.array([sum(len(c) for _, c in run) for run in base.runs], dtype=np.float64)
        if len(sizes) > 1:  # the bootstrap resample of the runs (never empty: len(sizes) draws)
            sizes = sizes * rng.multinomial(len(sizes), np.full(len(sizes), 1.0 / len(sizes)))
        self.weights = sizes / sizes.sum()
        self.origins: list[tuple[int, float]] = []

    def origin(self, b: int) -> tuple[int, float]:
        origins = self.origins
        while len(origins) <= b:
            run = int(self.rng.choice(len(self.weights), p=self.weights))
            lo, hi = self.timeline.spans[run]
            start = float(self.rng.uniform(lo, max(lo, hi - self.timeline.block_s)))
            origins.append((run, start))
        return origins[b]


def _thread_draws(timeline: Timeline, schedule: _Schedule, j: int, clock: Callable[[], float],
                  place: Placement | None) -> Iterator[float]:
    block = timeline.block_s
    while True:
        if place is None:
            core, now = j, max(float(clock()), 0.0)
        else:
            core, now = place(j)
            now = max(float(now), 0.0)
        b = int(now // block)
        run, start = schedule.origin(b)
        threads = timeline.runs[run]
        starts, durations = threads[core % len(threads)]
        lo, hi = timeline.spans[run]
        tau = start + (now - b * block)
        if tau > hi:  # a run shorter than a block: wrap around its span
            tau = lo + (tau - lo) % max(hi - lo, 1e-12)
        i = bisect.bisect_left(starts, tau) + core // len(threads)
        yield durations[i % len(durations)]


def destall(durations: np.ndarray, threshold_s: float) -> tuple[np.ndarray, int]:
    """``durations`` (one thread's, in time order) with each stalled one, longer than the median by more
    than ``threshold_s``, replaced by the last one before it that was not stalled (the median where none
    was), and the count replaced. A phase that long was taken off its core for a time slice or more
    (docs/simulator.md, "Calibrated predictions": a loaded calibration run)."""
    d = np.asarray(durations, dtype=np.float64)
    if len(d) == 0:
        return d, 0
    median = float(np.median(d))
    stalled = d > median + threshold_s
    count = int(stalled.sum())
    if not count:
        return d, 0
    out = d.copy()
    keep = np.where(~stalled, np.arange(len(d)), -1)
    last = np.maximum.accumulate(keep)  # index of the last phase at or before i that did not stall
    out[stalled] = np.where(last[stalled] >= 0, d[np.maximum(last[stalled], 0)], median)
    return out, count


def _by_thread(log: Any, instants: np.ndarray, durations: np.ndarray, mask: np.ndarray | None = None,
               destall_s: float | None = None, counts: list[int] | None = None) \
        -> list[tuple[np.ndarray, np.ndarray]]:
    """(instants, durations) of each thread of an update log that has any under ``mask``; with
    ``destall_s``, each thread's durations :func:`destall`-ed (the counts appended to ``counts``)."""
    thread = np.asarray(log.thread, dtype=np.int64)
    out = []
    for j in np.unique(thread):
        mine = thread == j if mask is None else mask & (thread == j)
        if np.any(mine):
            took = durations[mine]
            if destall_s is not None:
                order = np.argsort(instants[mine], kind="stable")
                fixed, n = destall(took[order], destall_s)
                took = np.empty_like(fixed)
                took[order] = fixed
                if counts is not None:
                    counts.append(n)
            out.append((instants[mine], took))
    return out


def attempt_timelines(results: Sequence[Any], frame: Timeline, local: Sequence[np.ndarray],
                      remote: Sequence[np.ndarray], destall_s: float | None = None,
                      counts: list[int] | None = None) -> tuple[Timeline | None, Timeline | None]:
    """Leashed: the completed attempts of ``results`` (t_attempt, t_commit − t_attempt per thread), the
    local and the remote ones (masks per run, :func:`leashed.sim.calibration.attempt_masks`), replayed
    on ``frame``'s block schedule; None for a kind no run has. ``destall_s``: as in
    :func:`compute_timeline`."""
    out: list[Timeline | None] = []
    for masks, kind in ((local, "local"), (remote, "remote")):
        runs = []
        for result, mask in zip(results, masks, strict=True):
            at = np.asarray(result.updates.t_attempt, dtype=np.float64)
            took = np.asarray(result.updates.t_commit, dtype=np.float64) - at
            runs.append(_by_thread(result.updates, at, took, mask, destall_s, counts))
        if any(len(r) == 0 for r in runs):
            out.append(None)
            continue
        out.append(Timeline(runs, f"{frame.source} ({kind} attempts)", frame=frame))
    return out[0], out[1]


def compute_timeline(results: Sequence[Any], source: str, block_s: float = DEFAULT_BLOCK_S,
                     subtract: Sequence[np.ndarray] | None = None, destall_s: float | None = None,
                     counts: list[int] | None = None) -> Timeline:
    """The :class:`Timeline` of runtime results files: per run and thread, the gradient's start (t_start;
    seqlock: the end of its snapshot, :func:`~leashed.sim.timing.gradient_starts`) and t_grad − that
    of every recorded gradient (dropped ones included: their gradient was computed), less ``subtract``
    (per run, seconds per update; the part of a gradient's time the simulator adds itself: a given read
    slowdown, :func:`leashed.sim.calibration.calibrate`), never below 0. ``destall_s``: each thread's
    stalled gradients (longer than its median by more than that) :func:`destall`-ed, their counts
    appended to ``counts``: the simulator's scheduler then takes the threads off their cores itself."""
    runs = []
    for n, result in enumerate(results):
        log = result.updates
        starts = gradient_starts(result)
        durations = np.asarray(log.t_grad, dtype=np.float64) - starts
        if subtract is not None:
            durations = durations - np.asarray(subtract[n], dtype=np.float64)
        runs.append(_by_thread(log, starts, np.maximum(durations, 0.0), destall_s=destall_s, counts=counts))
    return Timeline(runs, source, block_s)
