"""leashed.runtime._workers.Run refuses configurations the nogil loops cannot run, in __cinit__, before any
thread starts (an unknown algorithm code used to fall into the leashed loop without a store, and policy
normalised without a table read a NULL pointer: both crashed the process)."""

import importlib

import numpy as np
import pytest

from leashed.runtime import _workers
from leashed.runtime._store import MAX_SLOTS, SLOT_BITS, ParameterStore, pool_size
from leashed.spec import ExperimentSpec

run_module = importlib.import_module("leashed.runtime.run")


def _run_args(**changes):
    spec = ExperimentSpec(algorithm="lock", threads=2, model="counter", dim=8, updates=20, lr=1.0)
    prep = run_module.prepare(spec)
    args = dict(algorithm=_workers.ALGORITHM_CODES["lock"], policy=_workers.POLICY_CODES["constant"],
                threads=2, persistence=-1, total=prep.total, batch_size=spec.batch_size,
                n_rows=int(prep.bound.n_rows), lr=1.0, fleet_beta=1.0, tail_a=1.0, step_table=None,
                schedule=prep.schedule, thread_seeds=run_module.thread_seeds(spec), bound=prep.bound,
                theta0=prep.theta0, store=None, records=run_module._new_records(prep.total))
    args.update(changes)
    return args


def test_valid_arguments_build_a_run():
    state = _workers.Run(**_run_args())
    assert state.n_threads == 2


@pytest.mark.parametrize("code", [9, -1, max(_workers.ALGORITHM_CODES.values()) + 1])
def test_unknown_algorithm_code_is_refused(code):
    with pytest.raises(ValueError, match="unknown algorithm code"):
        _workers.Run(**_run_args(algorithm=code))


def test_unknown_policy_code_is_refused():
    with pytest.raises(ValueError, match="unknown step policy code"):
        _workers.Run(**_run_args(policy=max(_workers.POLICY_CODES.values()) + 1))


@pytest.mark.parametrize("table", [None, np.zeros(0)])
def test_normalised_without_a_table_is_refused(table):
    with pytest.raises(ValueError, match="step table"):
        _workers.Run(**_run_args(policy=_workers.POLICY_CODES["normalised"], step_table=table))


def test_normalised_with_a_table_builds():
    _workers.Run(**_run_args(policy=_workers.POLICY_CODES["normalised"], step_table=np.ones(4)))


def test_leashed_without_a_store_is_refused():
    with pytest.raises(ValueError, match="store"):
        _workers.Run(**_run_args(algorithm=_workers.ALGORITHM_CODES["leashed"]))


def test_max_threads_is_the_store_word_limit():
    # published word = (version << SLOT_BITS) | slot: MAX_SLOTS slots, and m threads need 2m + 2
    assert SLOT_BITS == 16 and MAX_SLOTS == (1 << SLOT_BITS) - 1
    m = run_module.MAX_THREADS
    assert pool_size(m) <= MAX_SLOTS < pool_size(m + 1)
    ParameterStore(np.zeros(1, np.float32), pool_size(m))  # the largest pool fits
    with pytest.raises(ValueError, match="slots"):
        ParameterStore(np.zeros(1, np.float32), pool_size(m + 1))
    from leashed.errors import SpecError

    run_module.check_runtime_spec(ExperimentSpec(algorithm="leashed", threads=m))
    with pytest.raises(SpecError, match=f"at most {m} threads"):
        run_module.check_runtime_spec(ExperimentSpec(algorithm="leashed", threads=m + 1))
