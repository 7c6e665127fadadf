"""Tests of the model kernels (leashed.models._kernels) against the numpy reference and finite differences."""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from leashed.errors import DataError, SpecError
from leashed.models import MODEL_NAMES, build_model
from leashed.models import reference as ref

# (name, n_features, n_classes, build kwargs): small sizes so finite differences stay fast
SMALL = [
    ("softmax", 5, 3, {}),
    ("mlp", 6, 3, {"hidden": (5, 4)}),
    ("mlp", 4, 2, {"hidden": (3,)}),
    ("cnn", 100, 3, {"input_shape": (1, 10, 10), "hidden": (5,)}),
    ("cnn", 264, 3, {"input_shape": (2, 12, 11), "hidden": (4,)}),
    ("counter", 3, 2, {"dim": 5}),
    ("quadratic", 7, 1, {}),
]
IDS = [f"{n}-{d}-{kw.get('hidden', '')}-{kw.get('input_shape', '')}" for n, d, _, kw in SMALL]


def make_data(model, n_rows: int, rng: np.random.Generator):
    X = rng.standard_normal((n_rows, model.n_features)).astype(np.float32)
    if model.name == "quadratic":
        y = rng.standard_normal(n_rows).astype(np.float32)
    else:
        y = rng.integers(0, max(model.n_classes, 1), n_rows).astype(np.int32)
    return X, y


def make_theta(model, rng: np.random.Generator) -> np.ndarray:
    # perturb the init so biases are non-zero and ReLU / max-pool kinks are unlikely at the FD points
    th = model.init_params(int(rng.integers(1 << 30)))
    return (th + 0.3 * rng.standard_normal(model.n_params)).astype(np.float32)


def finite_differences(model, theta64: np.ndarray, X, y, eps: float = 1e-6) -> np.ndarray:
    g = np.empty_like(theta64)
    for i in range(theta64.size):
        tp = theta64.copy()
        tm = theta64.copy()
        tp[i] += eps
        tm[i] -= eps
        g[i] = (ref.loss_grad(model, tp, X, y)[0] - ref.loss_grad(model, tm, X, y)[0]) / (2 * eps)
    return g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b), 1e-12))


@pytest.mark.parametrize(("name", "d", "c", "kw"), SMALL, ids=IDS)
def test_gradient_matches_finite_differences(name, d, c, kw):
    rng = np.random.default_rng(7)
    model = build_model(name, d, c, **kw)
    X, y = make_data(model, 40, rng)
    theta = make_theta(model, rng)
    rows = rng.integers(0, 40, 8)
    fd = finite_differences(model, theta.astype(np.float64), X[rows], y[rows])
    if name == "counter":  # by design its "gradient" is d * d(loss)/d(theta) = -1 (loss = -mean(theta))
        fd *= model.n_params
    loss64, g64 = ref.loss_grad(model, theta.astype(np.float64), X[rows], y[rows])
    assert rel_err(g64, fd) < 1e-6  # the reference itself is right
    bound = model.bind(X, y, batch_size=8)
    g = np.full(model.n_params, np.nan, dtype=np.float32)
    loss = bound.loss_grad(theta, rows, g)
    assert np.all(np.isfinite(g))
    assert rel_err(g, fd) < 2e-5
    assert loss == pytest.approx(loss64, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    ("name", "d", "c", "kw"),
    [("softmax", 784, 10, {}), ("mlp", 784, 10, {}), ("mlp", 50, 7, {"hidden": (33, 17, 9)}),
     ("cnn", 784, 10, {}), ("cnn", 3072, 10, {}), ("quadratic", 31, 1, {})],
)
def test_kernel_matches_reference(name, d, c, kw):
    rng = np.random.default_rng(3)
    model = build_model(name, d, c, **kw)
    X, y = make_data(model, 300, rng)
    X = np.abs(X) if name != "quadratic" else X
    theta = model.init_params(11)
    theta += 0.01 * rng.standard_normal(model.n_params).astype(np.float32)
    bound = model.bind(X, y, batch_size=70)
    g = np.empty(model.n_params, dtype=np.float32)
    for n in (70, 1, 33):  # full batch, single row, partial batch reuse the same workspace
        rows = rng.integers(0, 300, n)
        loss = bound.loss_grad(theta, rows, g)
        loss64, g64 = ref.loss_grad(model, theta.astype(np.float64), X[rows], y[rows])
        assert loss == pytest.approx(loss64, rel=2e-5)
        assert rel_err(g, g64) < 1e-4
        for name_b, block in model.unflatten(g).items():  # every block is right, not just the big ones
            assert rel_err(block, model.unflatten(g64)[name_b]) < 1e-3, name_b


