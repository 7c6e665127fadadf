"""Timing models of the simulator: how long a gradient (compute, C) and an update attempt (U) take.

A :class:`Distribution` is parsed from a short string (``parse_distribution``), e.g.

==================================  ==========================================================
``const:5us``                       always 5 µs (also ``const:value=5us``, ``constant:...``)
``exp:mean=1``                      exponential with mean 1 s (also ``exp:1``, ``exponential:``)
``gamma:mean=2ms,cv=0.2``           gamma with mean 2 ms and coefficient of variation 0.2
``lognormal:mean=2ms,cv=0.5``       log-normal with that mean and coefficient of variation
``uniform:low=1ms,high=3ms``        uniform on [1 ms, 3 ms]
``empirical:FILE``                  resampled (with replacement) from measured times: a leashed
                                    results file (``.npz``; compute or per-attempt update times,
                                    see :func:`from_result`) or a text / ``.npy`` file of seconds
==================================  ==========================================================

Durations take a unit ``s``, ``ms``, ``us`` (or ``µs``) or ``ns``; a bare number is seconds. Anything
malformed raises a one-line :class:`~leashed.errors.SpecError`.

A :class:`TimingModel` pairs a compute and an update distribution with the split of an update into its
copy and apply phases (``copy_fraction``; papers.md Table 2 uses copy ½ + apply ½) and the optional
memory-bus contention factor F: an update that starts while n copies run (its own included) takes
U·(1 + F·(n − 1)) (architecture.md, simulator rules; the factor is fixed when the update starts).

Random times are drawn in numpy batches, one stream per worker and role, from
``SeedSequence(seed).spawn(m)`` (:func:`worker_streams`): identical seeds give identical runs.

:func:`from_result` calibrates a timing model from a runtime results file (architecture.md,
"calibrated from a runtime result").

Sparsified updates (papers.md §5) write only K of the d coordinates, so the update time shrinks with
ρ = K/d: :func:`sparse_update_scaling` gives U' = U·(f + (1 − f)·ρ), f the share of U that stays dense
(default: the copy, whose length is U·copy_fraction, for leashed, lock and hogwild; nothing for seq; for
sync, ρ is replaced by min(1, m·ρ), the union of the m sparse gradients of a round), and the copy share
of U'; :meth:`TimingModel.sparsified` applies it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leashed.errors import SpecError

if TYPE_CHECKING:
    from leashed.results import RunResult

__all__ = [
    "Constant", "Distribution", "Empirical", "Exponential", "Gamma", "LogNormal", "Scaled", "TimingModel",
    "Uniform", "default_dense_share", "from_result", "measured_times", "parse_distribution", "parse_duration",
    "sparse_update_scaling", "worker_streams",
]

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(s|ms|us|µs|μs|ns)?\s*$")
_BATCH_MIN, _BATCH_MAX = 64, 4096


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from ``'2ms'``, ``'5 us'``, ``'1e-3'`` (bare numbers are seconds); SpecError otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise SpecError(f"{what} must be a number with an optional unit s, ms, us or ns (e.g. 2ms), "
                        f"not {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(value):
        raise SpecError(f"{what} must be finite, not {text!r}")
    return value


# ------------------------------------------------------------------------------------------- distributions
class Distribution:
    """A distribution of non-negative durations in seconds."""

    name: str = ""

    @property
    def mean(self) -> float:
        raise NotImplementedError

    @property
    def cv(self) -> float:
        """Coefficient of variation (standard deviation / mean; 0 for a zero mean)."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws (float64 seconds)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The canonical string form; ``parse_distribution(d.describe())`` gives the same law."""
        raise NotImplementedError

    def stream(self, rng: np.random.Generator) -> Iterator[float]:
        """An endless iterator of draws, taken from ``rng`` in batches (64 growing to 4096)."""
        return _batched(self, rng)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def _batched(dist: Distribution, rng: np.random.Generator) -> Iterator[float]:
    n = _BATCH_MIN
    while True:
        yield from dist.sample(rng, n).tolist()
        n = min(2 * n, _BATCH_MAX)


def _fmt(seconds: float) -> str:
    return repr(float(seconds))


@dataclass(frozen=True, repr=False)
class Constant(Distribution):
    value: float
    name = "const"

    @property
    def mean(self) -> float:
        return self.value

    @property
    def cv(self) -> float:
        return 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value)

    def stream(self, rng: np.random.Generator) -> Iterator[float]:
        return itertools.repeat(float(self.value))

    def describe(self) -> str:
        return f"const:{_fmt(self.value)}"


