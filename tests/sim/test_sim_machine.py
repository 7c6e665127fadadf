"""The machine model (leashed.sim.machine): the round-robin scheduler and hand-solved runs on P < m cores."""

from __future__ import annotations

import numpy as np
import pytest
from simtest_helpers import spec_of

from leashed.errors import SpecError
from leashed.sim.machine import JitteredScheduler, Machine, Scheduler, irregular_share, rotation_jitter
from leashed.sim.simulate import run_simulation


def test_scheduler_four_threads_on_two_cores():
    # slot s = [s, s+1): threads 0, 1 run in even slots, 2, 3 in odd ones
    s = Scheduler.cores(4, 2, 1.0)
    assert s.share == 0.5
    assert [[s.running(j, t + 0.5) for t in range(4)] for j in range(4)] == \
        [[True, False, True, False]] * 2 + [[False, True, False, True]] * 2
    assert [s.cpu(0, t) for t in (0, 0.5, 1, 1.5, 2, 2.5, 3)] == [0, 0.5, 1, 1, 1, 1.5, 2]
    assert [s.cpu(2, t) for t in (0, 0.5, 1, 1.5, 2, 2.5, 3)] == [0, 0, 0, 0.5, 1, 1, 1]
    assert [s.wall(0, c) for c in (0.5, 1, 1.5, 2)] == [0.5, 1, 2.5, 3]
    assert [s.wall(2, c) for c in (0, 0.5, 1, 1.5)] == [1, 1.5, 2, 3.5]
    assert s.end_of(0, 0.5, 1.0) == 2.5 and s.end_of(2, 0.0, 0.5) == 1.5
    assert s.next_run(2, 0.25) == pytest.approx(1.0) and s.next_run(0, 0.25) == 0.25
    assert Scheduler.cores(2, 2, 1.0) is None  # every thread has a core


def test_scheduler_three_threads_on_two_cores_share_two_thirds():
    s = Scheduler.cores(3, 2, 0.5)
    for slot in range(12):  # exactly two threads in every slot
        assert sum(s.running(j, slot * 0.5 + 0.25) for j in range(3)) == 2
    for j in range(3):
        assert s.cpu(j, 30.0) == pytest.approx(20.0)  # 2/3 of a core each
        for c in (0.1, 0.5, 0.7, 1.0, 3.3):
            assert s.cpu(j, s.wall(j, c)) == pytest.approx(c)
    # by hand (share 2/3, phases 2/3, 1/3, 0): slot 0 runs {0, 1}, slot 1 {0, 2}, slot 2 {1, 2}, then again;
    # a thread's core is its rank among the running ones (the thread of the replayed run it reads)
    running = [[j for j in range(3) if s.running(j, slot * 0.5 + 0.25)] for slot in range(6)]
    assert running == [[0, 1], [0, 2], [1, 2]] * 2
    cores = [{j: s.core_of(j, slot * 0.5 + 0.25) for j in run} for slot, run in enumerate(running)]
    assert cores[:3] == [{0: 0, 1: 1}, {0: 0, 2: 1}, {1: 0, 2: 1}]
    assert s.core_of(2, 0.1) == 2  # not on a core in slot 0: its own number


def test_scheduler_shares_what_the_background_leaves():
    # 2 cores, half a core taken by others: 2 threads get 3/4 of a core each; one thread keeps its core
    s = Scheduler.cores(2, 2, 0.01, background_load=0.5)
    assert s.share == pytest.approx(0.75)
    assert s.cpu(0, 100.0) == pytest.approx(75.0, rel=1e-3)
    assert s.cpu(1, 100.0) == pytest.approx(75.0, rel=1e-3)
    assert Scheduler.cores(1, 2, 0.01, background_load=1.0) is None