def test_counter_gradient_is_exactly_minus_one():
    model = build_model("counter", 0, 0, dim=37)
    assert model.n_params == 37 and model.layout() == [("theta", (37,))]
    theta = model.init_params(0)
    assert np.all(theta == 0)
    X = np.zeros((10, 0), dtype=np.float32)
    bound = model.bind(X, None, batch_size=4)
    g = np.zeros(37, dtype=np.float32)
    for step in range(1, 6):  # N consistent updates with lr 1 give every parameter the value N
        loss = bound.loss_grad(theta, np.array([0, 3, 9]), g)
        assert loss == pytest.approx(-(step - 1))
        assert np.all(g == -1.0)
        theta -= g
    assert np.all(theta == 5.0)
    assert model.evaluate(theta, X, None) == (pytest.approx(-5.0), pytest.approx(np.nan, nan_ok=True))
    assert bound.work_floats == 0


def test_counter_uses_n_features_as_default_dim():
    assert build_model("counter", 12, 0).n_params == 12
    with pytest.raises(SpecError):
        build_model("counter", 0, 0)


def test_parameter_counts():
    assert build_model("cnn", 784, 10).n_params == 27354
    assert build_model("mlp", 784, 10).n_params == 101770
    assert build_model("mlp", 784, 10, hidden=(128, 128, 128, 128)).n_params == 151306  # papers.md §7
    assert build_model("mlp", 784, 10, hidden=(128, 128, 128)).n_params == 134794
    assert build_model("softmax", 784, 10).n_params == 7850
    assert build_model("quadratic", 20, 0).n_params == 20
    cnn = build_model("cnn", 784, 10)
    assert [s for _, s in cnn.layout()] == [(3, 3, 1, 4), (4,), (3, 3, 4, 8), (8,), (200, 128), (128,),
                                            (128, 10), (10,)]
    assert sum(int(np.prod(s)) for _, s in cnn.layout()) == cnn.n_params


def test_init_params():
    model = build_model("mlp", 784, 10, hidden=(256,))
    a, b = model.init_params(5), model.init_params(5)
    assert a.dtype == np.float32 and a.flags.c_contiguous and a.shape == (model.n_params,)
    assert np.array_equal(a, b) and not np.array_equal(a, model.init_params(6))
    blocks = model.unflatten(a)
    assert np.all(blocks["fc1.b"] == 0) and np.all(blocks["fc2.b"] == 0)
    assert blocks["fc1.W"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert blocks["fc2.W"].std() == pytest.approx(np.sqrt(2 / 256), rel=0.05)
    cnn = build_model("cnn", 784, 10).unflatten(build_model("cnn", 784, 10).init_params(0))
    assert cnn["conv2.W"].std() == pytest.approx(np.sqrt(2 / 36), rel=0.15)


def _run_many(bound, theta, batches, work=None):
    g = np.empty(bound.n_params, dtype=np.float32)
    out = []
    for rows in batches:
        loss = bound.loss_grad(theta, rows, g, work=work)
        out.append((loss, g.copy()))
    return out


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_two_threads_give_single_thread_results(name):
    rng = np.random.default_rng(1)
    model = build_model(name, 784, 10, hidden=(64,))
    X, y = make_data(model, 500, rng)
    theta = model.init_params(2)
    batches = [rng.integers(0, 500, 32) for _ in range(30)]
    expected = _run_many(model.bind(X, y, 32), theta, batches)
    shared = model.bind(X, y, 32)
    results: dict[str, list] = {}
    runners = {
        "own-model-1": lambda: _run_many(model.bind(X, y, 32), theta, batches),
        "own-model-2": lambda: _run_many(model.bind(X, y, 32), theta, batches),
        "shared-model-1": lambda: _run_many(shared, theta, batches, work=shared.new_workspace()),
        "shared-model-2": lambda: _run_many(shared, theta, batches, work=shared.new_workspace()),
    }
    threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f()))
               for k, f in runners.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in runners:
        for (l1, g1), (l2, g2) in zip(expected, results[key], strict=True):
            assert l1 == l2, key
            assert np.array_equal(g1, g2), key


