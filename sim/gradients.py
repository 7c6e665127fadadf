"""With-gradients mode: the simulated threads apply real model gradients in simulated order.

A gradient is computed, at the simulated instant a worker reads its parameter version, on exactly that
version (leashed: the pinned vector; lock: the copy made under the lock; hogwild: the copy, never torn;
sync: the round's vector), for the rows of its ticket (:mod:`leashed.sim.batches`). It is applied when
the simulated commit happens, with the step α_c·s(τ) of the spec's step policy (papers.md §3.1) after the
spec's sparsifier (papers.md §5). Every published state is therefore θ_{t+1} = θ_t − α_t·Φ(g(θ_{t−τ})),
the consistent update of papers.md §2.1; the simulator does not model HOGWILD!'s torn reads or lost
updates.

This mode runs one real gradient per simulated gradient on one core, so it is as slow as the model:
use it for small models and a few thousand updates, or to study convergence under a staleness
pattern the hardware cannot produce.

Sparsifiers (papers.md §5): ``topk:K`` keeps the K largest |g_j|, ties to the lower index; ``randk:K``
keeps K coordinates drawn by a partial Fisher–Yates shuffle from the worker's splitmix64 stream, seeded
as the runtime seeds its threads (``SeedSequence([seed, 2]).spawn(m)``); with ``error_memory`` each
worker sends Φ(e + g) and keeps e ← e + g − Φ(e + g). The compiled kernels of
:mod:`leashed.runtime._sparse` do the work; :func:`sparsify_numpy` is the plain numpy / Python statement
of the same semantics (bit for bit, rand-k included), used when the kernels are not built and by the
tests that hold the kernels against it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from leashed.errors import SpecError
from leashed.sim.batches import BatchSchedule
from leashed.spec import DATALESS_MODELS, ExperimentSpec, sparsifier_k
from leashed.steprules import fleet_beta, step_factor

__all__ = ["EVAL_TRAIN_ROWS", "GradientEngine", "NumpySparsifier", "dataset_name", "fleet_beta",
           "randk_python", "sparse_seeds", "sparsify_numpy", "step_factor", "topk_numpy"]

_MASK64 = (1 << 64) - 1
#: the training loss of a sample is measured on this many rows drawn from the seed, as the runtime does
#: (``leashed.runtime.run``: ``default_rng([seed, 3])``, sorted, without replacement)
EVAL_TRAIN_ROWS = 10_000


def dataset_name(spec: ExperimentSpec) -> str:
    """The data set a spec trains on: the data-less models keep their own when the spec has the default
    ``mnist`` (the runtime's rule)."""
    if spec.model in DATALESS_MODELS and spec.dataset == "mnist":
        return DATALESS_MODELS[spec.model]
    return spec.dataset


class _Tail:
    """TAIL-τ as coded by the authors (papers.md §3.1): s = 1 until the global step exceeds 15m; F is the
    fraction of the staleness values sampled at global steps in (10m, 15m] below τ; s = 1 + A(1 − 2F(τ))."""

    def __init__(self, m: int, amplitude: float = 1.0) -> None:
        self.m, self.amplitude = m, amplitude
        self.samples: list[int] = []
        self.sorted: np.ndarray | None = None

    def __call__(self, tau: int, step: int) -> float:
        if self.sorted is None:
            if 10 * self.m < step <= 15 * self.m:
                self.samples.append(tau)
            if step <= 15 * self.m or not self.samples:
                return 1.0
            self.sorted = np.sort(np.asarray(self.samples))
        below = int(np.searchsorted(self.sorted, tau, side="left"))
        return 1.0 + self.amplitude * (1.0 - 2.0 * below / len(self.sorted))


class GradientEngine:
    """The model, data, parameters and step rule of one with-gradients simulation."""

    def __init__(self, spec: ExperimentSpec) -> None:
        from leashed.models.datasets import load_dataset
        from leashed.models.registry import build_model

        self.spec = spec
        self.data = load_dataset(dataset_name(spec), dim=spec.dim, seed=spec.seed)
        data = self.data
        if spec.model == "counter":
            self.model = build_model("counter", data.n_features, data.n_classes, dim=spec.dim)
        elif spec.model == "quadratic":
            self.model = build_model("quadratic", data.n_features, 0)
        else:
            self.model = build_model(spec.model, data.n_features, data.n_classes, hidden=spec.hidden,
                                     input_shape=data.input_shape if spec.model == "cnn" else None)
        self.bound = self.model.bind(data.X_train, data.y_train, spec.batch_size)
        self.n_params = int(self.model.n_params)
        self.batches = BatchSchedule(data.n_train, spec.batch_size, spec.seed)
        self.theta = self.model.init_params(spec.seed)
        self.m = spec.threads
        self.lr = float(spec.lr)
        self._tail = _Tail(spec.threads) if spec.step_policy == "tail" else None
        self.k = sparsifier_k(spec.sparsifier, self.n_params)
        self.sparse = spec.sparsifier.split(":")[0]
        if self.sparse == "none" and spec.error_memory:
            raise SpecError("error memory needs a sparsifier: pass --sparsifier topk:K or randk:K")
        self.sparsifiers = [] if self.sparse == "none" else \
            [_make_sparsifier(self.sparse, self.n_params, self.k, spec.error_memory, int(s))
             for s in sparse_seeds(spec.seed, self.m)]
        self.work = self.bound.new_workspace()
        self.last_loss = math.nan
        rng = np.random.default_rng([spec.seed, 3])
        n_train = data.n_train
        rows = np.sort(rng.choice(n_train, size=min(n_train, EVAL_TRAIN_ROWS), replace=False))
        self.eval_X = data.X_train[rows]
        self.eval_y = None if data.y_train is None else data.y_train[rows]

    # ----------------------------------------------------------------------------- per gradient
    def gradient(self, ticket: int, worker: int) -> tuple[np.ndarray | None, float]:
        """The ticket's batch gradient at the current θ, sparsified; (None, loss) if the loss is NaN/inf."""
        g = np.empty(self.n_params, np.float32)
        loss = self.bound.loss_grad(self.theta, self.batches.rows(ticket), g, self.work)
        self.last_loss = loss
        if not math.isfinite(loss):
            return None, loss
        if self.sparse != "none":
            g = self._sparsify(g, worker)
        return g, loss

    def _sparsify(self, g: np.ndarray, worker: int) -> np.ndarray:
        """Φ(g) (Φ(e + g) with error memory) of the worker's sparsifier, as a dense vector."""
        return self.sparsifiers[worker].dense(g)

    @property
    def memory(self) -> list[np.ndarray] | None:
        """The workers' error memories (None without error memory)."""
        if not self.sparsifiers or self.sparsifiers[0].memory is None:
            return None
        return [s.memory for s in self.sparsifiers]

    def factor(self, tau: int, step: int) -> float:
        if self._tail is not None:
            return self._tail(tau, step)
        return step_factor(self.spec.step_policy, tau, self.m, table=self.spec.step_table)

    def apply(self, g: np.ndarray, tau: int, step: int) -> None:
        """θ ← θ − α_c·s(τ)·g in float32 (``step`` is the version the update creates)."""
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected, not warned about
            self.theta -= np.float32(self.lr * self.factor(tau, step)) * g

    def apply_mean(self, grads: list[np.ndarray], step: int) -> None:
        """SYNC (papers.md §2): θ ← θ − (α_c·s(0)/m)·Σ g_i, the sum taken in thread order in float32 and
        the coefficient rounded to float32, as the runtime's stripes do."""
        total = np.add.reduce(np.stack(grads), axis=0, dtype=np.float32) if len(grads) > 1 else grads[0]
        coef = np.float32(self.lr * self.factor(0, step) / len(grads))
        with np.errstate(over="ignore", invalid="ignore"):
            self.theta -= coef * total

    def finite(self) -> bool:
        return bool(np.isfinite(self.theta).all())

    def evaluate(self) -> tuple[float, float]:
        """(training loss on ``EVAL_TRAIN_ROWS`` seeded training rows, test accuracy) at the current θ;
        NaN for non-finite parameters; accuracy NaN for models without classes (the runtime's rule)."""
        if not self.finite():
            return math.nan, math.nan
        data = self.data
        with np.errstate(all="ignore"):
            loss, _ = self.model.evaluate(self.theta, self.eval_X, self.eval_y)
            acc = math.nan
            if data.n_test and data.n_classes:
                _, acc = self.model.evaluate(self.theta, data.X_test, data.y_test)
        return float(loss), float(acc)


# ------------------------------------------------------------------------------------------- sparsifiers
def sparse_seeds(seed: int, m: int) -> list[int]:
    """The workers' splitmix64 seeds, as the runtime seeds its threads (``leashed.runtime.run.
    thread_seeds``): the first uint64 of each child of ``SeedSequence([seed, 2]).spawn(m)``."""
    return [int(c.generate_state(1, np.uint64)[0]) for c in np.random.SeedSequence([seed, 2]).spawn(m)]


def topk_numpy(a: np.ndarray, k: int) -> np.ndarray:
    """Indices (increasing) of the k largest |a_j|, ties to the lower index: a stable argsort of −|a|
    (NaN last). The statement the compiled top-k is held against (papers.md §5)."""
    return np.sort(np.argsort(-np.abs(a), kind="stable")[:k])


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31), state