@dataclass(frozen=True, repr=False)
class Exponential(Distribution):
    mean_s: float
    name = "exp"

    @property
    def mean(self) -> float:
        return self.mean_s

    @property
    def cv(self) -> float:
        return 1.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_s, n)

    def describe(self) -> str:
        return f"exp:mean={_fmt(self.mean_s)}"


@dataclass(frozen=True, repr=False)
class _MeanCv(Distribution):
    """A law given by its mean (seconds) and coefficient of variation; ``name`` is its string prefix."""

    mean_s: float
    cv_: float

    @property
    def mean(self) -> float:
        return self.mean_s

    @property
    def cv(self) -> float:
        return self.cv_

    def describe(self) -> str:
        return f"{self.name}:mean={_fmt(self.mean_s)},cv={_fmt(self.cv_)}"


@dataclass(frozen=True, repr=False)
class Gamma(_MeanCv):
    """Gamma with the given mean and cv: shape 1/cv², scale mean·cv²."""

    name = "gamma"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.cv_ == 0:
            return np.full(n, self.mean_s)
        shape = 1.0 / self.cv_**2
        return rng.gamma(shape, self.mean_s / shape, n)


@dataclass(frozen=True, repr=False)
class LogNormal(_MeanCv):
    """Log-normal with the given mean and cv: σ² = ln(1 + cv²), μ = ln(mean) − σ²/2."""

    name = "lognormal"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.cv_ == 0:
            return np.full(n, self.mean_s)
        sigma2 = math.log1p(self.cv_**2)
        return rng.lognormal(math.log(self.mean_s) - sigma2 / 2, math.sqrt(sigma2), n)


@dataclass(frozen=True, repr=False)
class Uniform(Distribution):
    low: float
    high: float
    name = "uniform"

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def cv(self) -> float:
        return (self.high - self.low) / math.sqrt(12) / self.mean if self.mean > 0 else 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)

    def describe(self) -> str:
        return f"uniform:low={_fmt(self.low)},high={_fmt(self.high)}"


@dataclass(frozen=True, repr=False, eq=False)
class Empirical(Distribution):
    """Resampling with replacement from measured durations (seconds)."""

    samples: np.ndarray
    source: str = "samples"
    name = "empirical"

    def __post_init__(self) -> None:
        values = np.asarray(self.samples, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if len(values) == 0:
            raise SpecError(f"empirical timing from {self.source} has no finite measured times; "
                            f"use a run with recorded updates")
        if values.min() < 0:
            raise SpecError(f"empirical timing from {self.source} has negative times "
                            f"(min {values.min():.3g} s); check the file")
        values = np.ascontiguousarray(values)
        values.setflags(write=False)
        object.__setattr__(self, "samples", values)

    @property
    def mean(self) -> float:
        return float(self.samples.mean())

    @property
    def cv(self) -> float:
        mean = self.mean
        return float(self.samples.std() / mean) if mean > 0 else 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.samples[rng.integers(0, len(self.samples), n)]

    def describe(self) -> str:
        return f"empirical:{self.source}"


@dataclass(frozen=True, repr=False, eq=False)
class Scaled(Distribution):
    """Another distribution's durations times a constant factor (the sparse update time, papers.md §5)."""

    base: Distribution
    factor: float
    name = "scaled"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and self.factor >= 0):
            raise SpecError(f"a time scale factor must be a finite number >= 0, not {self.factor!r}")

    @property
    def mean(self) -> float:
        return self.base.mean * self.factor

    @property
    def cv(self) -> float:
        return self.base.cv

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.base.sample(rng, n) * self.factor

    def describe(self) -> str:
        return f"{self.base.describe()} x {self.factor!r}"


# ------------------------------------------------------------------------------------------- parsing
_KINDS = {"const": "const", "constant": "const", "exp": "exp", "exponential": "exp", "gamma": "gamma",
          "lognormal": "lognormal", "lognorm": "lognormal", "uniform": "uniform", "empirical": "empirical"}
_PARAMS = {"const": ("value",), "exp": ("mean",), "gamma": ("mean", "cv"), "lognormal": ("mean", "cv"),
           "uniform": ("low", "high")}
_EXAMPLES = "e.g. const:5us, exp:mean=1ms, gamma:mean=2ms,cv=0.2, uniform:low=1ms,high=3ms"


