"""Which training rows the k-th gradient uses: the batch schedule shared by every engine (runtime, its
reference twin, the MPI backend and the simulator); ``leashed.sim.batches`` re-exports it.

Every engine hands out *tickets* 0, 1, 2, ... to gradients in the order they are started (one shared
counter); ticket k uses batch ``k % nb`` of epoch ``k // nb``, where ``nb = n_rows // batch_size`` (the
last partial batch of an epoch is skipped, as in ``ExperimentSpec.total_gradients``) and each epoch has
its own permutation of the rows drawn from the seed. With one worker the tickets are the sequential
steps, so the simulator reproduces plain sequential SGD exactly (papers.md §2, SEQ: ``B_t``).
"""

from __future__ import annotations

import numpy as np

from leashed.errors import SpecError

__all__ = ["BatchSchedule", "batch_rows", "epoch_permutation"]

#: domain tag mixed into the seed so that the batch order never shares a random stream with the data
#: generators (``datasets.py`` seeds ``[seed, stream]``) or the timing streams
_TAG = 0x6261746368  # "batch"


def epoch_permutation(epoch: int, n_rows: int, seed: int) -> np.ndarray:
    """The row order of one epoch: a permutation of ``0 .. n_rows-1`` (int64)."""
    return np.random.default_rng([int(seed), _TAG, int(epoch)]).permutation(n_rows).astype(np.int64)


def _batches_per_epoch(n_rows: int, batch_size: int) -> int:
    nb = n_rows // batch_size
    if nb < 1:
        raise SpecError(f"batch size {batch_size} is larger than the training set ({n_rows} rows); "
                        f"choose --batch-size <= {n_rows}")
    return nb


def batch_rows(k: int, n_rows: int, batch_size: int, seed: int) -> np.ndarray:
    """Row indices (int64, ``batch_size`` of them) of ticket ``k``: epoch ``k // nb``, batch ``k % nb``."""
    epoch, b = divmod(int(k), _batches_per_epoch(n_rows, batch_size))
    return epoch_permutation(epoch, n_rows, seed)[b * batch_size:(b + 1) * batch_size].copy()


class BatchSchedule:
    """:func:`batch_rows` with the current epoch's permutation cached (tickets arrive nearly in order)."""

    def __init__(self, n_rows: int, batch_size: int, seed: int) -> None:
        self.n_rows, self.batch_size, self.seed = int(n_rows), int(batch_size), int(seed)
        self.per_epoch = _batches_per_epoch(self.n_rows, self.batch_size)
        self._perms: dict[int, np.ndarray] = {}

    def rows(self, k: int) -> np.ndarray:
        epoch, b = divmod(int(k), self.per_epoch)
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) > 2:  # tickets are handed out in order: keep only the recent epochs
                for old in sorted(self._perms)[:-2]:
                    del self._perms[old]
            perm = self._perms[epoch] = epoch_permutation(epoch, self.n_rows, self.seed)
        return perm[b * self.batch_size:(b + 1) * self.batch_size]
