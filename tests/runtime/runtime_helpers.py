"""Shared helpers of the runtime tests."""

from __future__ import annotations

import numpy as np

from leashed.results import RunResult
from leashed.spec import ExperimentSpec


def counter_spec(algorithm: str, threads: int, updates: int, dim: int = 20_000,
                 **kw: object) -> ExperimentSpec:
    """The "+1 counter" model (gradient -1 everywhere), lr 1, constant steps: after t applied steps every
    parameter is exactly t (papers.md §6.2 T9)."""
    return ExperimentSpec(algorithm=algorithm, threads=threads, model="counter", dim=dim, lr=1.0,
                          updates=updates, evaluations=0, **kw)


def threads_overlap(result: RunResult) -> bool:
    """True if some [t_start, t_commit] intervals of two different threads intersect."""
    u = result.updates
    order = np.argsort(u.t_start, kind="stable")
    start, end, thread = u.t_start[order], u.t_commit[order], u.thread[order]
    latest_end = {}  # thread -> latest end among intervals started so far
    for s, e, th in zip(start, end, thread, strict=True):
        if any(other != th and le > s for other, le in latest_end.items()):
            return True
        latest_end[int(th)] = max(latest_end.get(int(th), -np.inf), e)
    return False


def overlapping_run(spec: ExperimentSpec, tries: int = 3) -> RunResult:
    """The first of up to ``tries`` runs of ``spec`` whose threads overlap (:func:`threads_overlap`).

    A short run on a 2-core machine can, now and then, have one thread finish its share before the other
    is scheduled; such a run tests no race, so it is rerun, and ``tries`` runs without overlap fail."""
    from leashed.runtime.run import run

    for _ in range(tries):
        result = run(spec)
        if threads_overlap(result):
            return result
    raise AssertionError(f"the threads never ran at the same time in {tries} runs: nothing was tested")


def check_records(result: RunResult) -> None:
    """Invariants of the per-update records every algorithm must satisfy."""
    u = result.updates
    spec = result.spec
    total = result.extra["total_gradients"]
    applied = result.totals["updates_applied"]
    dropped = result.totals["updates_dropped"]
    assert len(u) == applied + dropped == total == result.extra["gradients_computed"]
    assert set(np.unique(u.thread)) <= set(range(spec.threads))
    com = ~u.dropped
    assert int(com.sum()) == applied
    assert np.array_equal(u.staleness[com], u.version_commit[com] - u.version_read[com])
    assert np.all(u.staleness[com] >= 0)
    assert np.all(u.version_commit[u.dropped] == -1) and np.all(u.staleness[u.dropped] == -1)
    assert np.all(u.t_start <= u.t_grad) and np.all(u.t_grad <= u.t_commit)
    if spec.algorithm in ("seq", "lock", "hogwild", "leashed", "seqlock"):
        # one commit per version, in commit order
        assert np.array_equal(u.version_commit[com], np.arange(applied))
    if spec.algorithm == "sync":
        assert np.all(u.staleness == 0)
        rounds = result.extra["rounds"]
        assert rounds == -(-total // spec.threads)
        assert np.array_equal(np.bincount(u.version_commit, minlength=rounds)[:-1],
                              np.full(rounds - 1, spec.threads))
    if spec.algorithm == "leashed":
        p = spec.persistence
        assert np.all(u.attempts >= 1)
        if p != float("inf"):
            assert np.all(u.attempts[com] <= p + 1)
            assert np.all(u.attempts[u.dropped] == p + 1)
        assert result.totals["cas_failures"] == int((u.attempts[com] - 1).sum() + u.attempts[u.dropped].sum())
        assert result.extra["pool_problems"] == []
    elif spec.algorithm == "seqlock":  # attempts = snapshot copies (docs/seqlock.md); no CAS, no drops
        assert dropped == 0 and np.all(u.attempts >= 1) and result.totals["cas_failures"] == 0
    else:
        assert dropped == 0 and np.all(u.attempts == 1)
