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
"""

from __future__ import annotations

import math

import numpy as np

from leashed.errors import SpecError
from leashed.sim.batches import BatchSchedule
from leashed.spec import DATALESS_MODELS, ExperimentSpec, sparsifier_k

__all__ = ["EVAL_TRAIN_ROWS", "GradientEngine", "dataset_name", "fleet_beta", "step_factor"]

_SPARSE_TAG = 0x7370617273  # "spars": the rand-k streams
#: the training loss of a sample is measured on this many rows drawn from the seed, as the runtime does
#: (``leashed.runtime.run``: ``default_rng([seed, 3])``, sorted, without replacement)
EVAL_TRAIN_ROWS = 10_000


def dataset_name(spec: ExperimentSpec) -> str:
    """The data set a spec trains on: the data-less models keep their own when the spec has the default
    ``mnist`` (the runtime's rule)."""
    if spec.model in DATALESS_MODELS and spec.dataset == "mnist":
        return DATALESS_MODELS[spec.model]
    return spec.dataset


def fleet_beta(m: int) -> float:
    """FLeet's β = (2/(m+1))·ln(1 + ⌊(m+1)/2⌋), with the authors' integer division (papers.md §3.1)."""
    return (2.0 / (m + 1)) * math.log(1 + (m + 1) // 2)


def step_factor(policy: str, tau: int, m: int, table: tuple[float, ...] | None = None) -> float:
    """s(τ) of the stateless policies (papers.md §3.1, §3.2); ``tail`` needs :class:`_Tail`."""
    if policy == "constant":
        return 1.0
    if policy == "inverse":
        return 1.0 / (tau + 1)
    if policy == "fleet":
        return math.exp(-fleet_beta(m) * tau)
    if policy == "normalised":
        if not table:
            raise SpecError("step policy 'normalised' needs a step table (a fitted staleness model)")
        return table[min(tau, len(table) - 1)]
    raise SpecError(f"step policy {policy!r} has no stateless factor")


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
        self.memory = [np.zeros(self.n_params, np.float32) for _ in range(self.m)] if spec.error_memory \
            else None
        self.rngs = [np.random.default_rng([spec.seed, _SPARSE_TAG, i]) for i in range(self.m)]
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
        if self.memory is not None:
            g = g + self.memory[worker]
        if self.sparse == "topk":
            keep = np.argsort(-np.abs(g), kind="stable")[:self.k]  # ties: lower index first
        else:
            keep = self.rngs[worker].choice(self.n_params, self.k, replace=False)
        out = np.zeros_like(g)
        out[keep] = g[keep]
        if self.memory is not None:
            self.memory[worker] = g - out
        return out

    def factor(self, tau: int, step: int) -> float:
        if self._tail is not None:
            return self._tail(tau, step)
        return step_factor(self.spec.step_policy, tau, self.m, self.spec.step_table)

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
