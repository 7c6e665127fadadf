"""The machine model of the simulator: cores shared by time slices, background load, the memory system.

The pure-theory simulator (papers.md §6) gives every thread its own core and charges every phase the time
its distribution draws. A real run is on a machine: this module describes the three things of a machine
that change what the runtime measures (docs/simulator.md, "The machine model"), each optional and off by
default:

* **cores** (:class:`Scheduler`): P cores shared by the m simulated threads, less the L cores' worth
  other processes take. When m > P − L, each thread gets the share ρ = (P − L)/m of a core, in time
  slices of length q spread evenly (in rotation: 4 threads on 2 idle cores run two at a time), and
  each time a thread comes back onto a core it loses the switch cost g (``switch_cost_s``, the switch gap
  ``leashed calibrate`` measures), spread over its slots as a CPU efficiency e (:class:`Scheduler`). The
  threads of leashed, hogwild and seqlock never block, so which slots a thread gets does not depend on
  what it
  does, and a phase that needs x seconds of CPU starting at wall time t ends at W_j⁻¹(W_j(t) + x), W_j(t)
  the CPU time thread j has had by time t (:meth:`Scheduler.end_of`). A descheduled thread's compute or
  copy stretches. A lock waiter sleeps in the runtime's mutex and gives its core away, and the woken
  holder takes a core at once: the critical sections run on a full core, off the rotation, after a
  switch when the thread had to wait (``lock_machine_worker``); a thread that has finished keeps its
  slots.
  A real scheduler does not keep the rotation exactly: with 4 busy threads on 2 cores about one gap in
  eight is two slices instead of one. With ``rotation_jitter`` p > 0 (:class:`JitteredScheduler`) each
  slot goes, as in the rotation, to the threads that have had the fewest slots, but with probability p
  the ties among them are broken at random instead of longest-waiting first. p is read off the share of
  such irregular gaps in calibration runs whose threads time-shared the cores
  (:func:`sim.calibration.measured_rotation_jitter`), or given (``--rotation-jitter``); else 0.
* **memory system** (:class:`Machine` fields): an update attempt whose source vector was last written by
  another thread draws its time from the *remote* law (the copy comes from another core's cache), and a
  gradient is slowed by ``read_slowdown`` × the time another core spends copying the vector it reads
  (both measured: the remote law from the runs, the slowdown by ``leashed calibrate``); a copy that runs
  while n copies run at once takes ``copy_concurrency[n-1] / copy_concurrency[k-1]`` times longer, k the
  copies the calibration run could have had at once (bandwidth sharing).
* **background load**: the L cores' worth other processes took while the runs were measured
  (``background_load_cores`` of the runtime's machine record): the threads share P − L (at least a tenth
  of P). Measured compute times already hold the share their own run's threads had, ρ_cal = min(1,
  (P − L_cal)/c) for c threads on P cores (``calibrated_share``), so a calibrated prediction gives each
  thread min(1, (P − L)/m) / ρ_cal: the same load at the same concurrency adds nothing.

Parameters come from measurement (``leashed calibrate`` and the runtime's machine record), never from the
run being predicted.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

from leashed.errors import SpecError

__all__ = ["JitteredScheduler", "Machine", "Scheduler", "irregular_share", "longest_regular_gap",
           "rotation_jitter"]

#: default time slice when none was measured (EEVDF's base slice on 2 CPUs: 0.75 ms·(1 + log2 2))
DEFAULT_TIME_SLICE_S = 1.5e-3


@dataclass(frozen=True)
class Machine:
    """What the simulator knows of the machine (module docstring). ``Machine()`` is the ideal machine."""

    #: cores shared by the threads; None: every thread has its own core (pure theory)
    cores: int | None = None
    #: scheduler time slice q (seconds)
    time_slice_s: float = DEFAULT_TIME_SLICE_S
    #: CPU time a thread loses each time it comes back onto a core (seconds; time-shared threads only)
    switch_cost_s: float = 0.0
    #: cores' worth of other processes' load: the threads share the rest, P − L
    background_load: float = 0.0
    #: relative slowdown of a gradient per second another core spends copying the vector it reads
    read_slowdown: float = 0.0
    #: relative time of one copy while n copies run at once, n = 1, 2, ... (empty: no bandwidth sharing)
    copy_concurrency: tuple[float, ...] = ()
    #: concurrent copies the calibration run could have had (its thread count, capped by its cores)
    calibrated_concurrency: int = 1
    #: the share of a core each thread of the calibration runs had, min(1, (P − L_cal)/c): measured
    #: compute times already hold that stretch, so threads are given share / calibrated_share
    calibrated_share: float = 1.0
    #: probability that a time slot's ties are broken at random rather than in rotation order
    #: (:class:`JitteredScheduler`; 0: the exact rotation)
    rotation_jitter: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.cores is not None and (isinstance(self.cores, bool) or not isinstance(self.cores, int)
                                       or self.cores < 1):
            raise SpecError(f"cores must be a positive integer, not {self.cores!r}")
        for name in ("time_slice_s", "background_load", "read_slowdown", "switch_cost_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SpecError(f"machine {name.replace('_', ' ')} must be a finite number >= 0, "
                                f"not {value!r}")
        if self.time_slice_s <= 0:
            raise SpecError(f"machine time slice must be positive, not {self.time_slice_s!r}")
        if any(not (math.isfinite(v) and v > 0) for v in self.copy_concurrency):
            raise SpecError("machine copy concurrency factors must be finite and positive")
        if self.calibrated_concurrency < 1:
            raise SpecError("calibrated copy concurrency must be >= 1")
        if not (isinstance(self.calibrated_share, (int, float)) and 0 < self.calibrated_share <= 1):
            raise SpecError(f"calibrated core share must be in (0, 1], not {self.calibrated_share!r}")
        if not (isinstance(self.rotation_jitter, (int, float)) and 0 <= self.rotation_jitter <= 1):
            raise SpecError(f"rotation jitter must be a probability in [0, 1], not {self.rotation_jitter!r}")

    @property
    def ideal(self) -> bool:
        return self.cores is None and self.read_slowdown == 0 and not self.copy_concurrency

    def replace(self, **changes: Any) -> Machine:
        return replace(self, **changes)

    def copy_factor(self, running: int) -> float:
        """Time factor of a copy while ``running`` copies (its own included) run at once."""
        table = self.copy_concurrency
        if not table or running <= 1:
            return 1.0
        base = table[min(self.calibrated_concurrency, len(table)) - 1]
        return table[min(running, len(table)) - 1] / base if running > self.calibrated_concurrency else 1.0

    def describe(self) -> dict[str, Any]:
        return {"cores": self.cores, "time_slice_s": self.time_slice_s, "switch_cost_s": self.switch_cost_s,
                "background_load": self.background_load,
                "read_slowdown": self.read_slowdown, "copy_concurrency": list(self.copy_concurrency),
                "calibrated_concurrency": self.calibrated_concurrency,
                "calibrated_share": self.calibrated_share, "rotation_jitter": self.rotation_jitter,
                **self.notes}

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> Machine:
        """Inverse of :meth:`describe` (unknown keys become notes)."""
        known = {"cores", "time_slice_s", "switch_cost_s", "background_load", "read_slowdown",
                 "copy_concurrency", "calibrated_concurrency", "calibrated_share"}
        notes = {k: v for k, v in data.items() if k not in known}
        return cls(cores=data.get("cores"),
                   time_slice_s=float(data.get("time_slice_s", DEFAULT_TIME_SLICE_S)),
                   switch_cost_s=float(data.get("switch_cost_s", 0.0)),
                   background_load=float(data.get("background_load", 0.0)),
                   read_slowdown=float(data.get("read_slowdown", 0.0)),
                   copy_concurrency=tuple(float(v) for v in data.get("copy_concurrency", ())),
                   calibrated_concurrency=int(data.get("calibrated_concurrency", 1)),
                   calibrated_share=float(data.get("calibrated_share", 1.0)),
                   rotation_jitter=float(data.get("rotation_jitter", 0.0)), notes=notes)

    def scheduler(self, m: int, seed: int = 0) -> Scheduler | None:
        """The time-sharing schedule of m threads on this machine; None when every thread has a core.
        ``seed`` seeds the random tie-breaks of a jittered rotation."""
        if self.cores is None:
            return None
        return Scheduler.cores(m, self.cores, self.time_slice_s, self.background_load, self.calibrated_share,
                               self.switch_cost_s, self.rotation_jitter, seed)


class Scheduler:
    """Time slices of m always-runnable threads that get ``share`` < 1 of a core each.

    The share is min(1, (P − L) / m): P cores, L cores' worth taken by other processes. Slot s is wall
    time [s·q, (s+1)·q); thread j runs in the slots where N_j(s) = ⌊s·ρ + φ_j⌋ steps up (ρ the share,
    φ_j = 1 − (j + 1)/m), so every thread runs ρ of the slots, evenly spread, and with P cores and no
    load exactly P threads run in every slot, in rotation (4 threads on 2 cores: threads 0, 1 in even
    slots, 2, 3 in odd ones). ``cpu`` and ``wall`` are exact inverses on the running slots.

    Switch cost g: a thread's runs of consecutive slots each begin with g lost to the switch. Evenly
    spread, a share ρ has min(1, (1 − ρ)/ρ) run starts per running slot, so the thread does useful work
    at the rate e = 1 − (g/q)·min(1, (1 − ρ)/ρ) while on a core (never below 0.1): ``cpu`` counts useful
    CPU seconds, e times the slot time (the cost spread over the slots, not charged at each slot's
    start)."""

    __slots__ = ("m", "share", "q", "phase", "_ranks", "efficiency", "switch_cost")

    _EPS = 1e-9

    def __init__(self, m: int, share: float, time_slice_s: float, switch_cost_s: float = 0.0) -> None:
        if not (0.0 < share < 1.0):
            raise ValueError(f"a time-shared thread's share must be in (0, 1), not {share!r}")
        self.m, self.share, self.q = m, float(share), float(time_slice_s)
        self.switch_cost = float(switch_cost_s)
        starts_per_slot = min(1.0, (1.0 - self.share) / self.share)
        self.efficiency = max(0.1, 1.0 - self.switch_cost / self.q * starts_per_slot)
        self.phase = [1.0 - (j + 1) / m for j in range(m)]
        self._ranks: tuple[int, dict[int, int]] | None = None  # (slot, thread -> core) of the last slot

    @classmethod
    def cores(cls, m: int, cores: int, time_slice_s: float, background_load: float = 0.0,
              calibrated_share: float = 1.0, switch_cost_s: float = 0.0, rotation_jitter: float = 0.0,
              seed: int = 0) -> Scheduler | None:
        """The schedule of m threads on ``cores`` cores of which others take ``background_load``; None
        when every thread has a core to itself. The others never leave less than a tenth of the cores.
        ``calibrated_share``: the share the measured times already hold (:class:`Machine`); the threads
        get min(1, (P − L)/m) / calibrated_share. ``rotation_jitter`` > 0: a :class:`JitteredScheduler`."""
        share = cls.thread_share(m, cores, background_load) / calibrated_share
        if share >= 1.0:
            return None
        if rotation_jitter > 0:
            return JitteredScheduler(m, share, time_slice_s, switch_cost_s, rotation_jitter, seed)
        return cls(m, share, time_slice_s, switch_cost_s)

    @staticmethod
    def thread_share(m: int, cores: int, background_load: float = 0.0) -> float:
        """The share of a core each of m busy threads gets on ``cores`` cores of which others take
        ``background_load``: min(1, (P − L)/m), the others never leaving less than a tenth of P."""
        return min(1.0, max(cores - background_load, 0.1 * cores) / m)

    def _runs_before(self, j: int, s: int) -> int:
        """N_j(s): running slots of thread j among slots 0 .. s − 1."""
        return int(math.floor(s * self.share + self.phase[j] + self._EPS))

    def _slot_of_run(self, j: int, k: int) -> int:
        """The slot of thread j's k-th running slot (k = 0, 1, ...)."""
        return int(math.ceil((k + 1 - self.phase[j] - self._EPS) / self.share)) - 1

    def _in_slot(self, j: int, s: int) -> bool:
        """Whether thread j runs in slot s."""
        return self._runs_before(j, s + 1) > self._runs_before(j, s)

    def running(self, j: int, t: float) -> bool:
        return self._in_slot(j, int(t // self.q))

    def cpu(self, j: int, t: float) -> float:
        """Useful CPU seconds thread j has had by wall time t (slot time × ``efficiency``)."""
        q = self.q
        s = int(t // q)
        before = self._runs_before(j, s)
        cpu = before * q
        if self._runs_before(j, s + 1) > before:
            cpu += t - s * q
        return cpu * self.efficiency

    def wall(self, j: int, c: float) -> float:
        """The earliest wall time at which thread j has had c useful CPU seconds."""
        q = self.q
        c = c / self.efficiency
        if c <= 0:
            return self._slot_of_run(j, 0) * q
        k = int(c // q)
        within = c - k * q
        if within <= 1e-15 * q and k > 0:  # exactly at the end of a running slot
            return (self._slot_of_run(j, k - 1) + 1) * q
        return self._slot_of_run(j, k) * q + within

    def core_of(self, j: int, t: float) -> int:
        """The core thread j is on at wall time t: its rank among the threads that run in t's slot (0 for
        the lowest-numbered one), or j when it is not on a core then."""
        s = int(t // self.q)
        cached = self._ranks
        if cached is None or cached[0] != s:
            running = [i for i in range(self.m) if self._in_slot(i, s)]
            cached = self._ranks = (s, {i: k for k, i in enumerate(running)})
        return cached[1].get(j, j)

    def together(self, i: int, j: int, start: float, end: float) -> float:
        """Wall time within [start, end] during which threads i and j are both on a core."""
        q = self.q
        total = 0.0
        s = int(start // q)
        while s * q < end:
            if self._in_slot(i, s) and self._in_slot(j, s):
                total += min(end, (s + 1) * q) - max(start, s * q)
            s += 1
        return max(total, 0.0)

    def end_of(self, j: int, start: float, demand: float) -> float:
        """Wall time at which a phase of ``demand`` CPU seconds that thread j starts at ``start`` ends."""
        if demand <= 0:
            return start
        return self.wall(j, self.cpu(j, start) + demand)

    def next_run(self, j: int, t: float) -> float:
        """The first instant >= t at which thread j is on a core."""
        s = int(t // self.q)
        runs = self._runs_before(j, s + 1)
        if runs > self._runs_before(j, s):
            return t
        return self._slot_of_run(j, runs) * self.q


class JitteredScheduler(Scheduler):
    """The rotation of :class:`Scheduler`, with the irregularity of a real scheduler.

    Slot s runs as many threads as the rotation does (Σ_j [N_j(s + 1) − N_j(s)]): those that have had the
    fewest slots so far, ties going to the thread that has waited longest, then the lowest-numbered, so
    that with ``jitter`` = 0 the slots are exactly the rotation's (tested). With probability ``jitter`` a
    slot breaks its ties at random instead; every thread still gets ρ of the slots, within one slot at
    any time, but some wait two slices where the rotation has them wait one and others run two. The slots
    are drawn in order, as far as a query needs, from one generator seeded by ``seed``."""

    __slots__ = ("jitter", "_rng", "_slots", "_served", "_last", "_drawn")

    _CHUNK = 256

    def __init__(self, m: int, share: float, time_slice_s: float, switch_cost_s: float = 0.0,
                 jitter: float = 0.0, seed: int = 0) -> None:
        super().__init__(m, share, time_slice_s, switch_cost_s)
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"rotation jitter must be in [0, 1], not {jitter!r}")
        self.jitter = float(jitter)
        self._rng = random.Random(seed * 1_000_003 + 0x5C4ED)
        self._slots: list[list[int]] = [[] for _ in range(m)]  # each thread's running slots, ascending
        self._served = [0] * m  # slots each thread has had among the drawn ones
        self._last = [-1] * m  # the last drawn slot each thread ran in
        self._drawn = 0  # slots 0 .. _drawn − 1 are drawn

    def _draw(self, upto: int) -> None:
        """Draw the slots up to ``upto`` (exclusive), in chunks."""
        rotation = super()._runs_before
        served, last, slots, rng, m = self._served, self._last, self._slots, self._rng, self.m
        upto = max(upto, self._drawn + self._CHUNK)
        for s in range(self._drawn, upto):
            count = sum(rotation(j, s + 1) - rotation(j, s) for j in range(m))
            if rng.random() < self.jitter:
                keys = [rng.random() for _ in range(m)]
                order = sorted(range(m), key=lambda j: (served[j], keys[j]))
            else:
                order = sorted(range(m), key=lambda j: (served[j], last[j], j))
            for j in order[:count]:
                served[j] += 1
                last[j] = s
                slots[j].append(s)
        self._drawn = upto

    def _runs_before(self, j: int, s: int) -> int:
        if s >= self._drawn:
            self._draw(s + 1)
        return bisect.bisect_left(self._slots[j], s)

    def _slot_of_run(self, j: int, k: int) -> int:
        slots = self._slots[j]
        while len(slots) <= k:
            self._draw(self._drawn + self._CHUNK)
        return slots[k]

    def _in_slot(self, j: int, s: int) -> bool:
        if s >= self._drawn:
            self._draw(s + 1)
        slots = self._slots[j]
        k = bisect.bisect_left(slots, s)
        return k < len(slots) and slots[k] == s


def longest_regular_gap(share: float) -> int:
    """The longest off-core gap (in slots) of the exact rotation at ``share``: ⌈(1 − ρ)/ρ⌉."""
    return max(1, math.ceil((1.0 - share) / share - 1e-9))


def irregular_share(scheduler: Scheduler, slots: int) -> float:
    """Of the threads' off-core gaps in the first ``slots`` slots, the share longer than the exact rotation
    ever keeps a thread off (:func:`longest_regular_gap`): 0 for the rotation; with 4 threads on 2 cores,
    the gaps of two slices or more."""
    longest = longest_regular_gap(scheduler.share)
    gaps = long = 0
    for j in range(scheduler.m):
        previous = None
        for s in range(slots):
            if scheduler._in_slot(j, s):
                if previous is not None and s - previous > 1:
                    gaps += 1
                    long += s - previous - 1 > longest
                previous = s
    return long / gaps if gaps else 0.0


@functools.lru_cache(maxsize=64)
def _irregular_curve(m: int, share: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(jitter grid, :func:`irregular_share` of m threads at ``share`` at each), non-decreasing."""
    grid = tuple(k / 10 for k in range(11))
    slots = max(500, 8000 // m)
    shares, top = [], 0.0
    for p in grid:
        top = max(top, irregular_share(JitteredScheduler(m, share, 1.0, 0.0, p, seed=2013), slots))
        shares.append(top)
    return grid, tuple(shares)


def rotation_jitter(irregular: float, m: int, share: float) -> float:
    """The ``rotation_jitter`` at which m threads at ``share`` have the share ``irregular`` of their off-core
    gaps longer than the rotation's (:func:`irregular_share`), read off the model's own curve; 0 at or
    below 0, 1 beyond the curve's end."""
    if irregular <= 0 or not 0 < share < 1:
        return 0.0
    grid, shares = _irregular_curve(int(m), round(float(share), 9))
    if irregular >= shares[-1]:
        return 1.0
    for k in range(1, len(grid)):
        if irregular <= shares[k]:
            low, high = shares[k - 1], shares[k]
            step = (irregular - low) / (high - low) if high > low else 0.0
            return grid[k - 1] + step * (grid[k] - grid[k - 1])
    return 1.0