def test_hogwild_four_threads_two_cores_hand_solved():
    # C = 0.5, U = 0, slice 1. W0, W1 run in [0,1): gradients end at 0.5 and 1.0, then in [2,3) at 2.5.
    # W2, W3 run in [1,2): their first gradients (read v0) end at 1.5 with tau 4 and 5. Eight tickets.
    spec = spec_of("hogwild", 4, 8, "const:0.5", "const:0")
    s = run_simulation(spec, metadata=False, machine=Machine(cores=2, time_slice_s=1.0))
    u = s.result.updates
    assert u.t_grad.tolist() == [0.5, 0.5, 1.0, 1.0, 1.5, 1.5, 2.5, 2.5]
    assert u.thread.tolist() == [0, 1, 0, 1, 2, 3, 0, 1]
    assert u.staleness.tolist() == [0, 1, 1, 1, 4, 5, 3, 3]
    assert s.result.totals["wall_time_s"] == 2.5
    assert s.result.extra["machine"]["applied"] is True


def test_switch_cost_is_lost_each_time_a_thread_comes_back():
    # 4 threads on 2 cores (share 1/2: every running slot starts a run): g = 0.1 of q = 1 -> e = 0.9
    s = Scheduler.cores(4, 2, 1.0, switch_cost_s=0.1)
    assert s.efficiency == pytest.approx(0.9)
    assert [s.cpu(0, t) for t in (0.5, 1, 2, 3)] == pytest.approx([0.45, 0.9, 0.9, 1.8])
    assert s.wall(0, 0.9) == pytest.approx(1.0) and s.wall(0, 1.35) == pytest.approx(2.5)
    # 3 threads (share 2/3): one run start per two running slots -> e = 1 - 0.1 / 2
    assert Scheduler.cores(3, 2, 1.0, switch_cost_s=0.1).efficiency == pytest.approx(0.95)
    # by hand: hogwild C = 0.45, U = 0, q = 1, g = 0.1: each slot now does two 0.45 s gradients of
    # useful work exactly; W0, W1 finish them at 0.5 and 1.0 of wall time, as C = 0.5 without a cost
    spec = spec_of("hogwild", 4, 8, "const:0.45", "const:0")
    u = run_simulation(spec, metadata=False, machine=Machine(cores=2, time_slice_s=1.0,
                                                             switch_cost_s=0.1)).result.updates
    assert u.t_grad.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.5, 1.5, 2.5, 2.5])
    # every thread with its own core: no switch, no cost
    assert Scheduler.cores(2, 2, 1.0, switch_cost_s=0.1) is None
    with pytest.raises(SpecError, match="switch cost"):
        Machine(cores=2, switch_cost_s=-1.0)


def test_machine_files_switch_gap_is_a_switch_cost_only_when_short():
    from types import SimpleNamespace

    from leashed.sim.calibration import switch_cost

    assert switch_cost(SimpleNamespace(switch_gap_s=70e-6), 3.9e-3) == 70e-6
    assert switch_cost(SimpleNamespace(switch_gap_s=8e-3), 3.9e-3) == 0.0  # other processes, not a switch
    assert switch_cost(SimpleNamespace(switch_gap_s=0.0), 3.9e-3) == 0.0


def test_background_load_takes_its_share():
    # seq alone on one core, then with another process taking half of it: every phase runs at half speed
    spec = spec_of("seq", 1, 100, "const:0.3", "const:0.1")
    alone = run_simulation(spec, metadata=False, machine=Machine(cores=1)).result
    loaded = run_simulation(spec, metadata=False, machine=Machine(cores=1, background_load=0.5,
                                                                    time_slice_s=0.05)).result
    assert alone.totals["wall_time_s"] == pytest.approx(40.0)
    assert loaded.totals["wall_time_s"] == pytest.approx(80.0, rel=0.01)


def test_leashed_on_fewer_cores_keeps_the_throughput_of_the_cores():
    # m = 4 on 2 cores: throughput is that of 2 threads (both cores busy), not of 4
    base = dict(compute="gamma:mean=250us,cv=0.1", update="const:20us")
    two = run_simulation(spec_of("leashed", 2, 6000, base["compute"], base["update"]), metadata=False,
                         machine=Machine(cores=2)).result
    four = run_simulation(spec_of("leashed", 4, 6000, base["compute"], base["update"]), metadata=False,
                          machine=Machine(cores=2)).result
    ideal = run_simulation(spec_of("leashed", 4, 6000, base["compute"], base["update"]),
                           metadata=False).result
    x2, x4, xi = (r.summary()["updates_per_s"] for r in (two, four, ideal))
    assert x4 == pytest.approx(x2, rel=0.05)
    assert xi > 1.7 * x4
    tau = four.staleness
    assert np.percentile(tau, 99.5) > 2 * np.percentile(ideal.staleness, 99.5)  # descheduled windows