def test_abi_struct_from_c():
    """Read the leashed_model_t at abi_address with ctypes and call its loss_grad like the runtime does."""

    class Abi(ctypes.Structure):
        pass

    fn = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.POINTER(Abi), ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)
    i64 = ctypes.c_int64
    Abi._fields_ = [("loss_grad", fn), ("ctx", ctypes.c_void_p), ("n_params", i64), ("work_floats", i64),
                    ("batch_size", i64), ("n_rows", i64)]
    rng = np.random.default_rng(0)
    model = build_model("mlp", 20, 4, hidden=(8,))
    X, y = make_data(model, 50, rng)
    bound = model.bind(X, y, 16)
    abi = Abi.from_address(bound.abi_address)
    assert (abi.n_params, abi.batch_size, abi.n_rows) == (model.n_params, 16, 50)
    assert abi.work_floats == bound.work_floats == model.work_floats(16) > 0
    theta = model.init_params(0)
    rows = np.arange(3, 19, dtype=np.int64)
    g1 = np.empty(model.n_params, dtype=np.float32)
    g2 = np.empty(model.n_params, dtype=np.float32)
    work = np.empty(abi.work_floats, dtype=np.float32)
    loss1 = abi.loss_grad(ctypes.pointer(abi), theta.ctypes.data, rows.ctypes.data, 16, g1.ctypes.data,
                          work.ctypes.data)
    loss2 = bound.loss_grad(theta, rows, g2)
    assert loss1 == loss2 and np.array_equal(g1, g2)


def test_evaluate_hand_checked():
    # softmax with W = identity, b = 0: logits = x, prediction = argmax x
    model = build_model("softmax", 2, 2)
    theta = np.array([1, 0, 0, 1, 0, 0], dtype=np.float32)
    X = np.array([[2, 0], [0, 1], [3, 1], [1, 2], [0, 3]], dtype=np.float32)
    y = np.array([0, 1, 1, 1, 0])  # rows 0, 1, 3 correct; 2 and 4 wrong
    expected = np.mean(np.log1p(np.exp([-2.0, -1.0, 2.0, -1.0, 3.0])))
    for chunk in (1, 2, 1000):
        loss, acc = model.evaluate(theta, X, y, chunk=chunk)
        assert acc == pytest.approx(0.6)
        assert loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn", "quadratic"])
def test_evaluate_matches_reference(name):
    rng = np.random.default_rng(4)
    model = build_model(name, 784, 10, hidden=(32,))
    X, y = make_data(model, 257, rng)
    theta = model.init_params(9)
    loss, acc = model.evaluate(theta, X, y, chunk=100)
    rloss, racc = ref.evaluate(model, theta.astype(np.float64), X, y)
    assert loss == pytest.approx(rloss, rel=1e-5)
    assert acc == pytest.approx(racc, nan_ok=True)


