"""leashed.sim: the SimPy simulator of asynchronous parallel SGD (docs/simulator.md).

``simulate(spec)`` returns a :class:`~leashed.results.RunResult` with ``source == "sim"``;
``run_simulation(spec)`` also returns the simulator's trace. Timing models are in
:mod:`leashed.sim.timing`, the worker processes in :mod:`leashed.sim.processes`, the closed forms of
papers.md §6.1 in :mod:`leashed.sim.theory`.
"""

from leashed.sim.batches import batch_rows
from leashed.sim.simulate import Simulation, run_simulation, simulate
from leashed.sim.timing import TimingModel, from_result, parse_distribution

__all__ = ["Simulation", "TimingModel", "batch_rows", "from_result", "parse_distribution", "run_simulation",
           "simulate"]
