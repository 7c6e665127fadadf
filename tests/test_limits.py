"""Bounds before allocation, numeric options, output checks and the divergence rule (docs/errors.md)."""

from __future__ import annotations

import math
import os

import pytest

from leashed import limits
from leashed._files import OutputError, check_writable, write_atomic
from leashed.errors import SpecError
from leashed.spec import ExperimentSpec


def test_a_size_beyond_the_memory_is_refused_with_the_largest_allowed_value():
    spec = ExperimentSpec(algorithm="leashed", threads=2, model="counter", dataset="none", updates=10**9)
    with pytest.raises(SpecError, match=r"largest allowed value here is about (\d+)") as info:
        limits.check_sizes(spec, "simulate", samples=500, gradients=False)
    largest = int(info.value.args[0].rsplit(" ", 1)[1])
    available = limits.available_memory()
    assert 0 < largest <= available // limits.BYTES_PER_UPDATE["simulate"] + 1
    ok = ExperimentSpec(algorithm="leashed", threads=2, model="counter", dataset="none", updates=10_000)
    limits.check_sizes(ok, "simulate", samples=500, gradients=False)


def test_memory_check_uses_the_stated_numbers():
    with pytest.raises(SpecError, match="largest allowed value here is about 1000"):
        limits.check_memory("--updates", 2_000_000, 1000, 2000, available=1_000_000)
    limits.check_memory("--updates", 999_999, 1000, 999, available=1_000_000)


@pytest.mark.parametrize("text", ["gamma:mean=1ms,cv=1e200", "const:nan", "exp:mean=inf",
                                  "uniform:low=1ms,high=1e9s", "lognormal:mean=2ms,cv=-1"])
def test_timing_numbers_are_checked(text):
    with pytest.raises(SpecError):
        limits.check_timing(text, "--compute-time")


@pytest.mark.parametrize("text", ["gamma:mean=2ms,cv=0.2", "const:5us", "uniform:low=1ms,high=3ms",
                                  "exp:mean=1e-3"])
def test_good_timing_strings_pass(text):
    limits.check_timing(text, "--compute-time")


def test_loss_limit_rule():
    assert limits.loss_limit("mlp", 10, None, 10.0) == pytest.approx(10 * math.log(10))
    assert limits.loss_limit("quadratic", 0, 0.5, 4.0) == pytest.approx(2.0)
    assert limits.loss_limit("counter", 0, -1.0, 10.0) == limits.NO_LOSS_LIMIT
    assert limits.loss_limit("mlp", 10, None, math.inf) == limits.NO_LOSS_LIMIT


def test_unwritable_outputs_are_found_before_the_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_writable(blocker / "sub" / "run.npz")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="ermission"):
            check_writable(locked / "run.npz")
    check_writable(tmp_path / "new" / "deeper" / "run.npz")
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_a_failed_write_removes_the_folders_it_created(tmp_path):
    def full(fh):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        write_atomic(tmp_path / "a" / "b" / "run.npz", full)
    assert list(tmp_path.iterdir()) == []


def test_train_diverges_above_the_factor_for_every_algorithm(tmp_path):
    from leashed.runtime.run import run

    for algorithm, threads in (("seq", 1), ("lock", 2), ("leashed", 2), ("sync", 2), ("hogwild", 2)):
        spec = ExperimentSpec(algorithm=algorithm, threads=threads, model="softmax", dataset="mnist",
                              updates=300, lr=1e6, evaluations=2)
        result = run(spec, progress=False)
        assert result.totals["diverged_at"] >= 0, algorithm
        assert result.extra["divergence"]["loss_limit"] == pytest.approx(10 * math.log(10))
    calm = run(ExperimentSpec(model="softmax", dataset="mnist", updates=300, lr=0.1, evaluations=2),
               progress=False)
    assert calm.totals["diverged_at"] < 0
