"""The batch schedule, re-exported for the simulator: the rule lives in :mod:`leashed.batches`, shared by
every engine (so the runtime need not import the simulator)."""

from leashed.batches import BatchSchedule, batch_rows, epoch_permutation

__all__ = ["BatchSchedule", "batch_rows", "epoch_permutation"]
