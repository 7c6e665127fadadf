"""User models (docs/models.md): the ABI wrapper, loading, validation, errors, and the examples.

The tests without numba use the C user function of leashed.models._user (a PyCapsule) and ctypes
pointers; the numba tests skip when numba is not installed (the optional extra leashed-sgd[numba]).
"""

from __future__ import annotations

import ctypes
import re
import shlex
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from leashed.errors import SpecError
from leashed.models import _user
from leashed.models import user as U
from leashed.models.registry import build_model, model_descriptor
from leashed.results import RunResult
from leashed.runtime.run import run
from leashed.spec import ExperimentSpec

from conftest import ROOT, assert_one_line_error, run_cli

CASES = ROOT / "tests" / "models" / "user_model_cases.py"
LOGREG = ROOT / "examples" / "numba_logreg.py"
MLP = ROOT / "examples" / "numba_mlp.py"


def _counter_spec(model: str, algorithm: str, updates: int = 300, threads: int = 2) -> ExperimentSpec:
    """lr 1, constant steps, batches of one (the timing model is for the simulator)."""
    return ExperimentSpec(algorithm=algorithm, threads=threads, model=model, dataset="none", lr=1.0,
                          batch_size=1, updates=updates, evaluations=2, compute_time="gamma:mean=1ms,cv=0.5",
                          update_time="const:100us")


@pytest.fixture
def capsule_counter():
    model = U.UserModel(name="c_counter", loss_grad=_user.minus_one_capsule(), n_params=25, target="none",
                        dataset="none", reads_rows=False)
    name = U.register(model)
    assert name == "user:c_counter" and name in U.registered()
    yield name
    U.unregister(name)


# ------------------------------------------------------------------------------------ without numba
@pytest.mark.parametrize("algorithm", ["lock", "leashed"])
def test_capsule_counter_model_counts_every_update(capsule_counter, algorithm):
    """The +1 counter (papers.md §6.2) with a C user model: consistent algorithms lose nothing, so every
    parameter ends equal to the number of applied updates."""
    result = run(_counter_spec(capsule_counter, algorithm, updates=300))
    applied = result.totals["updates_applied"]
    assert applied == 300
    assert np.array_equal(result.params, np.full(25, applied, dtype=np.float32))


def test_results_of_a_user_model_stay_readable_without_it(capsule_counter, tmp_path):
    result = run(_counter_spec(capsule_counter, "lock", updates=50))
    path = result.save(tmp_path / "c.npz")
    U.unregister(capsule_counter)
    loaded = RunResult.load(path)
    assert loaded.spec.model == "user:c_counter"
    assert loaded.summary()["updates_applied"] == 50 and loaded.dataset_used == "none"


def test_capsule_model_descriptor_and_layout(capsule_counter):
    desc = model_descriptor(capsule_counter)
    assert (desc.target, desc.default_dataset, desc.reads_rows) == ("none", "none", False)
    m = build_model(capsule_counter, 0, 0)
    assert m.n_params == 25 and m.layout() == [("theta", (25,))]
    assert np.array_equal(m.init_params(3), np.zeros(25, np.float32))
    bound = m.bind(np.zeros((10, 0), np.float32), None, 4)
    theta = np.arange(25, dtype=np.float32)
    g = np.empty(25, np.float32)
    assert bound.loss_grad(theta, [0, 1], g) == pytest.approx(-12.0)
    assert np.all(g == -1.0)


def test_wrong_capsule_name_and_wrong_objects_are_refused():
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    cap = new(ctypes.cast(ctypes.pythonapi.Py_IncRef, ctypes.c_void_p).value, b"some_other_abi", None)
    with pytest.raises(U.ModelError, match="not named 'leashed_user_loss_grad_v1'"):
        U.UserModel(name="x", loss_grad=cap, n_params=3)
    with pytest.raises(U.ModelError, match="numba @cfunc"):
        U.UserModel(name="x", loss_grad=lambda *a: 0, n_params=3)
    proto = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p, ctypes.c_int64)
    with pytest.raises(U.ModelError, match="signature"):
        U.UserModel(name="x", loss_grad=proto(lambda p, n: 0.0), n_params=3)
    with pytest.raises(U.ModelError, match="n_params"):
        U.UserModel(name="x", loss_grad=_user.minus_one_capsule(), n_params=0)
    with pytest.raises(U.ModelError, match="layout"):
        U.UserModel(name="x", loss_grad=_user.minus_one_capsule(), n_params=3, layout=(("w", (2,)),))
    with pytest.raises(U.ModelError, match="letters, digits"):
        U.register(U.UserModel(name="a/b.py:c", loss_grad=_user.minus_one_capsule(), n_params=3))


