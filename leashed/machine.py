"""The machine a run ran on: ``leashed calibrate``'s profile file and the runtime's record (issue 13).

Two things live here (docs/machine.md has the field-by-field description):

* :class:`MachineProfile`, the result of ``leashed calibrate [--out machine.json] [--dim D | --from RUN.npz]
  [--quick]``: nogil micro-benchmarks (leashed.runtime._machine) of the costs the simulator's machine
  model needs (docs/papers.md §2.1: the copy and apply of a Leashed attempt; §6.1: what limits the
  speedup of m threads on P cores): copy/axpy of a vector of the model's size from the thread's own
  cache and from another core's, 1..P concurrent copiers, the slowdown of a read pass while another
  core copies the same vector, the scheduler's time slice, and the idle share of each usable core; with
  ``--from RUN.npz`` also how the scheduler rotates RUN's own threads when they outnumber the cores
  (leashed.runtime.rotation).
  It is stored as JSON, format ``leashed-machine`` version 1, written atomically; :func:`load_machine`
  refuses anything else with one line naming the file and the field.
* :class:`RunProbe` and :func:`thread_machine`, the runtime's record of the machine during a run
  (``result.metadata["machine"]``): usable cores, load average at start and end, background load from
  /proc/stat, and per worker thread the CPU time, wall time, CPU share and context switches measured in
  C by the worker loop (runtime/_loops.pyx worker_main).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leashed._files import write_atomic
from leashed.errors import LeashedError

__all__ = ["DEFAULT_DIM", "FORMAT_NAME", "FORMAT_VERSION", "LOADED_SHARE", "MachineFileError",
           "MachineProfile", "RunProbe", "calibrate", "cpu_jiffies", "expected_share", "load_machine",
           "machine_loaded", "thread_machine", "usable_cpus"]

FORMAT_NAME = "leashed-machine"
FORMAT_VERSION = 1
#: parameters of the MNIST MLP 784-128-10 (the README's model): 784*128 + 128 + 128*10 + 10
DEFAULT_DIM = 101_770
#: largest vector the benchmarks allocate (float32; a few copies per core)
MAX_DIM = 1 << 24
#: a gap between two clock reads longer than this means the thread was descheduled
SLICE_GAP_S = 20e-6
#: a run whose threads' mean CPU share is below this fraction of the expected share is "machine loaded"
LOADED_SHARE = 0.9
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class MachineFileError(LeashedError):
    """A machine file that is missing, corrupt, of a newer format version or with invalid values."""


# ============================================================================ the profile and its file
@dataclasses.dataclass(frozen=True)
class MachineProfile:
    """What ``leashed calibrate`` measured (times in seconds, medians of repetitions; docs/machine.md)."""

    dim: int                              # float32 elements of the benchmarked vector
    cores: int                            # usable cores (os.sched_getaffinity), or the --cores override
    cpu_ids: list[int]                    # the usable cores' ids
    copy_local_s: float                   # copy of dim floats the copying thread has just written
    axpy_local_s: float                   # dst = src - a*g, src just written by this thread
    copy_remote_s: float                  # copy of a vector another core has just written
    axpy_remote_s: float                  # axpy of a vector another core has just written
    copy_concurrent_s: list[float]        # entry n-1: one copy while n copies run at once on n cores
    read_slowdown: float                  # relative slowdown of a read pass while another core copies it
    time_slice_s: float                   # median turn of two busy threads sharing one core
    time_slice_quantiles_s: dict[str, float]  # "0.1" ... "0.9" quantiles of those runs
    switch_gap_s: float                   # median time from one thread's last run to the other's (0: none)
    idle_share: list[float]               # per usable core: idle fraction before the benchmarks
    background_load: float                # sum over usable cores of (1 - idle): cores used by others
    #: with --from RUN.npz: of the off-core gaps of RUN's model run with 2P threads, the share longer than
    #: the exact rotation's, and the simulator's rotation jitter read off it (None: not measured)
    rotation_irregular_share: float | None = None
    rotation_jitter: float | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def with_cores(self, n: int) -> MachineProfile:
        """A copy claiming ``n`` usable cores (``--cores``); the measured lists are kept as they are."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise LeashedError(f"--cores must be a positive integer, got {n!r}")
        return dataclasses.replace(self, cores=n)

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON object: ``format`` and ``format_version`` first, then the fields in order."""
        data = dataclasses.asdict(self)
        return {"format": data.pop("format"), "format_version": data.pop("format_version"), **data}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON file atomically (leashed/_files.py write_atomic)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))

    @classmethod
    def from_dict(cls, data: Any, source: str = "machine profile") -> MachineProfile:
        """Validate and build; any problem is one :class:`MachineFileError` naming ``source`` and a field."""
        if not isinstance(data, dict):
            raise MachineFileError(f"{source} is not a leashed machine file (not a JSON object)")
        if data.get("format") != FORMAT_NAME:
            raise MachineFileError(f"{source} is not a leashed machine file (format {data.get('format')!r}, "
                                   f"expected {FORMAT_NAME!r}); write one with `leashed calibrate`")
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise MachineFileError(f"{source}: field format_version must be a positive integer, "
                                   f"got {version!r}")
        if version > FORMAT_VERSION:
            raise MachineFileError(f"{source} has machine format version {version}; this leashed reads up to "
                                   f"version {FORMAT_VERSION}: upgrade leashed or rerun `leashed calibrate`")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in ("format", "format_version"):
                continue
            if f.name not in data and f.name in _OPTIONAL:
                continue
            if f.name not in data:
                raise MachineFileError(f"{source}: field {f.name} is missing; rerun `leashed calibrate`")
            try:
                values[f.name] = _CHECKS[f.name](data[f.name])
            except ValueError as exc:
                raise MachineFileError(f"{source}: field {f.name} {exc}; rerun `leashed calibrate`") from None
        if len(values["idle_share"]) != len(values["cpu_ids"]):
            raise MachineFileError(f"{source}: field idle_share has {len(values['idle_share'])} entries for "
                                   f"{len(values['cpu_ids'])} cpu_ids; rerun `leashed calibrate`")
        return cls(**values, format=FORMAT_NAME, format_version=version)


def _int(minimum: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, got {v!r}")
        if v < minimum:
            raise ValueError(f"must be at least {minimum}, got {v}")
        return v
    return check


def _float(low: float, strict: bool = True, high: float = math.inf) -> Callable[[Any], float]:
    """A finite number > low (>= low unless strict) and <= high."""
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        if v < low or (strict and v == low) or v > high:
            bound = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
            raise ValueError(f"must be {bound}, got {v:g}")
        return v
    return check


def _list(item: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def check(v: Any) -> list[Any]:
        if not isinstance(v, list) or not v:
            raise ValueError(f"must be a non-empty list, got {v!r:.60}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except ValueError as exc:
                raise ValueError(f"entry {i} {exc}") from None
        return out
    return check


def _quantiles(v: Any) -> dict[str, float]:
    if not isinstance(v, dict) or not v:
        raise ValueError(f"must be a non-empty object of quantile -> seconds, got {v!r:.60}")
    return {str(k): _float(0.0)(x) for k, x in v.items()}


def _metadata(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"must be an object, got {type(v).__name__}")
    return v


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "dim": _int(1), "cores": _int(1), "cpu_ids": _list(_int(0)),
    "copy_local_s": _float(0.0), "axpy_local_s": _float(0.0), "copy_remote_s": _float(0.0),
    "axpy_remote_s": _float(0.0), "copy_concurrent_s": _list(_float(0.0)),
    "read_slowdown": _float(-1.0), "time_slice_s": _float(0.0), "time_slice_quantiles_s": _quantiles,
    "switch_gap_s": _float(0.0, strict=False), "idle_share": _list(_float(0.0, strict=False, high=1.0)),
    "background_load": _float(0.0, strict=False), "metadata": _metadata,
    "rotation_irregular_share": lambda v: None if v is None else _float(0.0, strict=False, high=1.0)(v),
    "rotation_jitter": lambda v: None if v is None else _float(0.0, strict=False, high=1.0)(v),
}
#: fields that files of older versions lack (read as None: not measured)
_OPTIONAL = frozenset({"rotation_irregular_share", "rotation_jitter"})


def load_machine(path: str | os.PathLike[str]) -> MachineProfile:
    """Read a machine file written by ``leashed calibrate``; any problem is one :class:`MachineFileError`."""
    path = Path(path)
    if not path.is_file():
        raise MachineFileError(f"machine file {path} does not exist; write it with `leashed calibrate --out "
                               f"{path}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MachineFileError(f"cannot read machine file {path}: it is truncated or corrupt "
                               f"({type(exc).__name__}); rerun `leashed calibrate`") from None
    return MachineProfile.from_dict(data, source=f"machine file {path}")


# ============================================================================ the machine's state
def usable_cpus() -> list[int]:
    """The cores this process may run on (os.sched_getaffinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def cpu_jiffies(cpu_ids: Sequence[int]) -> dict[int, tuple[int, int]] | None:
    """Per core of ``cpu_ids``: (busy, total) clock ticks from /proc/stat (busy = total - idle - iowait;
    total = user + nice + system + idle + iowait + irq + softirq + steal); None where unreadable."""
    wanted = {f"cpu{c}": c for c in cpu_ids}
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] in wanted:
                    ticks = [int(x) for x in parts[1:9]]
                    total = sum(ticks)
                    out[wanted[parts[0]]] = (total - ticks[3] - ticks[4], total)
    except (OSError, ValueError):
        return None
    return out if len(out) == len(wanted) else None