def test_machine_validation():
    for bad in (dict(cores=0), dict(cores=-2), dict(time_slice_s=0), dict(background_load=-1),
                dict(read_slowdown=float("nan")), dict(copy_concurrency=(1.0, 0.0))):
        with pytest.raises(SpecError):
            Machine(**bad)
    assert Machine().ideal and not Machine(cores=2).ideal
    m = Machine(cores=4, copy_concurrency=(1.0, 1.5, 2.0, 2.5), calibrated_concurrency=2)
    assert m.copy_factor(1) == 1.0 and m.copy_factor(2) == 1.0
    assert m.copy_factor(4) == pytest.approx(2.5 / 1.5)
    assert Machine.from_description(m.describe()) == m


def test_leashed_two_threads_one_core_hand_solved():
    # One core, slice 1: W0 runs in even slots, W1 in odd ones. C = 0.5, U = 0.6, doomed attempts end at
    # once (or, descheduled, when their thread runs again).
    # W0: compute [0, .5), attempt on v0 .5 CPU in [.5, 1) + .1 in [2, 2.1): commits v1 at 2.1.
    # W1: compute [1, 1.5), attempt on v0 [1.5, 2) + ..., doomed at 2.1 while descheduled: abandoned when
    #     it runs again at 3; retry on v1 [3, 3.6): commits v2 at 3.6 (tau 1, 2 attempts).
    # W0: ticket 2 on v1: compute [2.1, 2.6), attempt on v1 [2.6, 3) + ..., doomed at 3.6, abandoned at 4;
    #     retry on v2 [4, 4.6): commits v3 at 4.6.
    spec = spec_of("leashed", 2, 3, "const:0.5", "const:0.6")
    s = run_simulation(spec, metadata=False, machine=Machine(cores=1, time_slice_s=1.0))
    u = s.result.updates
    got = list(zip(u.thread.tolist(), u.version_read.tolist(), u.version_commit.tolist(), u.attempts.tolist(),
                   u.t_grad.tolist(), u.t_attempt.tolist(), u.t_commit.tolist(), strict=True))
    expected = [(0, 0, 0, 1, 0.5, 0.5, 2.1), (1, 0, 1, 2, 1.5, 3.0, 3.6), (0, 1, 2, 2, 2.6, 4.0, 4.6)]
    assert len(got) == 3
    for row, want in zip(got, expected, strict=True):
        assert row[:4] == want[:4]
        assert row[4:] == pytest.approx(want[4:])
    assert s.result.totals["cas_failures"] == 2


def test_the_share_measured_times_already_hold_is_not_taken_twice():
    # runs of 2 threads on 2 cores that lost 0.2 cores to others: their times hold a share of 0.9
    assert Scheduler.cores(2, 2, 0.01, background_load=0.2, calibrated_share=0.9) is None  # same load
    s = Scheduler.cores(4, 2, 0.01, background_load=0.2, calibrated_share=0.9)
    assert s.share == pytest.approx((1.8 / 4) / 0.9)
    heavier = Scheduler.cores(2, 2, 0.01, background_load=1.0, calibrated_share=0.9)
    assert heavier.share == pytest.approx(0.5 / 0.9)
    machine = Machine(cores=2, background_load=0.2, calibrated_share=0.9)
    assert Machine.from_description(machine.describe()) == machine
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(SpecError, match="calibrated core share"):
            Machine(cores=2, calibrated_share=bad)


def test_read_slowdown_needs_both_threads_on_a_core():
    """On one core two threads never run at once: a copy cannot slow a gradient that is not running, so
    the read slowdown changes nothing (it is charged in the reader's CPU time within the copy)."""
    spec = spec_of("leashed", 2, 400, "gamma:mean=1ms,cv=0.3", "const:200us")
    base = run_simulation(spec, metadata=False, machine=Machine(cores=1, time_slice_s=1e-3)).result
    slowed = run_simulation(spec, metadata=False,
                            machine=Machine(cores=1, time_slice_s=1e-3, read_slowdown=1.0)).result
    assert np.array_equal(base.updates.t_commit, slowed.updates.t_commit)
    # on two cores the same slowdown does stretch the gradients
    two = run_simulation(spec, metadata=False, machine=Machine(cores=2, read_slowdown=1.0)).result
    free = run_simulation(spec, metadata=False, machine=Machine(cores=2)).result
    assert two.totals["wall_time_s"] > free.totals["wall_time_s"]