def test_spec_accepts_user_model_names_only_in_their_form():
    for good in ("some/file.py:model", "user:not_registered"):
        assert ExperimentSpec(model=good).model == good  # a form: nothing is loaded
    with pytest.raises(U.ModelError, match="not registered in this process"):
        model_descriptor("user:not_registered")
    for bad in ("file.py", "file.txt:model", "file.py:1x", "nope", "user:", "user:a/b"):
        with pytest.raises(SpecError, match="FILE.py:NAME"):
            ExperimentSpec(model=bad)


def test_loading_errors_are_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken on import')\n")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(U.ModelError, match="RuntimeError: broken on import"):
        U.resolve(f"{tmp_path}/broken.py:model")
    with pytest.raises(U.ModelError, match="missing, not a leashed.models.user.UserModel"):
        U.resolve(f"{tmp_path}/empty.py:model")
    with pytest.raises(U.ModelError, match="not found"):
        U.resolve(f"{tmp_path}/absent.py:model")


def test_cli_wrong_signature_is_one_line_error(tmp_path):
    (tmp_path / "badsig.py").write_text(
        "import ctypes\nfrom leashed.models.user import UserModel\n"
        "fn = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p)(lambda p: 0.0)\n"
        "model = UserModel(name='bad', loss_grad=fn, n_params=3, target='none', dataset='none')\n")
    proc = run_cli("train", "--model", f"{tmp_path}/badsig.py:model", "--algorithm", "lock", "--threads", "2",
                   "--updates", "10", "--out", str(tmp_path / "x.npz"))
    assert_one_line_error(proc, "signature")
    assert not (tmp_path / "x.npz").exists()


# ------------------------------------------------------------------------------------ numba
@pytest.fixture(scope="module")
def numba_cases():
    pytest.importorskip("numba")
    return {name: f"{CASES}:{name}" for name in ("counter", "raising", "nan", "code")}


@pytest.mark.parametrize("algorithm", ["lock", "leashed"])
def test_numba_counter_model_counts_every_update(numba_cases, algorithm):
    result = run(_counter_spec(numba_cases["counter"], algorithm, updates=400))
    applied = result.totals["updates_applied"]
    assert applied == 400
    assert np.array_equal(result.params, np.full(40, applied, dtype=np.float32))


@pytest.mark.parametrize("case, needle", [
    ("raising", "raised ValueError: theta[0] reached 5 at user_model_cases.py"),
    ("code", "returned error code 7 during training: the parameters left the model's domain"),
    ("nan", "non-finite loss at the initial parameters"),
])
def test_numba_failures_stop_the_run_with_one_error(numba_cases, case, needle):
    with pytest.raises(U.ModelError) as info:
        run(_counter_spec(numba_cases[case], "hogwild", updates=2000))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_numba_failure_from_the_cli_and_in_the_simulator(numba_cases, tmp_path):
    proc = run_cli("train", "--model", numba_cases["raising"], "--algorithm", "leashed", "--threads", "2",
                   "--lr", "1", "--batch-size", "1", "--updates", "2000", "--out", str(tmp_path / "r.npz"))
    assert_one_line_error(proc, "raised ValueError: theta[0] reached 5")
    from leashed.sim.simulate import simulate

    with pytest.raises(U.ModelError, match="returned error code 7 during gradient"):
        simulate(_counter_spec(numba_cases["code"], "lock", updates=50), gradients=True)
    with pytest.raises(U.ModelError, match="non-finite loss at the initial parameters"):
        simulate(_counter_spec(numba_cases["nan"], "lock", updates=50), gradients=True)


def test_numba_counter_model_in_the_simulator_with_gradients(numba_cases):
    """The same user model in the with-gradients mode: consistent updates, every one applied."""
    from leashed.sim.simulate import simulate

    result = simulate(_counter_spec(numba_cases["counter"], "leashed", updates=120), gradients=True)
    applied = result.totals["updates_applied"]
    assert applied == 120 - result.totals["updates_dropped"]
    assert np.array_equal(result.params, np.full(40, applied, dtype=np.float32))


def test_numba_wrong_signature_is_refused():
    numba = pytest.importorskip("numba")
    fn = numba.cfunc("float64(float64)")(lambda x: x)
    with pytest.raises(U.ModelError, match=r"signature \(float64,\) -> float64"):
        U.UserModel(name="x", loss_grad=fn, n_params=3)


def _xent64(theta: np.ndarray, X: np.ndarray, y: np.ndarray, hidden: int | None) -> float:
    """Mean softmax cross-entropy in float64 (the examples' maths, written independently)."""
    D, C = X.shape[1], 10
    if hidden is None:
        z = X @ theta[:D * C].reshape(D, C) + theta[D * C:]
    else:
        H = hidden
        o = D * H
        h = np.maximum(X @ theta[:o].reshape(D, H) + theta[o:o + H], 0.0)
        z = h @ theta[o + H:o + H + H * C].reshape(H, C) + theta[o + H + H * C:]
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