def parse_distribution(text: str, role: str = "compute", what: str | None = None) -> Distribution:
    """Parse a timing string (module docstring); ``role`` (``compute`` or ``update``) selects which
    measured times an ``empirical:RESULTS.npz`` file provides. Raises a one-line SpecError."""
    what = what or f"{role} time"
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{what} must be a distribution like {_EXAMPLES}, not {text!r}")
    kind_text, sep, rest = text.strip().partition(":")
    kind = _KINDS.get(kind_text.strip().lower())
    if kind is None or not sep or not rest.strip():
        raise SpecError(f"{what} {text!r} is not a distribution: use KIND:PARAMS with KIND one of const, "
                        f"exp, gamma, lognormal, uniform, empirical ({_EXAMPLES})")
    if kind == "empirical":
        return _empirical_from_file(rest.strip(), role, what)
    names = _PARAMS[kind]
    values: dict[str, float] = {}
    for i, part in enumerate(p.strip() for p in rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:  # positional: const:5us, exp:1ms
            if i != 0 or len(names) != 1:
                raise SpecError(f"{what} {text!r}: write parameters as NAME=VALUE "
                                f"({', '.join(names)}), {_EXAMPLES}")
            key, value = names[0], part
        key = key.strip().lower()
        if key == "mean" and kind == "const":
            key = "value"
        if key not in names:
            raise SpecError(f"{what} {text!r}: unknown parameter {key!r} for {kind}; "
                            f"it takes {', '.join(names)}")
        if key in values:
            raise SpecError(f"{what} {text!r}: parameter {key!r} given twice")
        if key == "cv":
            try:
                values[key] = float(value)
            except ValueError:
                raise SpecError(f"{what} {text!r}: cv must be a number, not {value.strip()!r}") from None
            if not math.isfinite(values[key]):
                raise SpecError(f"{what} {text!r}: cv must be finite")
        else:
            values[key] = parse_duration(value, f"{what} {key}")
    missing = [n for n in names if n not in values]
    if missing:
        raise SpecError(f"{what} {text!r}: missing {', '.join(missing)} (write {kind}:"
                        + ",".join(f"{n}=..." for n in names) + ")")
    if kind == "const":
        if values["value"] < 0:
            raise SpecError(f"{what} {text!r}: a duration cannot be negative")
        return Constant(values["value"])
    if kind == "uniform":
        low, high = values["low"], values["high"]
        if low < 0 or high < low:
            raise SpecError(f"{what} {text!r}: need 0 <= low <= high")
        return Uniform(low, high)
    mean = values["mean"]
    if mean <= 0:
        raise SpecError(f"{what} {text!r}: the mean must be positive (for zero time use const:0)")
    if kind == "exp":
        return Exponential(mean)
    cv = values["cv"]
    if cv < 0:
        raise SpecError(f"{what} {text!r}: cv must be >= 0")
    return Gamma(mean, cv) if kind == "gamma" else LogNormal(mean, cv)


def _empirical_from_file(path_text: str, role: str, what: str) -> Distribution:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise SpecError(f"{what}: empirical timing file {path} does not exist; check the path")
    if path.suffix == ".npz":
        from leashed.results import RunResult

        compute, update = measured_times(RunResult.load(path))
        values = compute if role == "compute" else update
    else:
        try:
            values = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=None, ndmin=1)
        except (OSError, ValueError) as exc:
            raise SpecError(f"{what}: cannot read empirical times from {path} ({type(exc).__name__}); "
                            f"give a .npy or a text file of seconds, one per line") from None
    return Empirical(np.asarray(values, dtype=np.float64), source=str(path_text))