def randk_python(n_params: int, k: int, state: int, perm: np.ndarray) -> tuple[np.ndarray, int]:
    """(indices increasing, new state): the rand-k draw of the kernels in plain Python, bit for bit.

    Partial Fisher–Yates on ``perm`` (a permutation of 0..n_params-1, updated in place): for i < k, swap
    perm[i] with perm[i + ⌊x·(n_params − i)/2^64⌋], x the next splitmix64 output of ``state``."""
    for i in range(k):
        x, state = _splitmix64(state)
        j = i + ((x * (n_params - i)) >> 64)
        perm[i], perm[j] = perm[j], perm[i]
    return np.sort(perm[:k]), state


def sparsify_numpy(g: np.ndarray, kind: str, k: int, memory: np.ndarray | None = None,
                   keep: np.ndarray | None = None) -> np.ndarray:
    """Φ(g) of papers.md §5 as a dense float32 vector, in numpy.

    ``kind`` is ``topk`` or ``randk``; ``keep`` are the kept indices (top-k: computed here if None;
    rand-k: required, from :func:`randk_python`). With ``memory`` (updated in place): a = e + g, Φ(a) is
    returned and e ← a − Φ(a)."""
    a = g if memory is None else g + memory
    if keep is None:
        if kind != "topk":
            raise ValueError("rand-k needs the drawn indices (from randk_python)")
        keep = topk_numpy(a, k)
    out = np.zeros_like(a)
    out[keep] = a[keep]
    if memory is not None:
        memory[...] = a - out
    return out