@pytest.mark.parametrize("m, cores, load", [(3, 2, 0.0), (4, 2, 0.0), (8, 2, 0.0), (5, 2, 0.3), (7, 3, 0.5),
                                            (16, 2, 0.0), (9, 4, 1.7)])
def test_jittered_scheduler_without_jitter_is_the_rotation(m, cores, load):
    """Fewest slots first, then longest waiting, then lowest number: exactly the rotation's slots."""
    share = Scheduler.thread_share(m, cores, load)
    exact, table = Scheduler(m, share, 1.0), JitteredScheduler(m, share, 1.0, jitter=0.0)
    assert [[table.running(j, s + 0.5) for s in range(300)] for j in range(m)] == \
        [[exact.running(j, s + 0.5) for s in range(300)] for j in range(m)]
    assert table.cpu(m - 1, 123.4) == exact.cpu(m - 1, 123.4) and table.wall(0, 77.7) == exact.wall(0, 77.7)


@pytest.mark.parametrize("m, cores, load", [(4, 2, 0.0), (8, 2, 0.0), (5, 2, 0.3)])
def test_jittered_scheduler_keeps_every_share_and_core_count(m, cores, load):
    share = Scheduler.thread_share(m, cores, load)
    exact, s = Scheduler(m, share, 1.0), JitteredScheduler(m, share, 1.0, jitter=0.6, seed=4)
    for slot in range(0, 400, 7):  # as many threads per slot as the rotation; every share within one slot
        t = slot + 0.5
        assert sum(s.running(j, t) for j in range(m)) == sum(exact.running(j, t) for j in range(m))
        for j in range(m):
            assert abs(s.cpu(j, slot) - share * slot) <= 1.0 + 1e-9
    for j in range(m):  # cpu and wall are inverses on the running slots
        for c in (0.25, 1.0, 7.5, 33.3):
            assert s.cpu(j, s.wall(j, c)) == pytest.approx(c)
    again = JitteredScheduler(m, share, 1.0, jitter=0.6, seed=4)
    other = JitteredScheduler(m, share, 1.0, jitter=0.6, seed=5)
    pattern = [[x.running(j, t + 0.5) for t in range(200) for j in range(m)] for x in (s, again, other)]
    assert pattern[0] == pattern[1] != pattern[2]  # one seed, one schedule


def test_rotation_jitter_reproduces_the_measured_irregular_share():
    """4 busy threads on 2 cores: the exact rotation keeps every thread off for one slice; jitter makes a
    share of the gaps two slices long, and rotation_jitter inverts that (on other seeds than its own)."""
    assert irregular_share(Scheduler(4, 0.5, 1.0), 400) == 0.0
    shares = [irregular_share(JitteredScheduler(4, 0.5, 1.0, jitter=p, seed=9), 3000)
              for p in (0.2, 0.5, 1.0)]
    assert 0.0 < shares[0] < shares[1] < shares[2] < 0.5
    for measured in (0.05, 0.13, 0.25):
        p = rotation_jitter(measured, 4, 0.5)
        seen = np.mean([irregular_share(JitteredScheduler(4, 0.5, 1.0, jitter=p, seed=s), 2000)
                        for s in (21, 22, 23)])
        assert seen == pytest.approx(measured, abs=0.015)
    assert rotation_jitter(0.0, 4, 0.5) == 0.0 and rotation_jitter(0.99, 4, 0.5) == 1.0
    # 8 threads on 2 cores: the rotation keeps a thread off 3 slices; longer gaps are the irregular ones
    assert irregular_share(Scheduler(8, 0.25, 1.0), 400) == 0.0
    assert irregular_share(JitteredScheduler(8, 0.25, 1.0, jitter=0.5, seed=3), 1000) > 0.05


