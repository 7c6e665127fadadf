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

from leashed.batches import BatchSchedule
from leashed.errors import SpecError
from leashed.sparsify import NumpySparsifier, randk_python, sparse_seeds, sparsify_numpy, topk_numpy
from leashed.spec import ExperimentSpec, sparsifier_k
from leashed.steprules import fleet_beta, step_factor
from leashed.workload import EVAL_TRAIN_ROWS, build_spec_model, dataset_name, evaluation_rows

__all__ = ["EVAL_TRAIN_ROWS", "GradientEngine", "NumpySparsifier", "dataset_name", "fleet_beta",
           "randk_python", "sparse_seeds", "sparsify_numpy", "step_factor", "topk_numpy"]

# The training loss of a sample is measured on EVAL_TRAIN_ROWS rows drawn from the seed, as the runtime
# does; the rule, the data set rule and the numpy sparsifiers live in leashed/ (shared with the runtime)
# and are re-exported here.


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

        self.spec = spec
        self.data = load_dataset(dataset_name(spec), dim=spec.dim, seed=spec.seed)
        data = self.data
        self.model = build_spec_model(spec, data)
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
        # divergence (docs/errors.md): NaN/inf, or a loss above the factor x ln(classes) (x the first loss
        # for regression); spec.extra["divergence_factor"], the runtime's --divergence-factor
        from leashed.limits import DEFAULT_DIVERGENCE_FACTOR

        self.divergence_factor = float(spec.extra.get("divergence_factor", DEFAULT_DIVERGENCE_FACTOR))
        self.loss_limit: float | None = None
        rows = evaluation_rows(spec.seed, data.n_train)
        self.eval_X = data.X_train[rows]
        self.eval_y = None if data.y_train is None else data.y_train[rows]

    # ----------------------------------------------------------------------------- per gradient
    def gradient(self, ticket: int, worker: int) -> tuple[np.ndarray | None, float]:
        """The ticket's batch gradient at the current θ, sparsified; (None, loss) if the loss is NaN/inf or
        above the divergence limit (leashed/limits.py ``loss_limit``)."""
        g = np.empty(self.n_params, np.float32)
        loss = self.bound.loss_grad(self.theta, self.batches.rows(ticket), g, self.work)
        self.last_loss = loss
        if self.loss_limit is None:
            from leashed.limits import loss_limit

            self.loss_limit = loss_limit(self.spec.model, int(self.data.n_classes or 0),
                                         loss if math.isfinite(loss) else None, self.divergence_factor)
        if not math.isfinite(loss) or loss > self.loss_limit:
            if not math.isfinite(loss) and hasattr(self.bound, "check_failure"):  # a user model, NaN at
                self.bound.check_failure(self.model.init_params(self.spec.seed), True)  # θ0: ModelError
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
def _make_sparsifier(kind: str, n_params: int, k: int, memory: bool, seed: int) -> Any:
    """The compiled sparsifier of :mod:`leashed.runtime._sparse`, or the numpy one if it is not built."""
    try:
        from leashed.runtime._sparse import Sparsifier
    except ImportError:  # pragma: no cover - the kernels are built with the package
        return NumpySparsifier(kind, n_params, k, memory, seed)
    return Sparsifier(kind, n_params, k, memory=memory, seed=seed)
