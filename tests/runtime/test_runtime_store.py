"""The versioned parameter store (papers.md §2.1): protocol steps, ABA safety, pool bounds, checking mode."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import check_records, counter_spec

from leashed.runtime._store import ParameterStore, pool_size
from leashed.runtime.run import run


def kinds(store):
    return [s[0] for s in store.slot_states()]


def new_store(n_slots=6, check=False):
    return ParameterStore(np.arange(4, dtype=np.float32), n_slots, check=check)


def test_initial_state():
    st = new_store()
    assert st.published == (0, 0) and st.live == 1 and st.n_params == 4
    assert kinds(st) == ["live"] + ["free"] * 5
    version, theta = st.latest()
    assert version == 0 and np.array_equal(theta, np.arange(4))
    assert st.check_quiescent() == []
    assert pool_size(3) == 8


def test_publish_replaces_and_recycles_the_old_vector():
    st = new_store()
    slot = st.acquire()
    assert slot != 0 and st.live == 2
    st.theta(slot)[:] = 7
    assert st.publish((0, 0), slot, 1)
    assert st.published == (slot, 1)
    assert kinds(st)[0] == "free" and st.live == 1  # no reader: reclaimed at once
    assert np.all(st.latest()[1] == 7)


def test_a_pinned_vector_is_not_recycled_until_unpinned():
    st = new_store()
    pinned, version = st.pin()
    assert (pinned, version) == (0, 0)
    new = st.acquire()
    assert st.publish((0, 0), new, 1)
    assert st.slot_states()[0][:3] == ("stale", 1, 1)  # stale, generation 1, one reader
    assert st.live == 2
    st.unpin(0)
    assert kinds(st)[0] == "free" and st.live == 1


def test_a_stale_cas_fails_and_the_private_slot_goes_back():
    st = new_store()
    a = st.acquire()
    assert st.publish((0, 0), a, 1)
    b = st.acquire()
    assert not st.publish((0, 0), b, 1)  # built on version 0, which is gone
    assert st.published == (a, 1)
    st.discard(b)
    assert st.check_quiescent() == []


def test_aba_a_recycled_slot_cannot_satisfy_a_stale_cas():
    """Slot 0 returns to the pool and is published again (version 2): an update built on (slot 0,
    version 0) must still fail, although the published slot is 0 again."""
    st = new_store(n_slots=3)
    a = st.acquire(hint=1)
    assert st.publish((0, 0), a, 1)
    again = st.acquire(hint=0)
    assert again == 0
    assert st.publish((a, 1), 0, 2)
    assert st.published == (0, 2)
    late = st.acquire()
    assert not st.publish((0, 0), late, 1)
    st.discard(late)
    assert st.published == (0, 2)
    assert st.slot_states()[0][1] == 2  # slot 0 is in its second generation
    assert st.check_quiescent() == []


def test_checking_mode_poisons_recycled_vectors():
    st = new_store(check=True)
    a = st.acquire()
    st.theta(a)[:] = 1
    assert st.publish((0, 0), a, 1)
    assert np.all(np.isnan(st.theta(0)))
    assert np.all(st.theta(a) == 1)


def test_pool_size_is_checked():
    with pytest.raises(ValueError):
        ParameterStore(np.zeros(3, np.float32), 1)


@pytest.mark.parametrize("m", [2, 4, 8])
def test_pool_under_checking_mode(m):
    """Real threads, checking mode: no pinned vector is ever poisoned or recycled while pinned, the pool
    never runs dry, at most 2m+1 vectors are live (T8), and every slot is back at the end."""
    for persistence in ("inf", 0):
        result = run(counter_spec("leashed", m, updates=2000, dim=5000, persistence=persistence), check=True)
        check_records(result)
        assert result.extra["pool_violations"] == 0
        assert result.extra["pool_exhausted"] == 0
        assert result.extra["pool_slots"] == 2 * m + 2
        assert 2 <= result.extra["live_vectors_max"] <= 2 * m + 1
        assert np.all(result.params == result.totals["updates_applied"])


def test_snapshots_pin_at_most_one_more_vector():
    m = 4
    result = run(counter_spec("leashed", m, updates=4000, dim=20_000).replace(evaluations=40), check=True)
    check_records(result)
    assert result.extra["pool_violations"] == 0
    assert result.extra["live_vectors_max"] <= 2 * m + 2
    ok = np.isfinite(result.samples.loss)
    assert ok.sum() >= 10
    # a counter snapshot at version v has loss -v (loss = -mean(theta), theta = v everywhere)
    assert np.allclose(result.samples.loss[ok], -result.samples.version[ok])


def test_checking_mode_catches_a_broken_protocol():
    """Test of the test: with PIN not counting readers, vectors are recycled while still being read;
    checking mode must notice."""
    spec = counter_spec("leashed", 4, updates=3000, dim=20_000)
    result = run(spec, check=True, _unsafe_skip_reader_counts=True)
    assert result.extra["pool_violations"] > 0