def idle_shares(cpu_ids: Sequence[int], seconds: float) -> list[float] | None:
    """Idle fraction of each core over ``seconds`` (this process sleeps meanwhile); None without /proc."""
    before = cpu_jiffies(cpu_ids)
    time.sleep(seconds)
    after = cpu_jiffies(cpu_ids)
    if before is None or after is None:
        return None
    shares = []
    for c in cpu_ids:
        busy, total = after[c][0] - before[c][0], after[c][1] - before[c][1]
        shares.append(1.0 if total <= 0 else min(1.0, max(0.0, 1.0 - busy / total)))
    return shares


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


class RunProbe:
    """The machine around one run (issue 13 item 4): created just before the worker threads start,
    :meth:`finish` just after they have joined. The background load is the busy time of the usable cores
    (/proc/stat, resolution one clock tick per core and read) minus this process's CPU time
    (time.process_time), divided by the wall time between the two reads: cores' worth used by others, at
    most the cores this process left (P − its CPU time / wall)."""

    def __init__(self) -> None:
        self.cpu_ids = usable_cpus()
        self.loadavg_start = _loadavg()
        self._jiffies = cpu_jiffies(self.cpu_ids)
        self._cpu = time.process_time()
        self._t = time.monotonic()

    def finish(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t
        cpu = time.process_time() - self._cpu
        after = cpu_jiffies(self.cpu_ids)
        background = None
        if self._jiffies is not None and after is not None and wall > 0:
            tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            busy = sum(after[c][0] - self._jiffies[c][0] for c in self.cpu_ids) / tick
            # others cannot have used more than the cores this process left: on a run of a few tens of
            # ms one tick per core and read is a large share of the wall time (2.9 cores read on 2)
            room = max(0.0, len(self.cpu_ids) - cpu / wall)
            background = min(max(0.0, (busy - cpu) / wall), room)
        return {"usable_cores": len(self.cpu_ids), "cpu_ids": self.cpu_ids,
                "loadavg_start": self.loadavg_start, "loadavg_end": _loadavg(),
                "background_load_cores": background, "probe_wall_s": wall, "process_cpu_s": cpu,
                "machine_file": None}


#: thread_totals() keys of runtime/_workers.pyx that thread_machine moves into metadata["machine"]
THREAD_KEYS = ("cpu_ns", "loop_wall_ns", "involuntary_switches", "voluntary_switches")


def thread_machine(per_thread: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pop the per-thread machine counters from ``per_thread`` (Run.thread_totals()) into the record's
    keys: thread_cpu_s, thread_wall_s, thread_cpu_share (cpu/wall, None for an empty span) and the
    involuntary / voluntary context switches of each worker's loop."""
    raw = {k: per_thread.pop(k) for k in THREAD_KEYS if k in per_thread}
    if len(raw) < len(THREAD_KEYS):
        return {}
    cpu = raw["cpu_ns"].astype(np.float64) / 1e9
    wall = raw["loop_wall_ns"].astype(np.float64) / 1e9
    return {"thread_cpu_s": cpu.tolist(), "thread_wall_s": wall.tolist(),
            "thread_cpu_share": [float(c / w) if w > 0 else None for c, w in zip(cpu, wall, strict=True)],
            "involuntary_switches": raw["involuntary_switches"].tolist(),
            "voluntary_switches": raw["voluntary_switches"].tolist()}


def expected_share(usable_cores: int, threads: int) -> float:
    """The CPU share each of ``threads`` busy threads can get on ``usable_cores`` cores: min(1, P/m)."""
    return min(1.0, usable_cores / max(threads, 1))


def machine_loaded(machine: dict[str, Any] | None) -> bool | None:
    """True when the threads' mean CPU share is below LOADED_SHARE of the expected share, i.e. the threads
    together had less than 90 % of the min(m, P) cores they could use; None when the record lacks the
    counters (simulations, files of older versions). The mean, not the median: with more threads than
    cores the kernel shares the cores unevenly among them over a short run (3 MLP threads on 2 cores
    got 0.59, 0.59 and 0.80 of a core in a 0.44 s run, 1.98 cores in all), which is not a load."""
    if not machine:
        return None
    shares = [s for s in machine.get("thread_cpu_share") or [] if s is not None]
    cores = machine.get("usable_cores")
    if not shares or not isinstance(cores, int) or cores < 1:
        return None
    return bool(float(np.mean(shares)) < LOADED_SHARE * expected_share(cores, len(shares)))


# ============================================================================ calibrate
def _median_s(ns: np.ndarray) -> float:
    return float(np.median(ns)) / 1e9 if len(ns) else math.nan


def _reps(budget_s: float, one_s: float, low: int = 11, high: int = 2001) -> int:
    return int(min(high, max(low, budget_s / max(one_s, 1e-7))))


def read_slowdown(times: np.ndarray, blocks: np.ndarray) -> float:
    """Median over the pairs (quiet block 2k, busy block 2k + 1) of the ratio of their median pass times,
    minus 1: pairing adjacent blocks cancels the drift of a machine whose load changes meanwhile."""
    ratios = []
    for k in range(0, int(blocks.max(initial=-1)) + 1, 2):
        quiet, busy = times[blocks == k], times[blocks == k + 1]
        if len(quiet) and len(busy):
            ratios.append(float(np.median(busy)) / float(np.median(quiet)))
    return float(np.median(ratios)) - 1.0 if ratios else 0.0


def _time_slices(bench: Any, cpu: int, seconds: float) -> tuple[float, dict[str, float], float, bool, bool]:
    """The scheduler's slice between two busy threads sharing one core, from their runs between
    descheduling gaps. A *turn* is a maximal sequence of one thread's runs with no run of the other thread
    in between (an interruption by a third process splits a run but not the turn); its length is the
    thread's running time in it. Returns (median turn, its quantiles, median switch gap = the time from one
    thread's last clock read to the other's first (one context switch plus whatever else ran then),
    measured, pinned). The first run of each thread (begun before the other ran) and the first and last
    turns (cut by the measurement's ends) are left out. Without two complete turns (a refused pin, or no
    switch within ``seconds``) the slice is the measured span (a lower bound) and the gap 0."""
    starts, ends, pinned = bench.time_slices(cpu, seconds, SLICE_GAP_S)
    runs = sorted((int(a), int(b), who) for who, (s, e) in enumerate(zip(starts, ends, strict=True))
                  for a, b in zip(s[1:], e[1:], strict=True))
    turns: list[int] = []
    gaps: list[int] = []
    for k, (a, b, who) in enumerate(runs):
        if k and runs[k - 1][2] == who:
            turns[-1] += b - a
        else:
            if k:
                gaps.append(max(0, a - runs[k - 1][1]))
            turns.append(b - a)
    turns = turns[1:-1]
    if len(turns) < 2:
        return seconds, {str(q): seconds for q in QUANTILES}, 0.0, False, pinned
    lengths = np.asarray(turns, dtype=np.float64) / 1e9
    quantiles = {str(q): float(np.quantile(lengths, q)) for q in QUANTILES}
    return float(np.median(lengths)), quantiles, float(np.median(gaps)) / 1e9, True, pinned


def calibrate(dim: int = DEFAULT_DIM, quick: bool = False,
              say: Callable[[str], None] | None = None, rotation_from: Any = None) -> MachineProfile:
    """Measure this machine (a few seconds on 2 cores; ``quick`` about a third). ``say`` gets one line per
    phase. Every benchmark is a nogil C function of leashed.runtime._machine; times are medians.
    ``rotation_from`` (a runtime RunResult): also run its spec with 2P threads, as long as it ran (at
    most 5 s), about 6 s of runs in all (once with ``quick``), before the benchmarks, and measure how
    the scheduler rotates them (leashed.runtime.rotation)."""
    from leashed.results import machine_metadata
    from leashed.runtime import _machine as bench

    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise LeashedError(f"--dim must be an integer between 1 and {MAX_DIM}, got {dim!r}")
    say = say or (lambda line: None)
    started = time.monotonic()
    budget = 0.04 if quick else 0.12
    cap = 0.25 if quick else 0.5  # seconds: no benchmark goes on longer on a loaded machine
    cpus = usable_cpus()
    say(f"idle share of {len(cpus)} usable cores ({0.2 if quick else 0.5:g} s)")
    idle = idle_shares(cpus, 0.2 if quick else 0.5)
    notes: list[str] = []
    if idle is None:
        notes.append("/proc/stat unreadable: idle_share assumed 1")
        idle = [1.0] * len(cpus)
    rotation: tuple[list[Any], dict[str, Any]] = ([], {})
    if rotation_from is not None:  # before the benchmarks (leashed.runtime.rotation.rotation_runs)
        from leashed.runtime.rotation import rotation_runs

        rotation = rotation_runs(rotation_from, len(cpus), 1 if quick else None, say)
    order = sorted(range(len(cpus)), key=lambda i: -idle[i])  # the idlest cores first
    a = cpus[order[0]]
    b = cpus[order[1]] if len(cpus) > 1 else a
    pinned = True
    try:
        probe, ok = bench.time_local(dim, "copy", a, 5, cap)
        one = _median_s(probe)
        say(f"copy and axpy of {dim} float32, own cache (cpu {a})")
        local = {}
        for op in ("copy", "axpy"):
            t, ok = bench.time_local(dim, op, a, _reps(budget, one), cap)
            local[op], pinned = _median_s(t[1:]), pinned and ok
        remote = dict(local)
        if len(cpus) > 1:
            say(f"copy and axpy of a vector another core has just written (cpus {a}, {b})")
            for op in ("copy", "axpy"):
                t, ok = bench.time_remote(dim, op, a, b, _reps(budget / 2, 2 * local[op]), cap)
                remote[op], pinned = _median_s(t), pinned and ok
        else:
            notes.append("one usable core: remote copies not measured (set to the local ones)")
        say(f"1..{len(cpus)} concurrent copies")
        concurrent = []
        for n in range(1, len(cpus) + 1):
            t, ok = bench.time_concurrent(dim, [cpus[i] for i in order[:n]],
                                          _reps(budget / max(1.0, len(cpus) / 4), 2 * local["copy"]), cap)
            concurrent.append(_median_s(t))
            pinned = pinned and ok
        slowdown = 0.0
        if len(cpus) > 1:
            say("read pass while another core copies the same vector")
            passes = _reps(budget / 2 / 20, local["copy"], low=5, high=500)
            times, blocks, ok = bench.time_read(dim, a, b, 20, passes, cap)
            slowdown, pinned = read_slowdown(times, blocks), pinned and ok
        else:
            notes.append("one usable core: read_slowdown not measured (0)")
        span = 0.2 if quick else 0.4
        say(f"scheduler time slice: two threads on cpu {a} ({span:g} s)")
        slice_s, quantiles, gap, measured, ok = _time_slices(bench, a, span)
        pinned = pinned and ok
    except MemoryError:
        raise LeashedError(f"not enough memory for the benchmarks at --dim {dim}; choose a smaller "
                           f"--dim") from None
    if not measured:
        notes.append("no descheduling seen: time_slice_s is the measured span (a lower bound)")
    irregular = jitter = None
    rotation_notes: dict[str, Any] = {}
    if rotation_from is not None:
        from leashed.runtime.rotation import read_rotation

        irregular, jitter, rotation_notes = read_rotation(rotation[0], len(cpus), slice_s, rotation[1])
    meta = machine_metadata()
    meta.update(rotation_notes)
    meta.update({"pinned": pinned, "quick": bool(quick), "slice_gap_threshold_s": SLICE_GAP_S,
                 "calibrate_s": time.monotonic() - started, "notes": notes})
    return MachineProfile(
        dim=dim, cores=len(cpus), cpu_ids=cpus, copy_local_s=local["copy"], axpy_local_s=local["axpy"],
        copy_remote_s=remote["copy"], axpy_remote_s=remote["axpy"], copy_concurrent_s=concurrent,
        read_slowdown=float(slowdown), time_slice_s=float(slice_s), time_slice_quantiles_s=quantiles,
        switch_gap_s=float(gap), idle_share=idle, background_load=float(sum(1.0 - s for s in idle)),
        rotation_irregular_share=irregular, rotation_jitter=jitter, metadata=meta)


# ============================================================================ the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("A few seconds of nogil micro-benchmarks on the usable cores; the file is described in "
                     "docs/machine.md. Exit status 2 on bad input (nothing is written).")
    parser.add_argument("--out", default="machine.json", metavar="FILE", help="machine file to write "
                        "(default machine.json)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--dim", type=int, metavar="D", help=f"float32 elements of the benchmarked vector "
                      f"(default {DEFAULT_DIM}, the MNIST MLP 784-128-10)")
    size.add_argument("--from", dest="from_file", metavar="RUN.npz", help="use the parameter count of this "
                      "results file; for a runtime run of leashed or hogwild, also run its spec with 2P "
                      "threads (3 runs as long as it, at most 5 s each) and measure how the scheduler "
                      "rotates them")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about a second)")