# ------------------------------------------------------------------------------------------- timing model
@dataclass(frozen=True)
class TimingModel:
    """Compute and update distributions, the copy share of an update, the bus-contention factor F."""

    compute: Distribution
    update: Distribution
    copy_fraction: float = 0.5
    bus_contention: float = 0.0
    notes: dict[str, object] = field(default_factory=dict, compare=False)
    #: leashed: the law of an attempt whose source vector another thread wrote (its copy comes from another
    #: core's cache; docs/simulator.md "The machine model"); None: ``update`` for every attempt
    update_remote: Distribution | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.copy_fraction <= 1.0):
            raise SpecError(f"copy fraction must be in [0, 1], not {self.copy_fraction!r}")
        if not (math.isfinite(self.bus_contention) and self.bus_contention >= 0):
            raise SpecError(f"bus contention must be a finite number >= 0, not {self.bus_contention!r}")

    @classmethod
    def parse(cls, compute: str, update: str, copy_fraction: float = 0.5,
              bus_contention: float = 0.0) -> TimingModel:
        return cls(parse_distribution(compute, "compute"), parse_distribution(update, "update"),
                   copy_fraction, bus_contention)

    @property
    def ratio(self) -> float:
        """r = E[C] / E[U] (papers.md §1); inf for zero-time updates."""
        return self.compute.mean / self.update.mean if self.update.mean > 0 else math.inf

    def sparsified(self, algorithm: str, rho: float, dense_share: float | None = None, m: int = 1,
                   calibrated_factor: float = 1.0) -> TimingModel:
        """The timing of a sparsified run keeping the fraction ``rho`` = K/d of the coordinates: the update
        distribution scaled by U'/U of :func:`sparse_update_scaling` (divided by ``calibrated_factor``,
        the factor already inside measured update times) and the copy share of U'. Notes record the
        factor; a model that carries them is returned unchanged (never scaled twice)."""
        if "sparse_update_scale" in self.notes:
            return self
        factor, copy_fraction, share = sparse_update_scaling(algorithm, rho, self.copy_fraction,
                                                             dense_share, m)
        scale = factor / calibrated_factor
        update = self.update if scale == 1.0 else Scaled(self.update, scale)
        remote = self.update_remote
        if remote is not None and scale != 1.0:
            remote = Scaled(remote, scale)
        return TimingModel(self.compute, update, copy_fraction, self.bus_contention,
                           notes={**self.notes, "sparse_update_scale": factor,
                                  "sparse_dense_share": share, "sparse_fraction": rho,
                                  "sparse_time_scale": scale, "dense_copy_fraction": self.copy_fraction},
                           update_remote=remote)

    def describe(self) -> dict[str, object]:
        return {"compute": self.compute.describe(), "update": self.update.describe(),
                "compute_mean_s": self.compute.mean, "compute_cv": self.compute.cv,
                "update_mean_s": self.update.mean, "update_cv": self.update.cv,
                "copy_fraction": self.copy_fraction, "bus_contention": self.bus_contention,
                **({} if self.update_remote is None else
                   {"update_remote": self.update_remote.describe(),
                    "update_remote_mean_s": self.update_remote.mean,
                    "update_remote_cv": self.update_remote.cv}),
                **self.notes}


def default_dense_share(algorithm: str, copy_fraction: float) -> float:
    """The share f of an update that stays dense when the gradient is sparse (papers.md §5): the full
    copy for leashed (copy L into the new vector), lock and hogwild (copy θ into the private θ_loc), whose
    length is U·copy_fraction; nothing for seq and sync, whose update is only the apply."""
    from leashed.algorithms import algorithm as entry

    return copy_fraction if entry(algorithm).dense_copy else 0.0


def sparse_update_scaling(algorithm: str, rho: float, copy_fraction: float, dense_share: float | None = None,
                          m: int = 1) -> tuple[float, float, float]:
    """(U'/U, copy share of U', f) for an update that keeps the fraction ``rho`` = K/d of the coordinates.

    U' = U·(f + (1 − f)·ρ), f = ``dense_share`` (default :func:`default_dense_share`); for sync, ρ is
    min(1, m·ρ) (a round applies the union of m sparse gradients). The dense share is taken from the copy
    first: the copy keeps min(f, c) of U and shrinks by ρ in the rest of its share c, the apply keeps
    f − min(f, c) and shrinks by ρ in the rest, so the copy share of U' is (min(f, c) + (c − min(f, c))·ρ)
    / (U'/U). With the default f = c the copy keeps its length and only the apply shrinks."""
    if not (0.0 < rho <= 1.0):
        raise SpecError(f"the kept fraction K/d must be in (0, 1], not {rho!r}")
    if dense_share is None:
        dense_share = default_dense_share(algorithm, copy_fraction)
    if not (0.0 <= dense_share <= 1.0):
        raise SpecError(f"sparse update factor (the dense share of an update) must be in [0, 1], "
                        f"not {dense_share!r}")
    from leashed.algorithms import algorithm as entry

    if entry(algorithm).versions_are_rounds:  # a round applies the union of its m sparse gradients
        rho = min(1.0, m * rho)
    c = copy_fraction
    copy_dense = min(dense_share, c)
    copy_part = copy_dense + (c - copy_dense) * rho
    apply_part = (dense_share - copy_dense) + (1.0 - c - (dense_share - copy_dense)) * rho
    factor = copy_part + apply_part
    return factor, (copy_part / factor if factor > 0 else c), dense_share


