"""Exact event traces of tiny runs (2 workers, constant times), worked out by hand.

C = 10, U = 2 (copy 1 + apply 1). At equal instants SimPy resumes workers in the order their timeouts
were scheduled (earlier-scheduled first), which the expected sequences below follow.
Columns: (thread, ticket, version read, version at commit (-1 dropped), staleness, attempts, dropped,
t_start, t_grad, t_commit).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from simtest_helpers import sim, spec_of

from leashed.sim.simulate import live_vector_stats, live_vectors_at, lock_read_waiters, run_simulation
from leashed.sim.timing import Constant, Distribution, TimingModel


def rows(s) -> list[tuple]:
    u = s.result.updates
    out = []
    for j in range(len(u)):
        out.append((int(u.thread[j]), int(s.records["ticket"][j]), int(u.version_read[j]),
                    int(u.version_commit[j]), int(u.staleness[j]), int(u.attempts[j]), bool(u.dropped[j]),
                    float(u.t_start[j]), float(u.t_grad[j]), float(u.t_commit[j])))
    return out


#: the traces below that charge a failed attempt its full U are of the paper's attempt model
PAPER = {"attempt_model": "paper"}


def test_leashed_runtime_attempt_model_trace():
    # The runtime's attempt model: a doomed attempt ends at the competing commit. t=10: both attempt on
    # v0; t=12: W0 commits v1, W1's attempt is abandoned at once and retries on v1 [12,14] (tau 1, 2
    # attempts); W0 computes ticket 2 on v1 [12,22] and attempts on v2 [22,24]; W1 computes ticket 3 on
    # v2 [14,24]; at 24 W1 (scheduled first) starts its attempt on v2, then W0 commits v3: W1's attempt is
    # abandoned at 24 and its retry [24,26] commits. The paper's model ends at 28 (trace below).
    s = sim("leashed", 2, 4, "const:10", "const:2")
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 10.0, 12.0),
        (1, 1, 0, 1, 1, 2, False, 0.0, 10.0, 14.0),
        (0, 2, 1, 2, 1, 1, False, 12.0, 22.0, 24.0),
        (1, 3, 2, 3, 1, 2, False, 14.0, 24.0, 26.0),
    ]
    assert s.result.updates.t_attempt.tolist() == [10.0, 12.0, 22.0, 24.0]
    assert s.result.totals["wall_time_s"] == 26.0
    assert s.result.totals["cas_failures"] == 2


class _PerWorker(Distribution):
    """Fixed durations per worker: the k-th stream handed out yields ``values[k]`` forever (tests only)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.handed = 0

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def cv(self) -> float:
        return 0.0

    def describe(self) -> str:
        return "per-worker:" + ",".join(map(str, self.values))

    def stream(self, rng):  # noqa: ANN001, ANN201 - test double
        value = self.values[self.handed % len(self.values)]
        self.handed += 1
        return itertools.repeat(float(value))


@pytest.mark.parametrize("chunks, retry_at", [(0, 12.0), (4, 12.0), (3, 12.5)])
def test_runtime_attempt_model_abandons_at_a_chunk_boundary(chunks, retry_at):
    # W0 computes 10, W1 10.5, U = 2. W0 attempts [10,12] and commits v1 at 12, when W1 is 1.5 into its
    # attempt. Continuously checked (0 chunks) or in 4 chunks of 0.5, 1.5 is a boundary: W1 abandons at
    # 12 and retries [12,14]. In 3 chunks of 2/3 the next boundary is 2 = the end: W1 completes at 12.5,
    # its CAS fails, and it retries [12.5,14.5].
    spec = spec_of("leashed", 2, 2, "const:10", "const:2", extra={"copy_chunks": chunks})
    s = run_simulation(spec, TimingModel(_PerWorker(10.0, 10.5), Constant(2.0)), metadata=False)
    u = s.result.updates
    assert u.t_commit.tolist() == [12.0, retry_at + 2]
    assert u.t_attempt.tolist() == [10.0, retry_at]
    assert u.attempts.tolist() == [1, 2]


