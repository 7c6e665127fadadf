"""The machine model of the simulator: cores shared by time slices, background load, the memory system.

The pure-theory simulator (papers.md §6) gives every thread its own core and charges every phase the time
its distribution draws. A real run is on a machine: this module describes the three things of a machine
that change what the runtime measures (docs/simulator.md, "The machine model"), each optional and off by
default:

* **cores** (:class:`Scheduler`): P cores shared by the m simulated threads and by ``background`` phantom
  threads standing for other processes' load. With more runnable threads than cores, threads time-share
  in a fixed round-robin rotation of time slices of length q: in slot s = ⌊t / q⌋ thread j runs iff
  (j − s·P + offset) mod n < P, n = m + background. The threads of leashed and hogwild never block, so
  which slots a thread gets does not depend on what it does, and a phase that needs x seconds of CPU
  starting at wall time t ends at W_j⁻¹(W_j(t) + x), W_j(t) the CPU time thread j has had by time t
  (:meth:`Scheduler.end_of`). A descheduled thread's compute or copy stretches. Lock and sync waits are
  modelled as if the waiting thread kept its place in the rotation (a simplification; the runtime's mutex
  and barrier waits give the core away).
* **memory system** (:class:`Machine` fields): an update attempt whose source vector was last written by
  another thread draws its time from the *remote* law (the copy comes from another core's cache), and a
  gradient is slowed by ``read_slowdown`` × the time another core spends copying the vector it reads
  (both measured: the remote law from the runs, the slowdown by ``leashed calibrate``); a copy that runs
  while n copies run at once takes ``copy_concurrency[n-1] / copy_concurrency[k-1]`` times longer, k the
  copies the calibration run could have had at once (bandwidth sharing).
* **background load**: ``background`` phantom threads, always runnable, in the same rotation: a busy
  process on a 2-core machine leaves the m threads 2m/(m + 1) cores' worth.

Parameters come from measurement (``leashed calibrate`` and the runtime's machine record), never from the
run being predicted.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import Any

from leashed.errors import SpecError

__all__ = ["Machine", "Scheduler"]

#: default time slice when none was measured (EEVDF's base slice on 2 CPUs: 0.75 ms·(1 + log2 2))
DEFAULT_TIME_SLICE_S = 1.5e-3


@dataclass(frozen=True)
class Machine:
    """What the simulator knows of the machine (module docstring). ``Machine()`` is the ideal machine."""

    #: cores shared by the threads; None: every thread has its own core (pure theory)
    cores: int | None = None
    #: scheduler time slice q (seconds)
    time_slice_s: float = DEFAULT_TIME_SLICE_S
    #: cores' worth of other processes' load, modelled as this many (rounded) always-runnable threads
    background_load: float = 0.0
    #: relative slowdown of a gradient per second another core spends copying the vector it reads
    read_slowdown: float = 0.0
    #: relative time of one copy while n copies run at once, n = 1, 2, ... (empty: no bandwidth sharing)
    copy_concurrency: tuple[float, ...] = ()
    #: concurrent copies the calibration run could have had (its thread count, capped by its cores)
    calibrated_concurrency: int = 1
    notes: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.cores is not None and (isinstance(self.cores, bool) or not isinstance(self.cores, int)
                                       or self.cores < 1):
            raise SpecError(f"cores must be a positive integer, not {self.cores!r}")
        for name in ("time_slice_s", "background_load", "read_slowdown"):
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

    @property
    def ideal(self) -> bool:
        return (self.cores is None and self.background_threads == 0 and self.read_slowdown == 0
                and not self.copy_concurrency)

    @property
    def background_threads(self) -> int:
        return int(math.floor(self.background_load + 0.5))

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
        return {"cores": self.cores, "time_slice_s": self.time_slice_s,
                "background_load": self.background_load, "background_threads": self.background_threads,
                "read_slowdown": self.read_slowdown, "copy_concurrency": list(self.copy_concurrency),
                "calibrated_concurrency": self.calibrated_concurrency, **self.notes}

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> Machine:
        """Inverse of :meth:`describe` (unknown keys become notes)."""
        known = {"cores", "time_slice_s", "background_load", "read_slowdown", "copy_concurrency",
                 "calibrated_concurrency"}
        notes = {k: v for k, v in data.items() if k not in known and k != "background_threads"}
        return cls(cores=data.get("cores"),
                   time_slice_s=float(data.get("time_slice_s", DEFAULT_TIME_SLICE_S)),
                   background_load=float(data.get("background_load", 0.0)),
                   read_slowdown=float(data.get("read_slowdown", 0.0)),
                   copy_concurrency=tuple(float(v) for v in data.get("copy_concurrency", ())),
                   calibrated_concurrency=int(data.get("calibrated_concurrency", 1)), notes=notes)

    def scheduler(self, m: int) -> Scheduler | None:
        """The time-sharing schedule of m threads on this machine; None when every thread has a core."""
        n = m + self.background_threads
        if self.cores is None or n <= self.cores:
            return None
        return Scheduler(m, self.cores, self.time_slice_s, self.background_threads)


class Scheduler:
    """Round-robin time slices of n = m + background always-runnable threads on P < n cores.

    In slot s (wall time [s·q, (s+1)·q)) thread j runs iff (j − s·P + offset) mod n < P. The pattern has a
    period of L = n / gcd(n, P) slots, in which every thread runs R = P·L / n slots; ``cpu`` and ``wall``
    are exact inverses on the running slots (module docstring)."""

    __slots__ = ("m", "cores", "q", "n", "offset", "period", "runs", "slots")

    def __init__(self, m: int, cores: int, time_slice_s: float, background: int = 0, offset: int = 0) -> None:
        self.m, self.cores, self.q = m, cores, float(time_slice_s)
        self.n = m + background
        self.offset = offset % self.n
        self.period = self.n // math.gcd(self.n, cores)
        self.slots: list[list[int]] = []
        for j in range(m):
            self.slots.append([s for s in range(self.period)
                               if (j - s * cores + self.offset) % self.n < cores])
        self.runs = len(self.slots[0]) if m else 0

    def running(self, j: int, t: float) -> bool:
        s = int(t // self.q) % self.period
        return (j - s * self.cores + self.offset) % self.n < self.cores

    def cpu(self, j: int, t: float) -> float:
        """CPU seconds thread j has had by wall time t."""
        q, period, slots = self.q, self.period, self.slots[j]
        s = int(t // q)
        p, sl = divmod(s, period)
        before = bisect_left(slots, sl)
        cpu = (p * self.runs + before) * q
        if before < len(slots) and slots[before] == sl:
            cpu += t - s * q
        return cpu

    def wall(self, j: int, c: float) -> float:
        """The earliest wall time at which thread j has had c CPU seconds."""
        q, slots = self.q, self.slots[j]
        per = self.runs * q
        p = int(c // per)
        rem = c - p * per
        if rem < 0:
            rem = 0.0
        idx = int(rem // q)
        if idx >= self.runs:  # rounding at a period boundary
            p, idx, rem = p + 1, 0, 0.0
        within = rem - idx * q
        if within <= 0.0 and idx > 0:  # exactly at the end of a running slot
            return (p * self.period + slots[idx - 1] + 1) * q
        if within <= 0.0 and idx == 0 and p > 0:
            return ((p - 1) * self.period + slots[-1] + 1) * q
        return (p * self.period + slots[idx]) * q + within

    def end_of(self, j: int, start: float, demand: float) -> float:
        """Wall time at which a phase of ``demand`` CPU seconds that thread j starts at ``start`` ends."""
        if demand <= 0:
            return start
        return self.wall(j, self.cpu(j, start) + demand)

    def next_run(self, j: int, t: float) -> float:
        """The first instant >= t at which thread j is on a core."""
        if self.running(j, t):
            return t
        return self.wall(j, self.cpu(j, t) + 1e-15)

    def share(self) -> float:
        """The share of a core each thread gets: P / n."""
        return self.cores / self.n