def _joint(law: Distribution, seed: int, m: int, clock: Callable[[], float] | None,
           place: Callable[[int], tuple[int, float]] | None = None) -> list[Iterator[float]] | None:
    """A law that replays measured time (``joint_streams``: :class:`leashed.sim.timeline.Timeline`): its m
    streams, reading ``clock`` (and ``place``: a thread's core and start instant, when threads share
    cores), on the block schedule of ``[seed, 23]`` (the same for every law of a run); None for other
    laws or without a clock."""
    joint = getattr(law, "joint_streams", None)
    return joint([seed, 23], m, clock, place) if joint is not None and clock is not None else None


def remote_streams(timing: TimingModel, seed: int, m: int, clock: Callable[[], float] | None = None,
                   place: Callable[[int], tuple[int, float]] | None = None) -> list[Iterator[float]] | None:
    """Per worker, an endless iterator of remote-attempt draws (``SeedSequence([seed, 11]).spawn(m)``), or
    None when the timing model has no remote law."""
    if timing.update_remote is None:
        return None
    shared = _joint(timing.update_remote, seed, m, clock, place)
    if shared is not None:
        return shared
    return [timing.update_remote.stream(np.random.default_rng(child))
            for child in np.random.SeedSequence([seed, 11]).spawn(m)]


def worker_streams(timing: TimingModel, seed: int, m: int, clock: Callable[[], float] | None = None,
                   place: Callable[[int], tuple[int, float]] | None = None) \
        -> list[tuple[Iterator[float], Iterator[float]]]:
    """Per worker, endless (compute, update) draw iterators from ``SeedSequence(seed).spawn(m)``;
    each worker's sequence splits again into a compute and an update stream. A law that replays
    measured time (``joint_streams``, :class:`leashed.sim.timeline.Timeline`) reads ``clock`` (the
    simulated time) and draws from one block schedule for all workers and laws (:func:`_joint`)."""
    out = []
    computes = _joint(timing.compute, seed, m, clock, place)
    updates = _joint(timing.update, seed, m, clock, place)
    rng = np.random.default_rng
    for j, child in enumerate(np.random.SeedSequence(seed).spawn(m)):
        c_seq, u_seq = child.spawn(2)
        c_stream = computes[j] if computes is not None else timing.compute.stream(rng(c_seq))
        u_stream = updates[j] if updates is not None else timing.update.stream(rng(u_seq))
        out.append((c_stream, u_stream))
    return out


# ------------------------------------------------------------------------------------------- calibration
def records_snapshot_end(result: RunResult) -> bool:
    """Whether ``t_attempt`` of a results file is the end of each update's snapshot copy: seqlock
    (``Algorithm.snapshot_reads``) files written since the runtime records it (older ones read
    t_attempt as t_grad)."""
    from leashed.algorithms import algorithm as entry

    log = result.updates
    return bool(entry(result.spec.algorithm).snapshot_reads and len(log)
                and np.any(np.asarray(log.t_attempt) < np.asarray(log.t_grad)))


def snapshot_phases(result: RunResult) -> tuple[np.ndarray, np.ndarray] | None:
    """seqlock, where the file records the end of the snapshot (:func:`records_snapshot_end`): per
    update, one snapshot try, (t_attempt − t_start) / tries, and the apply, t_commit − t_grad (both at
    least 0); else None."""
    if not records_snapshot_end(result):
        return None
    log = result.updates
    tries = np.maximum(np.asarray(log.attempts, dtype=np.int64), 1)
    copy = np.maximum(np.asarray(log.t_attempt - log.t_start, dtype=np.float64), 0.0) / tries
    apply = np.maximum(np.asarray(log.t_commit - log.t_grad, dtype=np.float64), 0.0)
    return copy, apply


def gradient_starts(result: RunResult) -> np.ndarray:
    """Where each recorded gradient's compute began: t_start, or for seqlock the end of its snapshot
    (t_attempt, :func:`records_snapshot_end`), so that the compute time does not hold the copy the
    simulator charges itself."""
    log = result.updates
    return np.asarray(log.t_attempt if records_snapshot_end(result) else log.t_start, dtype=np.float64)