def test_leashed_unbounded_persistence_trace():
    # t=0: both pin v0 and compute. t=10: both attempt on v0. t=12: W0's CAS wins (v1); W1 fails and
    # retries on v1; W0 computes ticket 2 on v1. t=14: W1 commits (tau 1, 2 attempts), computes ticket 3
    # on v2. t=22: W0 attempts on v2. t=24: W1 (scheduled at 14) first starts its attempt on v2, then
    # W0's CAS succeeds (v3). t=26: W1 fails, retries on v3. t=28: W1 commits.
    s = sim("leashed", 2, 4, "const:10", "const:2", extra=PAPER)
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 10.0, 12.0),
        (1, 1, 0, 1, 1, 2, False, 0.0, 10.0, 14.0),
        (0, 2, 1, 2, 1, 1, False, 12.0, 22.0, 24.0),
        (1, 3, 2, 3, 1, 2, False, 14.0, 24.0, 28.0),
    ]
    t = s.result.totals
    assert (t["updates_applied"], t["updates_dropped"], t["cas_failures"]) == (4, 0, 2)
    assert t["wall_time_s"] == 28.0
    # live vectors: v0 [0,12); W0's copy [10,..) becomes v1 [12,22) (pinned by W0's compute until 22);
    # W1's copy [10,..) becomes v2 [14,25) (W1 pins v2 for its copy at 24..25); W0's copy [22,..) is v3
    # [24,28); W1's copy [24,..) is v4 until the end.
    assert live_vectors_at(s.live_alloc, s.live_free, np.array([5, 11, 13, 23, 24.5, 26, 28])).tolist() == \
        [1, 3, 2, 2, 3, 2, 1]
    mean, peak = live_vector_stats(s.live_alloc, s.live_free, 28.0)
    assert peak == 3
    assert mean == pytest.approx((1 * 10 + 3 * 2 + 2 * 10 + 2 * 2 + 3 * 1 + 2 * 3) / 28)


def test_leashed_persistence_zero_drops_the_loser():
    # t=12: W0 commits ticket 0; W1's only attempt fails and ticket 1 is dropped; no tickets remain for
    # W1, which stops. W0 computes ticket 2 on v1 and commits it at 24.
    s = sim("leashed", 2, 3, "const:10", "const:2", persistence=0)
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 10.0, 12.0),
        (1, 1, 0, -1, -1, 1, True, 0.0, 10.0, 12.0),
        (0, 2, 1, 1, 0, 1, False, 12.0, 22.0, 24.0),
    ]
    t = s.result.totals
    assert (t["updates_applied"], t["updates_dropped"], t["cas_failures"]) == (2, 1, 1)
    assert live_vector_stats(s.live_alloc, s.live_free, 24.0) == (pytest.approx(30 / 24), 3)


def test_leashed_persistence_one_retries_once():
    # Three workers on one vector: at 12 W0 wins, W1 and W2 fail once and retry on v1; at 14 W1 wins
    # (tau 1), W2 fails a second time and drops ticket 2 (T_p = 1).
    s = sim("leashed", 3, 3, "const:10", "const:2", persistence=1)
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 10.0, 12.0),
        (1, 1, 0, 1, 1, 2, False, 0.0, 10.0, 14.0),
        (2, 2, 0, -1, -1, 2, True, 0.0, 10.0, 14.0),
    ]
    assert s.result.totals["cas_failures"] == 3


def test_lock_trace_and_read_waiters():
    # The mutex serves requests in order. W0 reads [0,1], W1 waits and reads [1,2]. W0 commits [11,12];
    # W1's commit request at 12 comes before W0's read request at 12 (scheduled earlier), so W1 commits
    # [12,13] (tau 1) while W0 waits to read [13,14]; W1 reads [14,15]. W0 commits [24,25], W1 [25,26].
    s = sim("lock", 2, 4, "const:10", "const:2")
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 11.0, 12.0),
        (1, 1, 0, 1, 1, 1, False, 0.0, 12.0, 13.0),
        (0, 2, 2, 2, 0, 1, False, 12.0, 24.0, 25.0),
        (1, 3, 2, 3, 1, 1, False, 13.0, 25.0, 26.0),
    ]
    assert s.records["aux1"].tolist() == [1.0, 2.0, 14.0, 15.0]   # end of each read under the lock
    assert s.records["aux2"].tolist() == [11.0, 12.0, 24.0, 25.0]  # commit acquires the lock
    # at W1's commit (12) W0 is waiting to read: it is not in a read->commit window
    assert lock_read_waiters(s).tolist() == [0, 1, 0, 0]


