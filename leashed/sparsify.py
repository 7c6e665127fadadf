"""The sparsifiers of papers.md §5 in numpy / plain Python: the statement the compiled kernels
(:mod:`leashed.runtime._sparse`) are held against, bit for bit (rand-k included), and the sparsifier of
the runtime's pure-Python reference twin. ``leashed.sim.gradients`` re-exports these names.

``topk:K`` keeps the K largest |g_j|, ties to the lower index; ``randk:K`` keeps K coordinates drawn by a
partial Fisher–Yates shuffle from the worker's splitmix64 stream, seeded as the runtime seeds its threads
(:func:`leashed.workload.thread_seeds`); with error memory each worker sends Φ(e + g) and keeps
e ← e + g − Φ(e + g).
"""

from __future__ import annotations

import numpy as np

from leashed.workload import thread_seeds

__all__ = ["NumpySparsifier", "randk_python", "sparse_seeds", "sparsify_numpy", "topk_numpy"]

_MASK64 = (1 << 64) - 1


def sparse_seeds(seed: int, m: int) -> list[int]:
    """The workers' splitmix64 seeds, as the runtime seeds its threads (:func:`leashed.workload.
    thread_seeds`): the first uint64 of each child of ``SeedSequence([seed, 2]).spawn(m)``."""
    return [int(s) for s in thread_seeds(seed, m)]


def topk_numpy(a: np.ndarray, k: int) -> np.ndarray:
    """Indices (increasing) of the k largest |a_j|, ties to the lower index: a stable argsort of −|a|
    (NaN last). The statement the compiled top-k is held against (papers.md §5)."""
    return np.sort(np.argsort(-np.abs(a), kind="stable")[:k])


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31), state


def randk_python(n_params: int, k: int, state: int, perm: np.ndarray) -> tuple[np.ndarray, int]:
    """(indices increasing, new state): the rand-k draw of the kernels in plain Python, bit for bit.

    Partial Fisher–Yates on ``perm`` (a permutation of 0..n_params-1, updated in place): for i < k, swap
    perm[i] with perm[i + ⌊x·(n_params − i)/2^64⌋], x the next splitmix64 output of ``state``."""
    for i in range(k):
        x, state = _splitmix64(state)
        j = i + ((x * (n_params - i)) >> 64)
        perm[i], perm[j] = perm[j], perm[i]
    return np.sort(perm[:k]), state


def sparsify_numpy(g: np.ndarray, kind: str, k: int, memory: np.ndarray | None = None,
                   keep: np.ndarray | None = None) -> np.ndarray:
    """Φ(g) of papers.md §5 as a dense float32 vector, in numpy.

    ``kind`` is ``topk`` or ``randk``; ``keep`` are the kept indices (top-k: computed here if None;
    rand-k: required, from :func:`randk_python`). With ``memory`` (updated in place): a = e + g, Φ(a) is
    returned and e ← a − Φ(a)."""
    a = g if memory is None else g + memory
    if keep is None:
        if kind != "topk":
            raise ValueError("rand-k needs the drawn indices (from randk_python)")
        keep = topk_numpy(a, k)
    out = np.zeros_like(a)
    out[keep] = a[keep]
    if memory is not None:
        memory[...] = a - out
    return out


class NumpySparsifier:
    """One worker's sparsifier in numpy / Python: the interface of
    :class:`leashed.runtime._sparse.Sparsifier` (unscaled), the same results bit for bit, slower."""

    def __init__(self, kind: str, n_params: int, k: int, memory: bool = False, seed: int = 0) -> None:
        self.kind, self.n_params, self.k = kind, n_params, k
        self.rng_state = int(seed) & _MASK64
        self.perm = np.arange(n_params, dtype=np.int64) if kind == "randk" else None
        self.memory = np.zeros(n_params, np.float32) if memory else None

    def __call__(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices increasing, values) of Φ(g) (Φ(e + g) with memory); updates memory and generator."""
        g = np.asarray(g, np.float32)
        a = g if self.memory is None else g + self.memory
        if self.kind == "randk":
            keep, self.rng_state = randk_python(self.n_params, self.k, self.rng_state, self.perm)
        else:
            keep = topk_numpy(a, self.k)
        out = sparsify_numpy(g, self.kind, self.k, self.memory, keep)
        return keep, out[keep]

    def dense(self, g: np.ndarray) -> np.ndarray:
        """Φ(g) as a dense float32 vector."""
        idx, val = self(g)
        out = np.zeros(self.n_params, np.float32)
        out[idx] = val
        return out