def _dim_of(result: Any, path: str) -> int:
    dim = result.extra.get("n_params", len(result.params))
    if not isinstance(dim, int) or dim < 1:
        dim = len(result.params)
    if dim < 1:
        raise LeashedError(f"results file {path} has no parameters; give --dim D instead")
    return dim


def summary_lines(profile: MachineProfile) -> list[str]:
    """The numbers a user wants to see after calibrating."""
    us = 1e6
    conc = ", ".join(f"{t * us:.1f}" for t in profile.copy_concurrent_s)
    return [f"cores {profile.cores} {profile.cpu_ids}, background load {profile.background_load:.2f} cores",
            f"copy {profile.dim} float32: own cache {profile.copy_local_s * us:.1f} us, other core's "
            f"{profile.copy_remote_s * us:.1f} us; axpy {profile.axpy_local_s * us:.1f} / "
            f"{profile.axpy_remote_s * us:.1f} us",
            f"concurrent copies (1..{len(profile.copy_concurrent_s)}): {conc} us",
            f"read slowdown while another core copies: {profile.read_slowdown:+.1%}",
            f"time slice {profile.time_slice_s * 1e3:.3f} ms, switch gap {profile.switch_gap_s * us:.1f} us",
            "rotation of 2P threads of the --from run's model: " + (
                "not measured" if profile.rotation_jitter is None else
                f"{profile.rotation_irregular_share:.1%} of the off-core gaps irregular, jitter "
                f"{profile.rotation_jitter:.2f}")]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise LeashedError(f"--out {out} is a directory; give a file name such as {out / 'machine.json'}")
    if args.dim is not None and not 1 <= args.dim <= MAX_DIM:
        raise LeashedError(f"--dim must be between 1 and {MAX_DIM}, got {args.dim}")
    source = None
    if args.from_file:
        from leashed.results import RunResult

        source = RunResult.load(args.from_file)
    dim = _dim_of(source, args.from_file) if source is not None else (args.dim or DEFAULT_DIM)
    rotation_from = source if source is not None and source.source == "runtime" else None

    def say(line: str) -> None:
        sys.stderr.write(f"leashed calibrate: {line}\n")
        sys.stderr.flush()

    profile = calibrate(dim, quick=args.quick, say=say, rotation_from=rotation_from)
    profile.save(out)
    for line in summary_lines(profile):
        print(line)
    print(f"wrote {out}")
    return 0