@pytest.mark.parametrize("path, builtin, hidden", [(LOGREG, "softmax", None), (MLP, "mlp", 128)])
def test_examples_gradients_match_finite_differences_and_the_builtin_kernel(path, builtin, hidden):
    pytest.importorskip("numba")
    from leashed.models.datasets import load_dataset

    data = load_dataset("mnist")
    model = build_model(f"{path}:model", data.n_features, data.n_classes)
    theta = model.init_params(1)
    rows = np.random.default_rng(0).choice(data.n_train, 32, replace=False)
    g = np.empty(model.n_params, np.float32)
    loss = model.bind(data.X_train, data.y_train, 32).loss_grad(theta, rows, g)
    X, y = data.X_train[rows].astype(np.float64), data.y_train[rows]
    assert loss == pytest.approx(_xent64(theta.astype(np.float64), X, y, hidden), rel=1e-5)
    # central differences in float64 on the largest coordinates and a few random ones
    coords = np.concatenate([np.argsort(-np.abs(g))[:4], np.random.default_rng(1).choice(model.n_params, 4)])
    t64 = theta.astype(np.float64)
    eps = 1e-5
    for j in coords:
        up, down = t64.copy(), t64.copy()
        up[j] += eps
        down[j] -= eps
        fd = (_xent64(up, X, y, hidden) - _xent64(down, X, y, hidden)) / (2 * eps)
        assert g[j] == pytest.approx(fd, rel=2e-3, abs=2e-5), (j, g[j], fd)
    ref = build_model(builtin, data.n_features, data.n_classes, (hidden,) if hidden else ())
    g_ref = np.empty_like(g)
    loss_ref = ref.bind(data.X_train, data.y_train, 32).loss_grad(theta, rows, g_ref)
    assert loss_ref == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-6)
    loss_e, acc_e = model.evaluate(theta, data.X_test[:500], data.y_test[:500])
    ref_e = ref.evaluate(theta, data.X_test[:500], data.y_test[:500])
    assert loss_e == pytest.approx(ref_e[0], rel=1e-5) and acc_e == ref_e[1]


def _doc_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "models.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_docs_commands_train_logreg_to_91_percent_and_simulate_it(tmp_path):
    """docs/models.md's two commands, as written: logistic regression >= 91 % on MNIST in 3 epochs at
    m = 2, then the same spec and user model in the simulator's with-gradients mode."""
    pytest.importorskip("numba")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    train, simulate = _doc_commands()
    assert train[:3] == ["leashed", "train", "--model"] and simulate[:2] == ["leashed", "simulate"]
    proc = run_cli(*train[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = RunResult.load(tmp_path / "logreg.npz")
    assert result.spec.model == "examples/numba_logreg.py:model" and result.spec.threads == 2
    assert result.samples.accuracy[-1] >= 0.91
    proc = run_cli(*simulate[1:], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sim = RunResult.load(tmp_path / "logreg-sim.npz")
    assert sim.source == "sim" and sim.spec.model == result.spec.model
    assert sim.totals["updates_applied"] + sim.totals["updates_dropped"] == 300
    assert np.isfinite(sim.samples.loss[-1]) and sim.samples.loss[-1] < 1.0  # it learnt: ln 10 = 2.3


def _main_thread_rate_during(call, reference: float | None = None) -> float:
    """Loop iterations per second of the main thread while another thread runs ``call`` (divided by
    ``reference`` if given): high if ``call`` releases the GIL, near 0 if it holds it."""
    go, done = threading.Event(), threading.Event()
    count, out = [0], {}

    def work() -> None:
        go.wait()
        c0, t0 = count[0], time.perf_counter()
        call()
        out["rate"] = (count[0] - c0) / (time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    go.set()
    while not done.is_set():
        count[0] += 1
    thread.join()
    return out["rate"] / (reference or 1.0)


def test_numba_model_calls_hold_no_gil():
    """While a thread trains the numba MLP (one nogil loop of 200 gradients), the main thread keeps
    running Python at about the rate it has while that thread sleeps; a call that holds the GIL (the
    control: a sum over a range, in C) stops it. Independent of the machine's load, unlike a speedup."""
    pytest.importorskip("numba")
    from leashed.models.datasets import load_dataset

    data = load_dataset("mnist")
    model = build_model(f"{MLP}:model", data.n_features, data.n_classes)
    bound = model.bind(data.X_train, data.y_train, 64)
    theta, g = model.init_params(0), np.empty(model.n_params, np.float32)
    rows = np.random.default_rng(0).integers(0, data.n_train, (200, 64))
    bound.loss_grad_many(theta, rows[:2], g)  # warm
    with threadpool_limits(limits=1, user_api="blas"):  # as in the runtime's workers
        asleep = _main_thread_rate_during(lambda: time.sleep(0.3))
        held = _main_thread_rate_during(lambda: sum(range(25_000_000)), asleep)
        training = _main_thread_rate_during(lambda: bound.loss_grad_many(theta, rows, g), asleep)
    assert held < 0.05, held
    assert training > 0.15, training  # measured 0.26-0.76 on 2 cores at load average 5
