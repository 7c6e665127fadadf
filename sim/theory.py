"""The closed forms of papers.md §6.1 ([derived]): what the simulator should reproduce.

C, U are mean compute and update times, r = C/U, m the thread count. These are first-order predictions
(papers.md §6.3: T5–T7 hold to about 10–15 % away from the knee m* ≈ r + 1); T1, T2 and T4 are exact.
"""

from __future__ import annotations

import math

__all__ = ["cas_failure", "geometric_pmf", "knee", "staleness_lock", "staleness_persistence0", "throughput"]


def knee(r: float) -> float:
    """m* ≈ r + 1: beyond it Leashed-SGD saturates at X ≈ 1/U (papers.md §6.1, T5)."""
    return r + 1.0


def cas_failure(m: int, compute: float, update: float) -> float:
    """Predicted CAS failure fraction p (papers.md §6.1 item 2, T6), T_p = ∞.

    Below the knee, the fixed point of p = 1 − exp(−((m−1)/m)·X·U), X = m/(C + U/(1−p)); above it,
    1 − 1/(m − r). The larger of the two is returned.
    """
    if m <= 1 or update <= 0:
        return 0.0
    p = 0.0
    for _ in range(500):
        x = m / (compute + update / (1.0 - p))
        new = 1.0 - math.exp(-((m - 1) / m) * x * update)
        if abs(new - p) < 1e-13:
            p = new
            break
        p = new
    r = compute / update
    above = 1.0 - 1.0 / (m - r) if m - r > 1 else 0.0
    return max(p, above)


def throughput(m: int, compute: float, update: float) -> float:
    """Predicted committed updates per unit time (papers.md §6.1 item 1, T5): min(m/(C + U/(1−p)), 1/U)."""
    if update <= 0:
        return m / compute
    p = cas_failure(m, compute, update)
    return min(m / (compute + update / (1.0 - p)), 1.0 / update)


def staleness_persistence0(m: int, throughput_x: float, compute: float) -> float:
    """E[τ | committed] for T_p = 0: ((m−1)/m)·X·C (papers.md §6.1 item 3, T7), X the committed rate."""
    return (m - 1) / m * throughput_x * compute


def staleness_lock(m: int, mean_read_waiters: float) -> float:
    """Lock: E[τ] = m − 1 − E[others waiting for / holding the read lock at a commit] (T4)."""
    return m - 1 - mean_read_waiters


def geometric_pmf(k: int, m: int) -> float:
    """P(τ = k) for exponential compute and zero-time updates: Geometric(q = 1/m) (T2)."""
    q = 1.0 / m
    return q * (1.0 - q) ** k
