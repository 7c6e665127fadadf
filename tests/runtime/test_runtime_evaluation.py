"""Parallel snapshot evaluation (runtime/evaluation.py) against one serial forward pass on the same rows."""

from types import SimpleNamespace

import numpy as np
import pytest

from leashed.models.registry import build_model
from leashed.runtime import evaluation
from leashed.workload import evaluation_rows


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(1)
    ds = SimpleNamespace(X_train=rng.random((12_000, 784), dtype=np.float32),
                         y_train=rng.integers(0, 10, 12_000).astype(np.int32),
                         X_test=rng.random((4_500, 784), dtype=np.float32),
                         y_test=rng.integers(0, 10, 4_500).astype(np.int32), n_classes=10)
    model = build_model("mlp", 784, 10, (16,))
    thetas = [model.init_params(s) for s in range(3)]
    return ds, model, thetas


def test_parallel_chunked_evaluation_equals_one_serial_pass(setting):
    ds, model, thetas = setting
    got = evaluation.evaluate_snapshots(model, thetas, ds, 7, progress=False, threads=2)
    shared = evaluation_rows(7, 12_000)
    final_rows = shared[evaluation._subset(len(shared), evaluation.EVAL_FINAL_TRAIN_ROWS, [7, 6])]
    assert len(final_rows) == evaluation.EVAL_FINAL_TRAIN_ROWS and set(final_rows) <= set(shared)
    loss, _ = model.evaluate(thetas[-1], ds.X_train[final_rows], ds.y_train[final_rows])
    _, acc = model.evaluate(thetas[-1], ds.X_test, ds.y_test)  # the final one: the full test set
    assert got.loss[-1] == pytest.approx(loss, rel=1e-6) and got.accuracy[-1] == pytest.approx(acc, abs=1e-12)
    curve = final_rows[evaluation._subset(len(final_rows), evaluation.EVAL_CURVE_ROWS, [7, 4])]
    test_curve = evaluation._subset(4_500, evaluation.EVAL_CURVE_ROWS, [7, 5])
    for i in range(2):  # the curve: EVAL_CURVE_ROWS rows of each, nested in the final rows
        loss, _ = model.evaluate(thetas[i], ds.X_train[curve], ds.y_train[curve])
        _, acc = model.evaluate(thetas[i], ds.X_test[test_curve], ds.y_test[test_curve])
        assert got.loss[i] == pytest.approx(loss, rel=1e-6) and got.accuracy[i] == pytest.approx(acc)
    assert got.skipped == 0
    assert got.rows == {"eval_train_rows": 5_000, "eval_test_rows": 4_500, "eval_curve_train_rows": 250,
                        "eval_curve_test_rows": 250}


def test_non_finite_snapshots_are_nan_and_a_stop_request_skips_the_rest(setting):
    ds, model, thetas = setting
    bad = thetas[0].copy()
    bad[3] = np.nan
    got = evaluation.evaluate_snapshots(model, [bad, thetas[1]], ds, 0, progress=False)
    assert np.isnan(got.loss[0]) and np.isnan(got.accuracy[0]) and np.isfinite(got.loss[1])
    stopped = evaluation.evaluate_snapshots(model, thetas, ds, 0, progress=False, stop=lambda: True)
    assert stopped.skipped == 3 and np.isnan(stopped.loss).all() and np.isnan(stopped.accuracy).all()


def test_chunks_suit_the_model():
    assert evaluation.chunk_rows(build_model("mlp", 784, 10, (128,))) == evaluation.DENSE_CHUNK_ROWS
    cnn = build_model("cnn", 784, 10, (128,), input_shape=(1, 28, 28))
    rows = evaluation.chunk_rows(cnn)
    assert 8 <= rows <= 32 and cnn.work_floats(rows, False) * 4 <= 1.1 * evaluation.WORKSPACE_BYTES