def test_rotation_jitter_is_read_off_calibration_runs_that_time_shared_the_cores():
    """A run's commit times show its off-core gaps: simulated on a jittered rotation, the jitter read off
    its irregular gaps is the one it was simulated with; none where the threads had their own cores."""
    from leashed.sim.calibration import measured_rotation_jitter, run_irregular_share

    def run(m: int, jitter: float):
        spec = spec_of("hogwild", m, 4000, "const:0.5ms", "const:20us")
        return run_simulation(spec, metadata=False, machine=Machine(cores=2, time_slice_s=4e-3,
                                                                    rotation_jitter=jitter)).result

    exact, jittered = run(4, 0.0), run(4, 0.5)
    assert run_irregular_share(exact, 2, 4e-3)[0] == 0.0
    share, gaps = run_irregular_share(jittered, 2, 4e-3)
    assert gaps > 400 and share > 0.05
    jitter, notes = measured_rotation_jitter([exact, jittered], 2, 4e-3)
    alone, _ = measured_rotation_jitter([jittered], 2, 4e-3)
    assert alone == pytest.approx(0.5, abs=0.12)
    assert 0 < jitter < alone and notes["rotation_irregular_share"][0] == 0.0
    assert run_irregular_share(run(2, 0.5), 2, 4e-3) is None  # 2 threads, 2 cores: nothing time-shared
    assert measured_rotation_jitter([run(2, 0.0)], 2, 4e-3) == (0.0, {})


def test_rotation_jitter_option(tmp_path):
    from leashed.results import RunResult

    from conftest import assert_one_line_error, run_cli

    common = ["simulate", "--algorithm", "hogwild", "--threads", "4", "--compute-time", "const:1ms",
              "--update-time", "const:20us", "--updates", "200", "--quiet"]
    assert run_cli(*common, "--cores", "2", "--rotation-jitter", "0.3", "--out", str(tmp_path / "a.npz")
                   ).returncode == 0
    assert RunResult.load(tmp_path / "a.npz").extra["machine"]["rotation_jitter"] == 0.3
    assert_one_line_error(run_cli(*common, "--cores", "2", "--rotation-jitter", "1.5", "--out",
                                  str(tmp_path / "c.npz")), "rotation jitter")
    assert_one_line_error(run_cli(*common, "--rotation-jitter", "0.5", "--out", str(tmp_path / "d.npz")),
                          "--rotation-jitter needs cores")
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "d.npz").exists()


def _roomy_machine_is_ideal(spec) -> None:
    """With a core for every thread the machine model reproduces the ideal machine's run exactly."""
    ideal = run_simulation(spec, metadata=False).result.updates
    roomy = run_simulation(spec, metadata=False, machine=Machine(cores=8, time_slice_s=1.0)).result.updates
    for name in ("thread", "t_start", "t_grad", "t_commit", "staleness"):
        assert getattr(roomy, name).tolist() == getattr(ideal, name).tolist(), name


def test_list_schedule_by_hand():
    from leashed.sim.machine_workers import list_schedule

    assert list_schedule([1.0, 1.0, 1.0, 1.0], 2, 0.0) == [1.0, 1.0, 2.0, 2.0]
    assert list_schedule([1.0, 1.0, 1.0], 2, 5.0) == [6.0, 6.0, 7.0]
    assert list_schedule([1.0, 3.0, 1.0, 1.0], 2, 0.0) == [1.0, 3.0, 2.0, 3.0]  # the first core free
    assert list_schedule([1.0, 1.0], 1.6, 0.0) == pytest.approx([1.25, 1.25])  # 2 cores at 0.8 speed
    assert list_schedule([1.0], 8, 0.0) == [1.0]


