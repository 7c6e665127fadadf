"""Type stub of leashed.runtime._machine (runtime/_machine.pyx): nogil micro-benchmarks of the machine for
``leashed calibrate`` (docs/machine.md). Times are int64 nanoseconds; ``pinned`` says whether every thread
could be pinned to its core."""

from typing import Final

import numpy as np
import numpy.typing as npt

_Times = npt.NDArray[np.int64]

OPS: Final[dict[str, int]]
MAX_WORKERS: Final[int]

def time_local(n: int, op: str, cpu: int, reps: int,
               max_s: float = 1.0) -> tuple[npt.NDArray[np.int64], bool]: ...
def time_remote(n: int, op: str, cpu_a: int, cpu_b: int, reps: int,
                max_s: float = 1.0) -> tuple[npt.NDArray[np.int64], bool]: ...
def time_concurrent(n: int, cpus: list[int], reps: int,
                    max_s: float = 1.0) -> tuple[npt.NDArray[np.int64], bool]: ...
def time_read(n: int, cpu_reader: int, cpu_copier: int, blocks: int, passes: int,
              max_s: float = 1.0) -> tuple[_Times, npt.NDArray[np.int64], bool]: ...
def time_slices(cpu: int, duration_s: float, gap_s: float,
                cap: int = 100_000) -> tuple[list[_Times], list[_Times], bool]: ...