def test_hogwild_trace():
    # copy + compute = 11, then fetch-and-add (the commit instant, t_grad), then apply 1.
    s = sim("hogwild", 2, 4, "const:10", "const:2")
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 11.0, 12.0),
        (1, 1, 0, 1, 1, 1, False, 0.0, 11.0, 12.0),
        (0, 2, 2, 2, 0, 1, False, 12.0, 23.0, 24.0),
        (1, 3, 2, 3, 1, 1, False, 12.0, 23.0, 24.0),
    ]


def test_sync_trace():
    # Round 0 (version 0): barrier at 10, both stripes applied in parallel [10,12]; round 1 (version 1)
    # starts at 12.
    s = sim("sync", 2, 4, "const:10", "const:2")
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 10.0, 12.0),
        (1, 1, 0, 0, 0, 1, False, 0.0, 10.0, 12.0),
        (0, 2, 1, 1, 0, 1, False, 12.0, 22.0, 24.0),
        (1, 3, 1, 1, 0, 1, False, 12.0, 22.0, 24.0),
    ]
    assert s.result.extra["rounds"] == 2


def test_sync_round_waits_for_the_slowest():
    # uniform compute: the round ends at the slowest gradient plus the slowest stripe
    s = sim("sync", 3, 6, "uniform:low=1,high=9", "uniform:low=0.1,high=0.9")
    u = s.result.updates
    for r in (0, 1):
        idx = slice(3 * r, 3 * r + 3)
        assert (u.version_read[idx] == r).all() and len(set(u.t_commit[idx].tolist())) == 1
        assert u.t_commit[idx][0] > u.t_grad[idx].max()
    assert u.t_start[3] == u.t_commit[0]


def test_sync_partial_last_round():
    s = sim("sync", 2, 3, "const:10", "const:2")
    assert [r[:5] for r in rows(s)] == [(0, 0, 0, 0, 0), (1, 1, 0, 0, 0), (0, 2, 1, 1, 0)]
    assert s.result.totals["wall_time_s"] == 24.0


def test_seq_trace():
    s = sim("seq", 1, 3, "const:10", "const:2")
    assert rows(s) == [
        (0, 0, 0, 0, 0, 1, False, 0.0, 10.0, 12.0),
        (0, 1, 1, 1, 0, 1, False, 12.0, 22.0, 24.0),
        (0, 2, 2, 2, 0, 1, False, 24.0, 34.0, 36.0),
    ]


def test_samples_follow_the_trace():
    s = sim("leashed", 2, 4, "const:10", "const:2", samples=4, extra=PAPER)
    smp = s.result.samples
    assert smp.time.tolist() == [0.0, 7.0, 14.0, 21.0, 28.0]
    assert smp.version.tolist() == [0, 0, 2, 2, 4]
    assert smp.live_vectors.tolist() == [1, 1, 2, 2, 1]
    assert np.isnan(smp.loss).all()
    base = sim("lock", 2, 4, "const:10", "const:2", samples=4).result.samples
    assert base.live_vectors.tolist() == [3] * 5  # shared vector + one private copy per thread


def test_bus_contention_slows_concurrent_copies():
    # F = 0.5. The factor is fixed when an update starts, from the copies already running plus its own:
    # W0 starts first at 10, alone: U = 2, [10,12], wins. W1 starts at 10 while W0 copies: U = 2 * 1.5 = 3,
    # [10,13], fails; its retry at 13 runs alone: [13,15].
    spec = spec_of("leashed", 2, 2, "const:10", "const:2", extra=PAPER)
    s = run_simulation(spec, TimingModel.parse("const:10", "const:2", 0.5, 0.5), metadata=False)
    assert [r[2:] for r in rows(s)] == [(0, 0, 0, 1, False, 0.0, 10.0, 12.0),
                                        (0, 1, 1, 2, False, 0.0, 10.0, 15.0)]


@pytest.mark.parametrize("compute, update", [("const:10", "const:2"), ("gamma:mean=10,cv=0.3", "exp:mean=1"),
                                             ("exp:mean=1", "uniform:low=0.5,high=1.5")])
def test_lock_fifo_shortcut_equals_simpy_resource(compute, update):
    """The lock's FIFO-server shortcut gives exactly the trace of a ``simpy.Resource`` mutex."""
    spec = spec_of("lock", 8, 3_000, compute, update)
    fast = run_simulation(spec, metadata=False)
    reference = run_simulation(spec, metadata=False, lock_model="resource")
    for name in fast.records:
        np.testing.assert_allclose(fast.records[name], reference.records[name], rtol=1e-12, atol=1e-12,
                                   err_msg=name)
    assert fast.events < reference.events