def test_sync_four_threads_two_cores_hand_solved():
    # C = 1, U = 0.25, slice 1. The runtime's barrier yields its core, so a round's gradients and then
    # its stripes run as a greedy list schedule on the 2 cores: W0, W1 end their gradients at 1, W2, W3 at
    # 2; the four stripes at 2.25, 2.25, 2.5, 2.5: the round ends at 2.5 (ideal machine: 1.25). Round 1
    # likewise from 2.5: gradients 3.5, 3.5, 4.5, 4.5, the round's end 5.0.
    spec = spec_of("sync", 4, 8, "const:1.0", "const:0.25")
    s = run_simulation(spec, metadata=False, machine=Machine(cores=2, time_slice_s=1.0))
    u = s.result.updates
    assert u.thread.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert u.t_grad.tolist() == [1.0, 1.0, 2.0, 2.0, 3.5, 3.5, 4.5, 4.5]
    assert u.t_commit.tolist() == [2.5] * 4 + [5.0] * 4
    assert s.result.totals["wall_time_s"] == 5.0
    assert s.result.extra["machine"]["applied"] is True and "not_applied" not in s.result.extra["machine"]
    # three threads: two gradients' time per round, not 1.5 (processor sharing)
    three = run_simulation(spec_of("sync", 3, 3, "const:1.0", "const:0"), metadata=False,
                           machine=Machine(cores=2, time_slice_s=1.0)).result
    assert three.totals["wall_time_s"] == 2.0
    _roomy_machine_is_ideal(spec)  # a core for every thread: exactly the ideal machine's run


def test_lock_four_threads_two_cores_hand_solved():
    # C = 1, U = 0.25 (copy 0.125 and apply 0.125 under the mutex), slice 1: threads 0, 1 run in the even
    # slots, 2, 3 in the odd ones. A waiter sleeps in the mutex and the holder gets a core at once, so
    # the critical sections run off the rotation; the gradients run in the thread's own slots.
    # Reads at 0 in FIFO order: 0-0.125, 0.125-0.25, 0.25-0.375, 0.375-0.5. Gradients: thread 0 from
    # 0.125 (0.875 in slot 0, 0.125 in slot 2) ends 2.125, thread 1 2.25, threads 2, 3 (slot 1) 2.0.
    # Applies: 2 at 2.0-2.125, 3 waits to 2.25, 0 (gradient scheduled first at 2.125) 2.25-2.375; thread
    # 2's next read 2.375-2.5, thread 1's apply 2.5-2.625, and so on: the run ends at 5.125. Keeping the
    # holder in the rotation would make it wait for its next slot inside the mutex.
    spec = spec_of("lock", 4, 8, "const:1.0", "const:0.25")
    s = run_simulation(spec, metadata=False, machine=Machine(cores=2, time_slice_s=1.0))
    u = s.result.updates
    assert u.thread.tolist() == [2, 3, 0, 1, 2, 3, 0, 1]
    assert u.t_start.tolist() == [0.0, 0.0, 0.0, 0.0, 2.125, 2.25, 2.375, 2.625]
    assert u.t_grad.tolist() == [2.0, 2.0, 2.125, 2.25, 4.0, 4.0, 4.875, 5.0]
    assert u.t_commit.tolist() == [2.125, 2.25, 2.375, 2.625, 4.125, 4.25, 5.0, 5.125]
    assert s.result.totals["wall_time_s"] == 5.125
    # switch cost 0.01: efficiency e = 0.99 on every phase; threads 2 and 3 end their gradients together,
    # 2 finds the mutex free (apply 0.125/e), 3 slept in it and pays the switch before its apply
    slow = run_simulation(spec, metadata=False,
                          machine=Machine(cores=2, time_slice_s=1.0, switch_cost_s=0.01)).result.updates
    first = {t: int(np.flatnonzero(slow.thread == t)[0]) for t in (2, 3)}
    t2, t3 = first[2], first[3]
    assert slow.t_grad[t2] == slow.t_grad[t3]
    assert slow.t_commit[t2] - slow.t_grad[t2] == pytest.approx(0.125 / 0.99)
    assert slow.t_commit[t3] - slow.t_commit[t2] == pytest.approx(0.01 + 0.125 / 0.99)
    _roomy_machine_is_ideal(spec)  # a core for every thread: exactly the ideal machine's run