def test_bad_model_descriptions_raise_spec_error():
    with pytest.raises(SpecError, match="unknown model"):
        build_model("resnet", 784, 10)
    with pytest.raises(SpecError, match="cnn"):
        build_model("cnn", 783, 10)
    with pytest.raises(SpecError):
        build_model("cnn", 784, 10, input_shape=(1, 28, 27))
    with pytest.raises(SpecError):
        build_model("cnn", 64, 10, input_shape=(1, 8, 8))
    with pytest.raises(SpecError, match="hidden"):
        build_model("mlp", 784, 10, hidden=(128, 0))
    with pytest.raises(SpecError):
        build_model("mlp", 784, 10, hidden=())
    with pytest.raises(SpecError):
        build_model("softmax", 784, 1)
    with pytest.raises(SpecError):
        build_model("mlp", 0, 10)
    for name in MODEL_NAMES:
        message = ""
        try:
            build_model(name, -1, 10)
        except SpecError as e:
            message = str(e)
        assert "\n" not in message and message


def test_bad_data_raises():
    rng = np.random.default_rng(0)
    model = build_model("mlp", 6, 3, hidden=(4,))
    X, y = make_data(model, 20, rng)
    with pytest.raises(DataError):
        model.bind(X[:, :5], y, 4)
    with pytest.raises(DataError):
        model.bind(X, y + 3, 4)  # labels out of range
    with pytest.raises(DataError):
        model.bind(X, y[:-1], 4)
    with pytest.raises(SpecError):
        model.bind(X, y, 0)
    bound = model.bind(X.astype(np.float64), y.astype(np.int64), 4)  # converted, not rejected
    g = np.empty(model.n_params, dtype=np.float32)
    theta = model.init_params(0)
    with pytest.raises(DataError):
        bound.loss_grad(theta, np.array([0, 20]), g)  # row out of range
    with pytest.raises(DataError):
        bound.loss_grad(theta, np.arange(5), g)  # more rows than batch_size
    with pytest.raises(DataError):
        bound.loss_grad(theta, np.arange(4), np.empty(model.n_params, dtype=np.float64))
    with pytest.raises(DataError):
        bound.loss_grad(theta[:-1], np.arange(4), g)


def test_models_pickle():
    import pickle

    rng = np.random.default_rng(0)
    for model in (build_model("cnn", 784, 10), build_model("counter", 0, 0, dim=9), build_model("mlp", 5, 3)):
        clone = pickle.loads(pickle.dumps(model))
        assert clone.n_params == model.n_params and clone.layout() == model.layout()
    model = build_model("mlp", 5, 3, hidden=(4,))
    X, y = make_data(model, 20, rng)
    bound = model.bind(X, y, 8)
    clone = pickle.loads(pickle.dumps(bound))
    theta = model.init_params(0)
    g1, g2 = np.empty(model.n_params, np.float32), np.empty(model.n_params, np.float32)
    assert bound.loss_grad(theta, np.arange(8), g1) == clone.loss_grad(theta, np.arange(8), g2)
    assert np.array_equal(g1, g2) and clone.abi_address != bound.abi_address


def test_loss_grad_many_matches_single_calls():
    rng = np.random.default_rng(2)
    model = build_model("mlp", 30, 5, hidden=(16,))
    X, y = make_data(model, 100, rng)
    bound = model.bind(X, y, 10)
    theta = model.init_params(0)
    rows = rng.integers(0, 100, (6, 10))
    g = np.empty(model.n_params, dtype=np.float32)
    losses = bound.loss_grad_many(theta, rows, g)
    g1 = np.empty_like(g)
    singles = [bound.loss_grad(theta, r, g1) for r in rows]
    assert np.array_equal(losses, np.array(singles)) and np.array_equal(g, g1)


def test_nan_parameters_give_nan_loss():
    model = build_model("mlp", 8, 3, hidden=(4,))
    X, y = make_data(model, 10, np.random.default_rng(0))
    theta = model.init_params(0)
    theta[3] = np.nan
    g = np.empty(model.n_params, dtype=np.float32)
    assert np.isnan(model.bind(X, y, 5).loss_grad(theta, np.arange(5), g))
