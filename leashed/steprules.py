"""The staleness-adaptive step factors s(τ), in Python (papers.md §3.1, §3.2).

One definition for the pure-Python engines: the runtime's reference twin, the simulator's
with-gradients mode and the MPI backend. The runtime's worker loops implement the same rules in C
(``runtime/_phases.pxd``); tests hold the two against each other.
"""

from __future__ import annotations

import math

from leashed.errors import SpecError


def fleet_beta(threads: int) -> float:
    """FLeet's β = (2/(m+1))·ln(1 + ⌊(m+1)/2⌋), with the authors' integer division (papers.md §3.1):
    for m = 2, ⌊3/2⌋ = 1 and β = (2/3)·ln 2."""
    return (2.0 / (threads + 1)) * math.log(1 + (threads + 1) // 2)


def step_factor(policy: str, tau: int, threads: int, *, table: tuple[float, ...] | None = None,
                tail_fraction: float | None = None, tail_a: float = 1.0) -> float:
    """s(τ): ``constant`` 1; ``inverse`` 1/(τ+1); ``fleet`` exp(−βτ); ``tail`` 1 + A(1 − 2F(τ)) with
    ``tail_fraction`` = F(τ), the sampled fraction of staleness below τ (1 while nothing is sampled:
    ``tail_fraction`` None); ``normalised`` table[min(τ, len − 1)]."""
    if policy == "constant":
        return 1.0
    if policy == "inverse":
        return 1.0 / (tau + 1.0)
    if policy == "fleet":
        return math.exp(-fleet_beta(threads) * tau)
    if policy == "tail":
        return 1.0 if tail_fraction is None else 1.0 + tail_a * (1.0 - 2.0 * tail_fraction)
    if policy == "normalised":
        if not table:
            raise SpecError("step policy 'normalised' needs a step table (a fitted staleness model)")
        return float(table[min(tau, len(table) - 1)])
    raise SpecError(f"unknown step policy {policy!r}")