def test_seqlock_four_threads_two_cores_hand_solved():
    # C = 1, U = 0.25 (snapshot copy 0.125, apply 0.125 under the writers' spin lock), slice 1: threads
    # 0, 1 run in the even slots, 2, 3 in the odd ones; a seqlock thread never sleeps, so its copy and
    # gradient run in its own slots, and its apply on a full core (the spinners yield theirs to it).
    # Copies: 0, 1 over [0, 0.125]; 2, 3 wait for slot 1, [0, 1.125].
    # Gradients: 0, 1 end at 2.125 (0.875 in slot 0, 0.125 in slot 2), 2, 3 at 3.125. Applies: 0 at
    # 2.125-2.25, 1 waits for the lock, 2.25-2.375; 0's next copy waits for an even counter, [2.375, 2.5]
    # (version 2), and so does 1's: both gradients end at 4.5. Threads 2, 3 apply 3.125-3.25-3.375, copy
    # [3.375, 3.5] (version 4), gradients to 5.5, applies 5.5-5.625-5.75.
    spec = spec_of("seqlock", 4, 8, "const:1.0", "const:0.25")
    s = run_simulation(spec, metadata=False, machine=Machine(cores=2, time_slice_s=1.0))
    u = s.result.updates
    assert u.thread.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert u.t_start.tolist() == [0.0, 0.0, 0.0, 0.0, 2.25, 2.375, 3.25, 3.375]
    assert u.t_grad.tolist() == [2.125, 2.125, 3.125, 3.125, 4.5, 4.5, 5.5, 5.5]
    assert u.t_commit.tolist() == [2.25, 2.375, 3.25, 3.375, 4.625, 4.75, 5.625, 5.75]
    assert u.version_read.tolist() == [0, 0, 0, 0, 2, 2, 4, 4]
    assert u.staleness.tolist() == [0, 1, 2, 3, 2, 3, 2, 3]
    assert u.attempts.tolist() == [1] * 8
    assert s.result.totals["wall_time_s"] == 5.75
    assert s.result.extra["machine"]["applied"] is True and "not_applied" not in s.result.extra["machine"]
    _roomy_machine_is_ideal(spec)  # a core for every thread: exactly the ideal machine's run
    # an apply that runs past the thread's slot: C = 0.825, two tickets. Threads 0, 1 copy over [0, 0.125]
    # and end their gradients at 0.95; 0 applies 0.95-1.075 and 1, after waiting for the lock, 1.075-1.2,
    # in slot 1, which is threads 2 and 3's: kept in the rotation they would end at 2.075 and 2.2
    short = run_simulation(spec_of("seqlock", 4, 2, "const:0.825", "const:0.25"), metadata=False,
                           machine=Machine(cores=2, time_slice_s=1.0)).result.updates
    assert short.t_grad.tolist() == [0.95, 0.95]
    assert short.t_commit.tolist() == pytest.approx([1.075, 1.2])


def test_seqlock_on_shared_cores_retries_snapshots_and_never_overlaps_applies():
    """Six threads on two cores: snapshot copies stretched over the slots they miss are retried; the
    applies (one writer at a time) never overlap, every snapshot is a version, and the counter model ends
    exact (no update lost)."""
    spec = spec_of("seqlock", 6, 600, "gamma:mean=1ms,cv=0.5", "const:400us", model="counter",
                   dataset="none", lr=1.0, dim=5)
    run = run_simulation(spec, gradients=True, metadata=False, machine=Machine(cores=2, time_slice_s=1.5e-3))
    res, rec = run.result, run.records
    assert res.extra["machine"]["applied"] is True
    assert res.updates.attempts.max() > 1  # some snapshot was retried
    order = np.argsort(rec["version_commit"])  # applies in version order: [aux2 (lock taken), t_commit]
    starts, ends = rec["aux2"][order], rec["t_commit"][order]
    assert np.all(starts[1:] >= ends[:-1])  # the writers' lock: one apply at a time
    # each snapshot is a version: at the end of its copy (aux1), no apply is in progress and exactly
    # version_read applies have begun
    begun = np.searchsorted(starts, rec["aux1"], side="right")
    assert np.array_equal(begun, rec["version_read"].astype(int))
    assert np.all(ends[np.maximum(begun - 1, 0)][begun > 0] <= rec["aux1"][begun > 0])
    assert np.all(res.params == res.totals["updates_applied"]) and res.totals["updates_applied"] == 600
    ideal = run_simulation(spec, metadata=False).result
    assert res.totals["wall_time_s"] > 2.0 * ideal.totals["wall_time_s"]  # 6 threads on 2 cores, not 6
