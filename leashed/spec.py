"""ExperimentSpec: what to run, shared by every engine (runtime, simulator) and stored in every results file.

The vocabulary follows docs/architecture.md: algorithms ``seq``, ``sync``, ``lock``, ``hogwild``,
``leashed`` (papers.md §2); step policies (papers.md §3); sparsifiers (papers.md §5).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from leashed import algorithms
from leashed.errors import SpecError
from leashed.models.registry import DATALESS_MODELS as DATALESS_MODELS  # re-exported: the old name
from leashed.models.registry import MODEL_NAMES

#: algorithm names in code order, from the registry (leashed/algorithms.py)
ALGORITHMS = algorithms.ALGORITHMS
STEP_POLICIES = ("constant", "inverse", "fleet", "tail", "normalised")
#: model names, from the model descriptors (leashed/models/registry.py)
MODELS = MODEL_NAMES
ALGORITHM_CODES = algorithms.codes()
STEP_POLICY_CODES = {name: i for i, name in enumerate(STEP_POLICIES)}

INF = math.inf
_SPARSIFIER = re.compile(r"^(none|(topk|randk):(\d+(\.\d+)?%?))$")


def parse_persistence(value: str | int | float) -> float:
    """Parse a persistence bound T_p: a non-negative integer or ``inf`` (never drop)."""
    text = str(value).strip().lower()
    if text in ("inf", "infinity", "none", "unbounded"):
        return INF
    try:
        number = float(text)
    except ValueError:
        raise SpecError(f"persistence must be a non-negative integer or 'inf', not {value!r}") from None
    if number != INF and (number < 0 or number != int(number)):
        raise SpecError(f"persistence must be a non-negative integer or 'inf', not {value!r}")
    return number if number == INF else float(int(number))


def sparsifier_k(sparsifier: str, n_params: int) -> int:
    """Number of coordinates a sparsifier keeps for a model of ``n_params`` parameters (papers.md §5).

    ``topk:100`` keeps 100, ``topk:1%`` keeps ceil(1% of n_params) (at least 1). ``none`` keeps all.
    """
    match = _SPARSIFIER.match(sparsifier)
    if not match:
        raise SpecError(f"sparsifier must be 'none', 'topk:K' or 'randk:K' (K a count or a percentage), "
                        f"not {sparsifier!r}")
    if sparsifier == "none":
        return n_params
    amount = match.group(3)
    if amount.endswith("%"):
        fraction = float(amount[:-1]) / 100.0
        if not 0 < fraction <= 1:
            raise SpecError(f"sparsifier percentage must be in (0%, 100%], not {amount}")
        k = max(1, math.ceil(fraction * n_params))
    else:
        if "." in amount:
            raise SpecError(f"sparsifier count must be a whole number or a percentage, not {amount}")
        k = int(amount)
    if k <= 0:
        raise SpecError(f"sparsifier keeps K={k} coordinates; K must be at least 1")
    if k > n_params:
        raise SpecError(f"sparsifier K={k} is larger than the model ({n_params} parameters); "
                        f"choose K <= {n_params} or a percentage like topk:1%")
    return k


def _is_user_model(name: object) -> bool:
    """A user model's name (``FILE.py:NAME`` or ``user:NAME``; docs/models.md): checked for its form
    here, loaded when the model is built."""
    from leashed.models.user import is_user_model_name

    return is_user_model_name(name)


@dataclass(frozen=True)
class ExperimentSpec:
    """What to run. Validates itself on construction; every engine takes it, every results file stores it.

    A frozen dataclass: build one with keywords (``ExperimentSpec(algorithm="leashed", threads=2)``),
    derive variants with :meth:`replace`; a bad value raises :class:`~leashed.errors.SpecError` naming
    the field. ``leashed train`` and ``leashed simulate`` fill it from their options of the same name
    (``batch_size`` is ``--batch-size``, and so on). A Python walkthrough is in docs/api.md.

    Fields (default in brackets):

    - ``algorithm`` [``"seq"``]: ``seq``, ``sync``, ``lock``, ``hogwild`` or ``leashed``
      (papers.md §2, §2.1); ``seq`` runs on one thread.
    - ``threads`` [1]: worker threads m (runtime) or simulated workers (simulator).
    - ``persistence`` [inf]: Leashed-SGD's persistence bound T_p, the failed CAS attempts a gradient may
      accumulate before it is dropped; a non-negative integer, or ``inf`` (also the string ``"inf"``) to
      never drop. Ignored by the other algorithms.
    - ``model`` [``"mlp"``]: ``softmax``, ``mlp``, ``cnn``, or the test models ``counter`` (every
      gradient coordinate is −1) and ``quadratic`` (least squares, zero loss at the optimum).
    - ``hidden`` [(128,)]: hidden layer widths of ``mlp``, e.g. ``(256, 128)``.
    - ``dataset`` [``"mnist"``]: a name of ``leashed.models.datasets.DATASET_NAMES`` (``mnist``,
      ``fashion-mnist``, ``idx:DIR``, ``cifar10:DIR``, ``synthetic``, ``none``).
    - ``dim`` [100]: number of parameters of the ``quadratic`` and ``counter`` models.
    - ``batch_size`` [64]: rows per gradient.
    - ``lr`` [0.2]: the base learning rate α_c of plain SGD.
    - ``epochs`` [1]: passes over the training data in total, shared among the threads, so every
      algorithm computes :meth:`total_gradients` gradients whatever the thread count.
    - ``updates`` [None]: the number of gradients, overriding ``epochs``; required for ``counter`` and
      for timing-only simulation (``sim.simulate(spec, timing)`` without gradients).
    - ``seed`` [0]: seeds initialisation, batch order and the simulator's random draws.
    - ``step_policy`` [``"constant"``]: ``constant``, ``inverse``, ``fleet``, ``tail`` or
      ``normalised`` (staleness-adaptive steps, papers.md §3); ``normalised`` needs ``step_table``.
    - ``step_table`` [None]: step factors s(0), ..., s(K) by staleness τ (the last one applies beyond
      K), as built by ``leashed.analysis.steps.step_table`` or ``step_table_from_fit("fit.json")``.
    - ``staleness_model`` [None]: where ``step_table`` came from (e.g. ``"fit.json#1"``), recorded for
      the reader; not read by the engines.
    - ``sparsifier`` [``"none"``]: ``none``, ``topk:K`` or ``randk:K`` (K a count, or a percentage
      such as ``topk:1%``; papers.md §5).
    - ``error_memory`` [False]: per-thread error feedback for a sparsifier.
    - ``evaluations`` [20]: snapshots of the parameters on which training loss and test accuracy are
      measured (0 = none).
    - ``compute_time``, ``update_time`` [None]: the simulator's timing laws, e.g.
      ``"gamma:mean=2ms,cv=0.2"`` and ``"const:100us"`` (docs/simulator.md); None for the runtime.
    - ``backend`` [``"threads"``]: ``threads`` or ``mpi`` (docs/mpi.md).
    - ``extra`` [{}]: engine-specific settings (e.g. the simulator's ``sparse_update_factor``); not part
      of equality or hashing.
    """

    algorithm: str = "seq"
    threads: int = 1
    persistence: float = INF
    model: str = "mlp"
    hidden: tuple[int, ...] = (128,)
    dataset: str = "mnist"
    dim: int = 100
    batch_size: int = 64
    lr: float = 0.2
    epochs: int = 1
    updates: int | None = None
    seed: int = 0
    step_policy: str = "constant"
    step_table: tuple[float, ...] | None = None
    staleness_model: str | None = None
    sparsifier: str = "none"
    error_memory: bool = False
    evaluations: int = 20
    #: simulator-only fields (None for the runtime)
    compute_time: str | None = None
    update_time: str | None = None
    backend: str = "threads"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise SpecError(f"unknown algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        if self.model not in MODELS and not _is_user_model(self.model):
            raise SpecError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}, or a user "
                            f"model FILE.py:NAME or user:NAME (docs/models.md)")
        if self.step_policy not in STEP_POLICIES:
            raise SpecError(f"unknown step policy {self.step_policy!r}; choose one of "
                            f"{', '.join(STEP_POLICIES)}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise SpecError(f"threads must be a positive integer, not {self.threads!r}")
        if algorithms.algorithm(self.algorithm).single_thread and self.threads != 1:
            others = algorithms.or_list(algorithms.multi_thread_names())
            raise SpecError(f"algorithm {self.algorithm} runs on one thread; use `threads=1` (got "
                            f"{self.threads}) or choose {others}")
        object.__setattr__(self, "persistence", parse_persistence(self.persistence))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if any(h < 1 for h in self.hidden):
            raise SpecError(f"hidden layer widths must be positive, not {self.hidden}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SpecError(f"batch size must be a positive integer, not {self.batch_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SpecError(f"learning rate must be a positive finite number, not {self.lr!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise SpecError(f"epochs must be a positive integer, not {self.epochs!r}")
        if self.updates is not None and (not isinstance(self.updates, int) or self.updates < 1):
            raise SpecError(f"updates must be a positive integer, not {self.updates!r}")
        if self.dim < 1:
            raise SpecError(f"dim must be a positive integer, not {self.dim!r}")
        if self.evaluations < 0:
            raise SpecError(f"evaluations must be >= 0, not {self.evaluations!r}")
        if self.step_policy == "normalised" and not self.step_table:
            raise SpecError("step policy 'normalised' needs a step table from a fitted staleness model (the "
                            "file of `leashed fit`): pass "
                            "`step_table=leashed.analysis.steps.step_table_from_fit('fit.json')`")
        if self.step_table is not None:
            table = tuple(float(v) for v in self.step_table)
            if not table or not all(math.isfinite(v) and v >= 0 for v in table):
                raise SpecError("step table must be a non-empty list of finite, non-negative factors")
            object.__setattr__(self, "step_table", table)
        sparsifier_k(self.sparsifier, 10**12)  # syntax check; size checked against the model later
        if self.backend not in ("threads", "mpi"):
            raise SpecError(f"unknown backend {self.backend!r}; choose threads or mpi")

    # ---------------------------------------------------------------- derived
    @property
    def persistence_label(self) -> str:
        return "inf" if self.persistence == INF else str(int(self.persistence))

    def total_gradients(self, n_train_rows: int) -> int:
        """Gradients computed over the whole run (papers.md §2: E·R), shared among the threads."""
        if self.updates is not None:
            return self.updates
        per_epoch = n_train_rows // self.batch_size
        if per_epoch < 1:
            raise SpecError(f"batch size {self.batch_size} is larger than the training set "
                            f"({n_train_rows} rows); choose `batch_size={n_train_rows}` or less")
        return self.epochs * per_epoch

    def replace(self, **changes: Any) -> ExperimentSpec:
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        """Short human label, e.g. ``leashed m=4 Tp=inf``."""
        text = f"{self.algorithm} m={self.threads}"
        if algorithms.algorithm(self.algorithm).has_persistence:
            text += f" Tp={self.persistence_label}"
        if self.step_policy != "constant":
            text += f" {self.step_policy}"
        if self.sparsifier != "none":
            text += f" {self.sparsifier}{'+mem' if self.error_memory else ''}"
        return text

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["persistence"] = self.persistence_label
        data["hidden"] = list(self.hidden)
        data["step_table"] = None if self.step_table is None else list(self.step_table)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown spec field(s) {', '.join(sorted(unknown))}; "
                            f"the file may come from a newer leashed")
        data = dict(data)
        if "hidden" in data:
            data["hidden"] = tuple(data["hidden"])
        if data.get("step_table") is not None:
            data["step_table"] = tuple(data["step_table"])
        return cls(**data)