def measured_copy_fraction(result: RunResult) -> float | None:
    """seqlock: the measured share of the copy in U = copy + apply (:func:`snapshot_phases`); None where
    the copy is not measured apart (the other algorithms take the copy fraction given, 0.5 by default)."""
    phases = snapshot_phases(result)
    if phases is None:
        return None
    copy, apply = phases
    ok = np.isfinite(copy) & np.isfinite(apply)
    total = float(copy[ok].sum() + apply[ok].sum())
    return float(copy[ok].sum()) / total if total > 0 else None


def measured_times(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """Measured (compute, update) times of a results file: compute = t_grad − t_start per gradient;
    update = (t_commit − t_grad) / attempts, repeated once per attempt (a per-attempt sample). sync:
    update = t_commit − the round's last t_grad, the update after the barrier (papers.md §2; the
    simulator's round is the slowest gradient, then the slowest stripe): t_commit − t_grad also holds the
    wait for the round's slowest gradient, which the simulator adds itself (it made quiet calibrated
    predictions at m = 2 8 % slow). seqlock, where the file records the end of the snapshot: compute =
    t_grad − t_attempt, update = one snapshot try + the apply, (t_attempt − t_start) / tries + t_commit −
    t_grad, once per update (the simulator draws one U per update and charges each try its copy share,
    :func:`measured_copy_fraction`)."""
    log = result.updates
    if len(log) == 0:
        raise SpecError("the results file has no recorded updates to calibrate from; "
                        "use a run with at least one update")
    phases = snapshot_phases(result)
    if phases is not None:
        compute = np.asarray(log.t_grad - log.t_attempt, dtype=np.float64)
        update = phases[0] + phases[1]
        ok = np.isfinite(compute) & np.isfinite(update)
        if not ok.any():
            raise SpecError("the results file has no finite update timestamps to calibrate from")
        return np.maximum(compute[ok], 0.0), np.maximum(update[ok], 0.0)
    compute = np.asarray(log.t_grad - log.t_start, dtype=np.float64)
    attempts = np.maximum(np.asarray(log.attempts, dtype=np.int64), 1)
    from leashed.algorithms import algorithm as entry

    arrived = np.asarray(log.t_grad, dtype=np.float64)
    if entry(result.spec.algorithm).versions_are_rounds:
        rounds = np.asarray(log.version_read, dtype=np.int64)
        _, index = np.unique(rounds, return_inverse=True)
        last = np.full(int(index.max()) + 1, -np.inf)
        np.maximum.at(last, index, arrived)
        arrived = last[index]
    share = np.asarray(log.t_commit - arrived, dtype=np.float64) / attempts
    ok = np.isfinite(compute) & np.isfinite(share)
    compute = np.maximum(compute[ok], 0.0)
    update = np.maximum(np.repeat(share[ok], attempts[ok]), 0.0)
    if len(compute) == 0:
        raise SpecError("the results file has no finite update timestamps to calibrate from")
    return compute, update


def from_result(result: RunResult, source: str = "result", copy_fraction: float = 0.5,
                bus_contention: float = 0.0) -> TimingModel:
    """A timing model resampling the compute and update times measured in a runtime run.

    Compute time is t_grad − t_start, update time the per-attempt share of t_commit − t_grad (papers.md
    §1: U = copy + apply (+ CAS)). A sparsified run's update times already contain its factor
    U'/U (:func:`sparse_update_scaling`): the notes keep it as ``calibration_sparse_scale`` and
    :meth:`TimingModel.sparsified` divides it out. For ``lock`` runs these include waiting for the lock,
    so the calibrated model is meant for predicting the same machine, not for dissecting the lock.
    """
    compute, update = measured_times(result)
    notes: dict[str, object] = {"calibrated_from": source, "calibration_source": result.source,
                                "calibration_samples": int(len(compute))}
    spec = result.spec
    if spec.sparsifier != "none":
        from leashed.sim.simulate import model_size
        from leashed.spec import sparsifier_k

        d = int(len(result.params)) or model_size(spec)
        notes["calibration_sparse_scale"] = sparse_update_scaling(
            spec.algorithm, sparsifier_k(spec.sparsifier, d) / d, copy_fraction,
            spec.extra.get("sparse_update_factor"), spec.threads)[0]
    return TimingModel(Empirical(compute, source), Empirical(update, source), copy_fraction, bus_contention,
                       notes=notes)