class NumpySparsifier:
    """One worker's sparsifier in numpy / Python: the interface of
    :class:`leashed.runtime._sparse.Sparsifier` (unscaled), the same results bit for bit, slower."""

    def __init__(self, kind: str, n_params: int, k: int, memory: bool = False, seed: int = 0) -> None:
        self.kind, self.n_params, self.k = kind, n_params, k
        self.rng_state = int(seed) & _MASK64
        self.perm = np.arange(n_params, dtype=np.int64) if kind == "randk" else None
        self.memory = np.zeros(n_params, np.float32) if memory else None

    def __call__(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices increasing, values) of Φ(g) (Φ(e + g) with memory); updates memory and generator."""
        g = np.asarray(g, np.float32)
        a = g if self.memory is None else g + self.memory
        if self.kind == "randk":
            keep, self.rng_state = randk_python(self.n_params, self.k, self.rng_state, self.perm)
        else:
            keep = topk_numpy(a, self.k)
        out = sparsify_numpy(g, self.kind, self.k, self.memory, keep)
        return keep, out[keep]

    def dense(self, g: np.ndarray) -> np.ndarray:
        """Φ(g) as a dense float32 vector."""
        idx, val = self(g)
        out = np.zeros(self.n_params, np.float32)
        out[idx] = val
        return out


def _make_sparsifier(kind: str, n_params: int, k: int, memory: bool, seed: int) -> Any:
    """The compiled sparsifier of :mod:`leashed.runtime._sparse`, or the numpy one if it is not built."""
    try:
        from leashed.runtime._sparse import Sparsifier
    except ImportError:  # pragma: no cover - the kernels are built with the package
        return NumpySparsifier(kind, n_params, k, memory, seed)
    return Sparsifier(kind, n_params, k, memory=memory, seed=seed)
