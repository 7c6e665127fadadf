"""The papers' claims, measured (issue 16; docs/papers.md §2.1, §3, §5): one experiment per claim, each
with several seeds, a statistic with a 90 % confidence interval and a verdict from a rule fixed here,
as data next to the claim's text, before anything runs.

Claims (:data:`CLAIMS`): 1 time to target and 2 stability (Leashed-SGD against lock-based AsyncSGD and
HOGWILD!), 3 memory, 4 contention regulation by the persistence bound T_p, 5 staleness-adaptive steps
(MindTheStep family), 6 sparsification under staleness (Candela et al.).

Engines. Rows at m <= this machine's usable cores are **hardware** (``leashed.runtime.run``: real threads,
wall time). Rows at larger m are **simulated** (``leashed.sim.run_simulation``) on a machine of m cores,
each as fast as this one's: the timing is :func:`leashed.sim.calibration.calibrate` from this machine's
runtime runs at m = 1 and 2 of the same algorithm (compute, completed-attempt and remote-copy laws, read
slowdown), with ``cores = m`` and the background load ignored. Claims 1, 2, 5, 6 simulate with real
gradients (``gradients=True``: a small MLP, a few hundred to a few thousand updates, because that mode
runs one real gradient per simulated one); claims 3 and 4 are timing-only.

Statistics (:func:`t_interval`, :func:`log_ratio_interval`): a two-sided 90 % Student-t interval over
the experiment's units (seeds, or (lr, seed) pairs), on the log scale for ratios (a geometric mean).
Verdicts (:func:`verdict`): ``reproduced`` when the interval lies beyond the rule's reproduce threshold,
``not reproduced`` when it lies at or on the other side of its refute threshold, else ``inconclusive``;
a claim's overall verdict aggregates its rows by :data:`AGGREGATION`.

Run through ``leashed claims [--quick] [--out DIR]`` (leashed/claims.py writes the page), or
``python benchmarks/claims.py --quick --out DIR``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import diverged, finite_curve, time_to_target  # noqa: E402

from leashed import algorithms as registry  # noqa: E402

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
CONFIDENCE = 0.90
#: a run whose final loss is above this fraction of its initial loss stalled (benchmarks/paper_comparison.py)
STALL = 0.8

#: (label, algorithm, persistence) of claims 1 and 2 (paper_comparison.py's labels)
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("lock", "lock", "inf"), ("hogwild", "hogwild", "inf"),
    ("leashed-inf", "leashed", "inf"), ("leashed-1", "leashed", "1"), ("leashed-0", "leashed", "0"))
BASELINES = ("lock", "hogwild")
POLICIES = ("constant", "inverse", "fleet", "tail", "normalised")
#: (label, sparsifier, error memory) of claim 6
SPARSE_CONFIGS: tuple[tuple[str, str, bool], ...] = (
    ("dense", "none", False),
    ("top10%", "topk:10%", False), ("top10%+mem", "topk:10%", True),
    ("top1%", "topk:1%", False), ("top1%+mem", "topk:1%", True),
    ("rand10%", "randk:10%", False), ("rand10%+mem", "randk:10%", True),
    ("rand1%", "randk:1%", False), ("rand1%+mem", "randk:1%", True))


# ------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """A verdict rule on an interval [low, high] of a statistic, fixed before the run.

    ``direction="above"``: reproduced if low > ``reproduce``, not reproduced if high <= ``refute``.
    ``direction="below"``: reproduced if high < ``reproduce``, not reproduced if low >= ``refute``.
    """

    statistic: str
    direction: str
    reproduce: float
    refute: float
    text: str


@dataclass(frozen=True)
class Claim:
    """A claim in the paper's words, what is measured, and its rules (one per statistic)."""

    key: str
    number: int
    title: str
    source: str
    quote: str
    measured: str
    rules: tuple[Rule, ...]
    #: the rows whose verdicts make the claim's overall verdict (a statistic name), "" = all rows
    headline: str = ""


SPEEDUP = Rule("speedup", "above", 1.2, 1.0,
               "reproduced if the 90 % interval of the geometric-mean speedup (baseline's time to target / "
               "leashed's, paired by lr and seed) lies above 1.2 (the paper's smallest gain, 20 %); not "
               "reproduced if it lies at or below 1.0; else inconclusive")
REACH = Rule("reach_difference", "above", 0.0, 0.0,
             "reproduced if the 90 % interval of the difference in the share of (lr, seed) runs reaching the "
             "target (leashed − baseline) lies above 0; not reproduced if it lies at or below 0; else "
             "inconclusive. When every run of both sides reached it, or none did, the grid does not probe "
             "stability: inconclusive")
LIVE_MEAN = Rule("live_mean_ratio", "below", 1.0, 1.0,
                 "reproduced if the 90 % interval of leashed's time-average live vectors / the baselines' "
                 "m + 1 lies below 1; not reproduced if at or above 1")
LIVE_MAX = Rule("live_max_ratio", "below", 1.0, 1.0,
                "reproduced if the interval of leashed's maximum live vectors / (m + 1) lies below 1; not "
                "reproduced if at or above 1")
BOUND = Rule("bound_excess", "below", 0.5, 0.5,
             "[derived bound, papers.md T8] reproduced if no run's maximum exceeds 2m + 1 (largest excess "
             "< 0.5 vectors); not reproduced if one does")
RSS = Rule("rss_ratio", "below", 1.0, 1.0,
           "hardware: reproduced if the 90 % interval of peak RSS leashed / lock (paired by seed) lies below "
           "1; not reproduced if at or above 1")
STALENESS = Rule("staleness_ratio", "below", 0.8, 1.0,
                 "reproduced if the 90 % interval of E[τ](T_p) / E[τ](T_p = ∞) (paired by seed) lies below "
                 "0.8 (at least 20 % less staleness); not reproduced if at or above 1.0; else inconclusive")
POLICY_SPEEDUP = Rule("policy_speedup", "above", 1.0, 1.0,
                      "reproduced (the policy helps) if the 90 % interval of constant's updates to target / "
                      "the policy's (paired by lr and seed, runs where both reach it) lies above 1; not "
                      "reproduced (it does not help) if at or below 1; else inconclusive")
POLICY_REACH = Rule("policy_reach_difference", "above", 0.0, 0.0,
                    "reproduced (the policy helps) if the 90 % interval of the difference in the share of "
                    "(lr, seed) runs reaching the target (policy − constant) lies above 0; not reproduced if "
                    "at or below 0; inconclusive when every run of both reached it, or none did")
SPARSE = Rule("loss_ratio", "below", 1.1, 1.1,
              "non-inferiority: reproduced if the 90 % interval of the final loss sparse / dense (paired "
              "by seed, same m and updates) lies below 1.1 (at most 10 % worse); not reproduced if it lies "
              "at or above 1.1; else inconclusive")

CLAIMS: tuple[Claim, ...] = (
    Claim("time_to_target", 1, "Time to target", "Leashed-SGD (papers.md §2.1 [paper])",
          "“from 20–80% up to 4x improvements” in wall-clock time to convergence against lock-based "
          "AsyncSGD and HOGWILD!",
          "wall time (hardware) or simulated time to the first evaluation at or below the target fraction of "
          "the initial training loss; leashed T_p = ∞, 1, 0 against lock and hogwild", (SPEEDUP,)),
    Claim("stability", 2, "Stability", "Leashed-SGD (papers.md §2.1 [paper])",
          "“better stability” under hyper-parameter choices",
          "share of the (lr, seed) runs that reach the target without diverging or stalling, per algorithm "
          "and m", (REACH,)),
    Claim("memory", 3, "Memory", "Leashed-SGD (papers.md §2.1 [paper]; bound [derived] T8)",
          "“dynamic memory management, allocating space only when needed”; less memory than the "
          "baselines",
          "live parameter vectors (time average, maximum) against m, the 2m + 1 bound and lock/hogwild's "
          "m + 1; peak resident memory of hardware runs", (LIVE_MEAN, LIVE_MAX, BOUND, RSS),
          headline="live_mean_ratio"),
    Claim("contention", 4, "Contention regulation", "Leashed-SGD (papers.md §2.1 [paper])",
          "“a natural contention-regulating mechanism” (the persistence bound)",
          "mean staleness, CAS failure fraction and dropped gradients against T_p at m = 16 … 64 "
          "(timing-only simulation)", (STALENESS,)),
    Claim("adaptive_steps", 5, "Adaptive steps", "MindTheStep-AsyncPSGD (papers.md §3 [paper])",
          "a staleness-adaptive step “provably reduces the negative impact of asynchrony”, with faster "
          "convergence in deep learning",
          "updates to target and share of runs reaching it for constant, inverse, fleet, tail and normalised "
          "(fitted model) steps, leashed T_p = ∞, lr from safe to the edge where constant stalls",
          (POLICY_SPEEDUP, POLICY_REACH), headline="normalised"),
    Claim("sparsification", 6, "Sparsification under staleness", "Candela et al. (papers.md §5 [paper])",
          "sparsification does not harm SGD under staleness; its effect versus vanilla SGD is "
          "“negligible”",
          "final training loss of top-k and rand-k (with and without error memory) at K = 10 %, 1 % against "
          "dense at the same m and number of updates (leashed T_p = ∞, E[τ] = m − 1)", (SPARSE,)),
)
#: how a claim's rows make its verdict (stated on the page; fixed before the run)
AGGREGATION = ("A claim's overall verdict is taken over its headline rows (all rows unless the claim names "
               "a headline statistic or policy): reproduced if at least half of them are reproduced and "
               "none is not reproduced; not reproduced if at least half are not reproduced and none is "
               "reproduced; otherwise inconclusive (mixed or too little data).")


#: what every run's page says about the limits of its evidence
CAVEATS = (
    "The CNN is not measured: with-gradients simulation of the CNN is about ten times slower per gradient "
    "than the small MLP's, and its hardware runs would double the run's length; every row is the MLP.",
    "The calibration runs are this machine's, under its load at the time (the load average is in the "
    "header): their compute times include descheduling by other processes.",
    "Time to target is resolved to the spacing of the evaluations (1/evaluations of a run's length).",
    "`normalised` is the model-normalised family of papers.md §3.2 (the MindTheStep formula itself is "
    "unverified); `tail` is TAIL-τ as the authors coded it, whose mean factor is not 1 (papers.md §3.1).",
    "The simulator does not model HOGWILD!'s torn reads or lost updates: simulated hogwild is a consistent "
    "algorithm with hogwild's staleness and timing.",
    "Peak RSS is the whole process, data set included: vectors of the MLP are a small part of it.",
)


def claim(key: str) -> Claim:
    return next(c for c in CLAIMS if c.key == key)


def verdict(rule: Rule, low: float | None, high: float | None) -> str:
    """The verdict of ``rule`` on the interval [low, high] (:class:`Rule`); inconclusive without one."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if rule.direction == "above":
        if low > rule.reproduce:
            return REPRODUCED
        if high <= rule.refute:
            return NOT_REPRODUCED
    else:
        if high < rule.reproduce:
            return REPRODUCED
        if low >= rule.refute:
            return NOT_REPRODUCED
    return INCONCLUSIVE


def aggregate(verdicts: Sequence[str]) -> str:
    """A claim's overall verdict from its headline rows (:data:`AGGREGATION`)."""
    if not verdicts:
        return INCONCLUSIVE
    yes, no = verdicts.count(REPRODUCED), verdicts.count(NOT_REPRODUCED)
    if yes * 2 >= len(verdicts) and no == 0:
        return REPRODUCED
    if no * 2 >= len(verdicts) and yes == 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


# ------------------------------------------------------------------------------------------- statistics
def t_interval(values: Sequence[float], confidence: float = CONFIDENCE
               ) -> tuple[float | None, float | None, float | None, int]:
    """(mean, low, high, n): the two-sided Student-t interval of the mean; no interval for n < 2. A
    non-finite value makes the mean and the bound on its side infinite (the other bound comes from the
    finite values)."""
    from scipy import stats

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    n = len(x)
    if n == 0:
        return None, None, None, 0
    if np.any(np.isnan(x)):
        return math.nan, None, None, n
    if not np.all(np.isfinite(x)):
        up, down = bool(np.any(x == math.inf)), bool(np.any(x == -math.inf))
        finite = x[np.isfinite(x)]
        if up and down:
            return math.nan, -math.inf, math.inf, n
        if up:
            return math.inf, float(finite.min()) if len(finite) else math.inf, math.inf, n
        return -math.inf, -math.inf, float(finite.max()) if len(finite) else -math.inf, n
    mean = float(x.mean())
    if n < 2:
        return mean, None, None, n
    se = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return mean, mean - half, mean + half, n


def log_ratio_interval(ratios: Sequence[float], confidence: float = CONFIDENCE
                       ) -> tuple[float | None, float | None, float | None, int]:
    """The geometric mean of positive ratios with the t-interval of their logs, back-transformed."""
    logs = [math.log(r) if r > 0 else -math.inf for r in ratios]
    est, low, high, n = t_interval(logs, confidence)

    def back(v: float | None) -> float | None:
        return None if v is None else (math.exp(v) if math.isfinite(v) else (math.inf if v > 0 else 0.0))

    return back(est), back(low), back(high), n


# ------------------------------------------------------------------------------------------- config
@dataclass
class ClaimsConfig:
    """Grid sizes of one claims run (``full``, :func:`quick_config`, :func:`tiny_config`)."""

    name: str = "full"
    seeds: int = 5
    hidden: tuple[int, ...] = (32,)
    batch_size: int = 64
    target: float = 0.25
    #: hardware (runtime) rows of claims 1, 2
    hw_lrs: tuple[float, ...] = (0.1, 0.5, 1.0)
    hw_updates: int = 1500
    hw_evaluations: int = 20
    calibration_updates: int = 1000
    #: simulated with-gradients rows of claims 1, 2
    sim_m: tuple[int, ...] = (4, 8, 16, 32)
    sim_lrs: tuple[float, ...] = (0.05, 0.1, 0.3)
    sim_updates: int = 1000
    sim_evaluations: int = 15
    #: timing-only sweep of claims 3, 4
    sweep_m: tuple[int, ...] = (4, 8, 16, 32, 64)
    sweep_updates: int = 3000
    #: claim 5
    adaptive_m: tuple[int, ...] = (8, 16, 32)
    adaptive_lrs: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    adaptive_updates: int = 1500
    #: claim 6: lr = sparse_lr_m / m (a safe dense step at each m)
    sparse_m: tuple[int, ...] = (16, 64)
    sparse_lr_m: float = 0.8
    sparse_configs: tuple[str, ...] = tuple(c[0] for c in SPARSE_CONFIGS)
    #: peak RSS of hardware runs (one subprocess each); 0 = not measured
    rss_updates: int = 300
    rss_hidden: tuple[int, ...] = (128,)
    variants: tuple[str, ...] = tuple(v[0] for v in VARIANTS)

    def seed_list(self) -> list[int]:
        return list(range(self.seeds))


def quick_config() -> ClaimsConfig:
    """``leashed claims --quick``: 3 seeds, one or two simulated m per claim, 600 to 1,000 updates a run."""
    return ClaimsConfig(name="quick", seeds=3, hw_updates=800, hw_evaluations=16, calibration_updates=800,
                        sim_m=(8, 16), sim_lrs=(0.1, 0.3), sim_updates=600, sim_evaluations=12,
                        sweep_m=(4, 16, 32, 64), sweep_updates=1500, adaptive_m=(16,),
                        adaptive_lrs=(0.05, 0.1, 0.2), adaptive_updates=1000,
                        sparse_m=(16,), sparse_configs=("dense", "top10%", "top1%", "top1%+mem", "rand1%",
                                                         "rand1%+mem"))


def tiny_config() -> ClaimsConfig:
    """The test's version (tests/test_claims.py): every claim, minimal grids, seconds."""
    return ClaimsConfig(name="tiny", seeds=2, hidden=(8,), target=0.7, hw_lrs=(0.1,), hw_updates=120,
                        hw_evaluations=6,
                        calibration_updates=150, sim_m=(4,), sim_lrs=(0.3,), sim_updates=120,
                        sim_evaluations=6, sweep_m=(4, 16), sweep_updates=300, adaptive_m=(4,),
                        adaptive_lrs=(0.3,), adaptive_updates=120, sparse_m=(4,), sparse_lr_m=1.2,
                        sparse_configs=("dense", "top10%", "rand10%+mem"), rss_updates=0,
                        variants=("lock", "hogwild", "leashed-inf"))


# ------------------------------------------------------------------------------------------- runs
@dataclass
class Context:
    """What every experiment shares: the data, the calibration runs, the run cache, the progress line."""

    config: ClaimsConfig
    out: Path
    progress: Callable[[str], None]
    cores: int
    data: Any = None
    calibration: dict[str, list[Any]] = field(default_factory=dict)
    cache: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _shared_datasets() -> Iterator[None]:
    """Load each data set once for every with-gradients simulation (each GradientEngine loads its own)."""
    from leashed.models import datasets

    original = datasets.load_dataset
    memo: dict[tuple[Any, ...], Any] = {}

    def load(name: str, *args: Any, **kwargs: Any) -> Any:
        key = (name, args, tuple(sorted(kwargs.items())))
        if key not in memo:
            memo[key] = original(name, *args, **kwargs)
        return memo[key]

    datasets.load_dataset = load  # type: ignore[assignment]
    try:
        yield
    finally:
        datasets.load_dataset = original  # type: ignore[assignment]


def _spec(ctx: Context, algorithm: str, m: int, lr: float, seed: int, persistence: str = "inf",
          **changes: Any) -> Any:
    from leashed.spec import ExperimentSpec

    info = registry.algorithm(algorithm)
    return ExperimentSpec(algorithm=algorithm, threads=m, persistence=persistence if info.has_persistence
                          else "inf", model="mlp", hidden=ctx.config.hidden, batch_size=ctx.config.batch_size,
                          lr=lr, seed=seed, **changes)


def curve_record(result: Any, target: float) -> dict[str, Any]:
    """Time and updates to ``target`` × the initial loss, stall/divergence, staleness, memory of a run."""
    s = result.samples
    times, losses = finite_curve(s.time, s.loss)
    ok = np.isfinite(s.loss)
    versions = [float(v) for v in np.asarray(s.version)[ok]]
    l0 = losses[0] if losses else math.nan
    final = losses[-1] if losses else math.nan
    bad = diverged(result) or not (math.isfinite(final) and math.isfinite(l0)) or final > STALL * l0
    tail = losses[-max(1, len(losses) // 4):]
    t_hit = None if bad else time_to_target(times, losses, target * l0)
    u_hit = None if bad else time_to_target(versions, losses, target * l0)
    tau = result.staleness
    attempts = result.extra.get("cas_attempts")
    applied = result.totals.get("updates_applied") or 0
    dropped = result.totals.get("updates_dropped") or 0
    live = np.asarray(s.live_vectors, dtype=np.float64)
    return {"t_target": t_hit, "u_target": u_hit, "reached": t_hit is not None, "stalled": bool(bad),
            "initial_loss": l0, "final_loss": final,
            "tail_loss": float(np.mean(tail)) if tail and all(math.isfinite(v) for v in tail) else math.inf,
            "tau_mean": float(tau.mean()) if len(tau) else None,
            "cas_failure_frac": (result.totals.get("cas_failures", 0) / attempts) if attempts else None,
            "dropped_frac": dropped / (applied + dropped) if applied + dropped else None,
            "live_mean": result.extra.get("live_vectors_mean", float(live.mean()) if len(live) else None),
            "live_max": result.extra.get("live_vectors_max", int(live.max()) if len(live) else None),
            "time_s": float(result.totals.get("wall_time_s") or 0.0)}


def hardware_run(ctx: Context, algorithm: str, m: int, lr: float, seed: int, persistence: str = "inf",
                 **changes: Any) -> dict[str, Any]:
    """One runtime run (in this process, data shared), summarised; cached by its spec."""
    from leashed.runtime.run import run

    spec = _spec(ctx, algorithm, m, lr, seed, persistence, updates=ctx.config.hw_updates,
                 evaluations=ctx.config.hw_evaluations, **changes)
    key = ("hardware", spec)
    if key not in ctx.cache:
        ctx.cache[key] = {**curve_record(run(spec, dataset=ctx.data, progress=False), ctx.config.target),
                          "engine": "hardware"}
    return ctx.cache[key]


def calibration_runs(ctx: Context, algorithm: str) -> list[Any]:
    """This machine's runtime runs of ``algorithm`` at m = 1 and 2 (seeds 100, 101; no evaluations)."""
    from leashed.runtime.run import run

    if algorithm not in ctx.calibration:
        ctx.calibration[algorithm] = [
            run(_spec(ctx, algorithm, m, 0.05, 100 + m, updates=ctx.config.calibration_updates,
                      evaluations=0), dataset=ctx.data, progress=False) for m in (1, 2)]
    return ctx.calibration[algorithm]


def calibrated(ctx: Context, algorithm: str, m: int) -> tuple[Any, Any]:
    """(timing, machine) of m threads on m cores as fast as this machine's (module docstring)."""
    from leashed.sim.calibration import calibrate

    return calibrate(calibration_runs(ctx, algorithm), ["m1", "m2"], threads=m, cores=m, ignore_load=True)


def simulated_run(ctx: Context, algorithm: str, m: int, lr: float, seed: int, persistence: str = "inf",
                  *, updates: int | None = None, **changes: Any) -> dict[str, Any]:
    """One calibrated with-gradients simulation, summarised; cached by its spec."""
    from leashed.sim.simulate import run_simulation

    spec = _spec(ctx, algorithm, m, lr, seed, persistence, updates=updates or ctx.config.sim_updates,
                 evaluations=ctx.config.sim_evaluations, **changes)
    key = ("simulated", spec, spec.step_table)
    if key not in ctx.cache:
        timing, machine = calibrated(ctx, algorithm, m)
        sim = run_simulation(spec, timing, gradients=True, metadata=False, machine=machine)
        ctx.cache[key] = {**curve_record(sim.result, ctx.config.target), "engine": "simulated"}
    return ctx.cache[key]


def timing_run(ctx: Context, m: int, persistence: str, seed: int) -> dict[str, Any]:
    """One calibrated timing-only simulation of leashed (claims 3, 4)."""
    from leashed.sim.simulate import run_simulation

    spec = _spec(ctx, "leashed", m, 0.05, seed, persistence, updates=ctx.config.sweep_updates, evaluations=0)
    key = ("timing", spec)
    if key not in ctx.cache:
        timing, machine = calibrated(ctx, "leashed", m)
        sim = run_simulation(spec, timing, metadata=False, machine=machine)
        ctx.cache[key] = {**curve_record(sim.result, ctx.config.target), "engine": "simulated",
                          "histogram": sim.result.staleness_histogram}
    return ctx.cache[key]


# ------------------------------------------------------------------------------------------- rows
def make_row(claim_key: str, rule: Rule, engine: str, label: str, estimate: tuple[Any, Any, Any, int],
             measured: str, unit: str, **extra: Any) -> dict[str, Any]:
    """One page row: the claim, the comparison, the statistic with its interval and the verdict."""
    est, low, high, n = estimate
    return {"claim": claim_key, "statistic": rule.statistic, "engine": engine, "comparison": label,
            "estimate": est, "low": low, "high": high, "n": n, "unit": unit, "measured": measured,
            "verdict": verdict(rule, low, high), "rule": rule.text, **extra}


def speedup_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claim 1 from run records (keys engine, m, lr, seed, variant, t_target): per (engine, m, leashed
    variant, baseline), the geometric-mean speedup over the (lr, seed) pairs where both reached the
    target. Pure: the tests feed it synthetic records."""
    rows = []
    index = {(r["engine"], r["m"], r["variant"], r["lr"], r["seed"]): r for r in records}
    groups = sorted({(r["engine"], r["m"]) for r in records}, key=lambda g: (g[0] != "hardware", g[1]))
    for engine, m in groups:
        ours = sorted({r["variant"] for r in records if r["engine"] == engine and r["m"] == m
                       and r["variant"] not in BASELINES})
        for variant in ours:
            for base in BASELINES:
                pairs = [(index[(engine, m, base, lr, s)], r) for (e, mm, v, lr, s), r in index.items()
                         if (e, mm, v) == (engine, m, variant) and (engine, m, base, lr, s) in index]
                if not pairs:
                    continue
                both = [(b["t_target"], r["t_target"]) for b, r in pairs
                        if b["t_target"] is not None and r["t_target"] is not None and r["t_target"] > 0]
                est = log_ratio_interval([b / r for b, r in both])
                rows.append(make_row("time_to_target", SPEEDUP, engine, f"{variant} vs {base}, m = {m}", est,
                                     f"{len(both)} of {len(pairs)} (lr, seed) pairs both reached the target",
                                     "x", m=m))
    return rows


def reach_rows(records: Sequence[dict[str, Any]], claim_key: str = "stability", rule: Rule = REACH,
               baselines: Sequence[str] = BASELINES, key: str = "variant") -> list[dict[str, Any]]:
    """Claim 2 (and claim 5's reach rows): per (engine, m, ours, baseline), the paired difference of
    reaching the target over (lr, seed), with its t-interval."""
    rows = []
    index = {(r["engine"], r["m"], r[key], r["lr"], r["seed"]): r for r in records}
    groups = sorted({(r["engine"], r["m"]) for r in records}, key=lambda g: (g[0] != "hardware", g[1]))
    for engine, m in groups:
        ours = sorted({r[key] for r in records if r["engine"] == engine and r["m"] == m
                       and r[key] not in baselines})
        for variant in ours:
            for base in baselines:
                pairs = [(index[(engine, m, base, lr, s)], r) for (e, mm, v, lr, s), r in index.items()
                         if (e, mm, v) == (engine, m, variant) and (engine, m, base, lr, s) in index]
                if not pairs:
                    continue
                diffs = [float(r["reached"]) - float(b["reached"]) for b, r in pairs]
                share = sum(r["reached"] for _, r in pairs) / len(pairs)
                share_b = sum(b["reached"] for b, _ in pairs) / len(pairs)
                estimate = t_interval(diffs)
                if share == share_b and share in (0.0, 1.0):  # the grid does not probe stability (the rule)
                    estimate = (0.0, None, None, len(pairs))
                rows.append(make_row(claim_key, rule, engine, f"{variant} vs {base}, m = {m}", estimate,
                                     f"reached: {share:.0%} vs {share_b:.0%} of {len(pairs)} (lr, seed) runs",
                                     "share", m=m, policy=variant))
    return rows


# ------------------------------------------------------------------------------------------- experiments
def variant_info(label: str) -> tuple[str, str]:
    return next((a, p) for v, a, p in VARIANTS if v == label)


def exp_time_to_target(ctx: Context) -> list[dict[str, Any]]:
    """Claims 1 and 2: the runs (hardware at m <= cores, simulated with gradients beyond)."""
    cfg = ctx.config
    records = []
    for seed in cfg.seed_list():
        for lr in cfg.hw_lrs:
            for label in cfg.variants:
                alg, tp = variant_info(label)
                records.append({**hardware_run(ctx, alg, 2, lr, seed, tp), "m": 2, "lr": lr, "seed": seed,
                                "variant": label})
    for m in cfg.sim_m:
        for seed in cfg.seed_list():
            for lr in cfg.sim_lrs:
                for label in cfg.variants:
                    alg, tp = variant_info(label)
                    engine = "hardware" if m <= ctx.cores else "simulated"
                    run = hardware_run(ctx, alg, m, lr, seed, tp) if engine == "hardware" else \
                        simulated_run(ctx, alg, m, lr, seed, tp)
                    records.append({**run, "m": m, "lr": lr, "seed": seed, "variant": label})
    return records


def exp_memory_contention(ctx: Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Claims 3 and 4: the timing-only sweep over m and T_p, plus hardware live vectors and peak RSS."""
    cfg = ctx.config
    sweep = [{**timing_run(ctx, m, tp, seed), "m": m, "persistence": tp, "seed": seed}
             for m in cfg.sweep_m for tp in ("inf", "1", "0") for seed in cfg.seed_list()]
    hardware = []
    if cfg.rss_updates:
        hardware = [rss_run(ctx, label, seed) for seed in cfg.seed_list()
                    for label in ("lock", "hogwild", "leashed-inf", "leashed-0")]
    return sweep, hardware


def rss_run(ctx: Context, label: str, seed: int) -> dict[str, Any]:
    """Peak RSS of one runtime run at m = 2 in its own process (paper_comparison.run_subprocess)."""
    from paper_comparison import run_subprocess

    from leashed.results import RunResult

    alg, tp = variant_info(label)
    folder = ctx.out / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"rss-{label}-s{seed}.npz"
    argv = ["train", "--algorithm", alg, "--threads", "2", "--model", "mlp", "--hidden",
            ",".join(map(str, ctx.config.rss_hidden)), "--updates", str(ctx.config.rss_updates),
            "--evaluations", "0", "--seed", str(seed), "--out", str(out), "--quiet"]
    if registry.algorithm(alg).has_persistence:
        argv += ["--persistence", tp]
    code, rss, wall = run_subprocess(argv, out.with_suffix(".log"), 300.0)
    row: dict[str, Any] = {"variant": label, "seed": seed, "rss_mib": rss if code == 0 else None,
                           "wall_s": wall}
    if out.exists():
        r = RunResult.load(out)
        live = np.asarray(r.samples.live_vectors, dtype=np.float64)
        row.update(live_mean=float(live.mean()) if len(live) else None,
                   live_max=r.extra.get("live_vectors_max", int(live.max()) if len(live) else None),
                   params=int(len(r.params)))
    return row


def memory_rows(sweep: Sequence[dict[str, Any]], hardware: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    base = registry.algorithm(BASELINES[0])
    for m in sorted({r["m"] for r in sweep}):
        copies = base.live_vectors(m)
        for tp in ("inf", "1", "0"):
            runs = [r for r in sweep if r["m"] == m and r["persistence"] == tp]
            label = f"leashed T_p = {tp}, m = {m}"
            means = [r["live_mean"] / copies for r in runs]
            maxes = [r["live_max"] / copies for r in runs]
            what = (f"live mean {np.mean([r['live_mean'] for r in runs]):.2f}, max "
                    f"{max(r['live_max'] for r in runs)} vs m + 1 = {copies}, 2m + 1 = {2 * m + 1}")
            rows.append(make_row("memory", LIVE_MEAN, "simulated", label, log_ratio_interval(means), what,
                                 "x", m=m, persistence=tp))
            rows.append(make_row("memory", LIVE_MAX, "simulated", label, log_ratio_interval(maxes), what,
                                 "x", m=m, persistence=tp))
            excess = float(max(r["live_max"] for r in runs) - (2 * m + 1))
            rows.append(make_row("memory", BOUND, "simulated", label, (excess, excess, excess, len(runs)),
                                 f"largest maximum {max(r['live_max'] for r in runs)} vs "
                                 f"2m + 1 = {2 * m + 1}",
                                 "vectors", m=m, persistence=tp))
    by = {(r["variant"], r["seed"]): r for r in hardware if r.get("rss_mib")}
    for label in ("leashed-inf", "leashed-0"):
        pairs = [(by[("lock", s)], r) for (v, s), r in by.items() if v == label and ("lock", s) in by]
        if pairs:
            ratios = [r["rss_mib"] / b["rss_mib"] for b, r in pairs]
            what = (f"peak RSS {np.mean([r['rss_mib'] for _, r in pairs]):.1f} vs lock "
                    f"{np.mean([b['rss_mib'] for b, _ in pairs]):.1f} MiB (data set included); live max "
                    f"{max(r.get('live_max') or 0 for _, r in pairs)} vectors of "
                    f"{pairs[0][1].get('params', 0):,} parameters")
            rows.append(make_row("memory", RSS, "hardware", f"{label} vs lock, m = 2",
                                 log_ratio_interval(ratios), what, "x", m=2))
    return rows


def contention_rows(sweep: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for m in sorted({r["m"] for r in sweep if r["m"] >= 16}):
        ref = {r["seed"]: r for r in sweep if r["m"] == m and r["persistence"] == "inf"}
        for tp in ("1", "0"):
            runs = [r for r in sweep if r["m"] == m and r["persistence"] == tp and r["seed"] in ref]
            ratios = [r["tau_mean"] / ref[r["seed"]]["tau_mean"] for r in runs]
            what = (f"E[τ] {np.mean([r['tau_mean'] for r in runs]):.2f} vs "
                    f"{np.mean([ref[r['seed']]['tau_mean'] for r in runs]):.2f} (T_p = ∞); CAS failures "
                    f"{np.mean([r['cas_failure_frac'] for r in runs]):.1%} vs "
                    f"{np.mean([ref[r['seed']]['cas_failure_frac'] for r in runs]):.1%}; dropped "
                    f"{np.mean([r['dropped_frac'] for r in runs]):.1%} of gradients")
            rows.append(make_row("contention", STALENESS, "simulated", f"T_p = {tp} vs ∞, m = {m}",
                                 log_ratio_interval(ratios), what, "x", m=m, persistence=tp))
    return rows


def normalised_table(ctx: Context, m: int) -> tuple[float, ...]:
    """The model-normalised step table at m: the best-AIC staleness model fitted to a calibrated
    timing-only run at the same m (seed 999, not one of the measured runs)."""
    from leashed.analysis.staleness import fit_all
    from leashed.analysis.steps import step_table

    run = timing_run(ctx, m, "inf", 999)
    best = fit_all(run["histogram"], "poisson,geometric,cmp")[0]
    return step_table("normalised", model=best)


def exp_adaptive(ctx: Context) -> list[dict[str, Any]]:
    cfg = ctx.config
    records = []
    for m in cfg.adaptive_m:
        table = normalised_table(ctx, m)
        for seed in cfg.seed_list():
            for lr in cfg.adaptive_lrs:
                for policy in POLICIES:
                    extra: dict[str, Any] = {"step_policy": policy}
                    if policy == "normalised":
                        extra["step_table"] = table
                    run = simulated_run(ctx, "leashed", m, lr, seed, "inf", updates=cfg.adaptive_updates,
                                        **extra) if m > ctx.cores else \
                        hardware_run(ctx, "leashed", m, lr, seed, "inf", **extra)
                    records.append({**run, "m": m, "lr": lr, "seed": seed, "policy": policy})
    return records


def adaptive_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    index = {(r["engine"], r["m"], r["policy"], r["lr"], r["seed"]): r for r in records}
    for engine, m in sorted({(r["engine"], r["m"]) for r in records}):
        for policy in POLICIES[1:]:
            pairs = [(index[(engine, m, "constant", lr, s)], r) for (e, mm, p, lr, s), r in index.items()
                     if (e, mm, p) == (engine, m, policy) and (engine, m, "constant", lr, s) in index]
            both = [(b["u_target"], r["u_target"]) for b, r in pairs
                    if b["u_target"] is not None and r["u_target"] is not None and r["u_target"] > 0]
            rows.append(make_row("adaptive_steps", POLICY_SPEEDUP, engine, f"{policy} vs constant, m = {m}",
                                 log_ratio_interval([b / r for b, r in both]),
                                 f"{len(both)} of {len(pairs)} (lr, seed) pairs both reached the target", "x",
                                 m=m, policy=policy))
    rows += reach_rows(records, "adaptive_steps", POLICY_REACH, ("constant",), key="policy")
    return rows


def exp_sparse(ctx: Context) -> list[dict[str, Any]]:
    cfg = ctx.config
    records = []
    by_label = {c[0]: c for c in SPARSE_CONFIGS}
    for m in cfg.sparse_m:
        lr = cfg.sparse_lr_m / m
        for seed in cfg.seed_list():
            for label in cfg.sparse_configs:
                _, sparsifier, memory = by_label[label]
                run = simulated_run(ctx, "leashed", m, lr, seed, "inf", sparsifier=sparsifier,
                                    error_memory=memory) if m > ctx.cores else \
                    hardware_run(ctx, "leashed", m, lr, seed, "inf", sparsifier=sparsifier,
                                 error_memory=memory)
                records.append({**run, "m": m, "lr": lr, "seed": seed, "config": label})
    return records


def sparse_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    index = {(r["m"], r["config"], r["seed"]): r for r in records}
    for m in sorted({r["m"] for r in records}):
        for label in [c for c in dict.fromkeys(r["config"] for r in records) if c != "dense"]:
            pairs = [(index[(m, "dense", s)], r) for (mm, c, s), r in index.items()
                     if (mm, c) == (m, label) and (m, "dense", s) in index]
            if not pairs:
                continue
            ratios = [r["tail_loss"] / b["tail_loss"] for b, r in pairs]
            what = (f"final loss {np.mean([r['tail_loss'] for _, r in pairs]):.3f} vs dense "
                    f"{np.mean([b['tail_loss'] for b, _ in pairs]):.3f} (mean of the last quarter of the "
                    f"evaluations), E[τ] {np.mean([r['tau_mean'] for _, r in pairs]):.1f}")
            engine = pairs[0][1]["engine"]
            rows.append(make_row("sparsification", SPARSE, engine, f"{label} vs dense, m = {m}",
                                 log_ratio_interval(ratios), what, "x", m=m))
    return rows


# ------------------------------------------------------------------------------------------- driver
@dataclass
class ClaimsResult:
    """Everything the page needs: rows, per-claim verdicts, the raw records and the run's facts."""

    config: ClaimsConfig
    rows: list[dict[str, Any]]
    records: dict[str, list[dict[str, Any]]]
    facts: dict[str, Any]

    def overall(self) -> dict[str, str]:
        return {c.key: aggregate([r["verdict"] for r in self.rows if r["claim"] == c.key and headline(c, r)])
                for c in CLAIMS}


def headline(c: Claim, row: dict[str, Any]) -> bool:
    """Whether ``row`` counts for claim ``c``'s overall verdict (:data:`AGGREGATION`)."""
    return not c.headline or row["statistic"] == c.headline or row.get("policy") == c.headline


def run_claims(config: ClaimsConfig, out: Path, progress: Callable[[str], None] | None = None,
               data: Any = None) -> ClaimsResult:
    """Run every experiment of ``config`` and return the rows with their verdicts."""
    say = progress or (lambda s: None)
    from leashed.models.datasets import load_dataset

    started = time.perf_counter()
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan,) * 3
    ctx = Context(config, Path(out), say, usable_cores())
    ctx.data = data if data is not None else load_dataset("mnist")
    records: dict[str, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    with _shared_datasets():
        for name, step in (("time to target + stability", _step_time), ("memory + contention", _step_memory),
                           ("adaptive steps", _step_adaptive), ("sparsification", _step_sparse)):
            t0 = time.perf_counter()
            say(f"claims: {name} ...")
            new_rows = step(ctx, records)
            rows += new_rows
            timings[name] = time.perf_counter() - t0
            counts = {v: sum(r["verdict"] == v for r in new_rows) for v in VERDICTS}
            say(f"claims: {name}: {len(new_rows)} rows ({', '.join(f'{n} {v}' for v, n in counts.items())}) "
                f"in {timings[name]:.0f} s")
    try:
        load_end = os.getloadavg()
    except OSError:
        load_end = (math.nan,) * 3
    import platform

    facts = {"run": config.name, "date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(),
             "cores": ctx.cores, "load_start": [round(v, 2) for v in load],
             "load_end": [round(v, 2) for v in load_end], "seconds": time.perf_counter() - started,
             "step_seconds": timings, "confidence": CONFIDENCE, "target": config.target, "notes": ctx.notes,
             "calibration": {alg: {"compute_mean_s": _mean_compute(rs)}
                             for alg, rs in ctx.calibration.items()}}
    return ClaimsResult(config, rows, records, facts)


def _mean_compute(results: Sequence[Any]) -> float:
    r = results[0]
    return float(np.mean(np.asarray(r.updates.t_grad) - np.asarray(r.updates.t_start)))


def _step_time(ctx: Context, records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    records["time_to_target"] = exp_time_to_target(ctx)
    return speedup_rows(records["time_to_target"]) + reach_rows(records["time_to_target"])


def _step_memory(ctx: Context, records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    sweep, hardware = exp_memory_contention(ctx)
    records["sweep"] = [{k: v for k, v in r.items() if k != "histogram"} for r in sweep]
    records["rss"] = hardware
    if not hardware:
        ctx.notes.append("peak RSS was not measured in this run (no subprocess runs)")
    return memory_rows(sweep, hardware) + contention_rows(sweep)


def _step_adaptive(ctx: Context, records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    records["adaptive_steps"] = exp_adaptive(ctx)
    return adaptive_rows(records["adaptive_steps"])


def _step_sparse(ctx: Context, records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    records["sparsification"] = exp_sparse(ctx)
    return sparse_rows(records["sparsification"])


def slowed(records: Sequence[dict[str, Any]], factor: float, variants: Sequence[str] | None = None
           ) -> list[dict[str, Any]]:
    """Claim 1's records with the leashed variants' times to target multiplied by ``factor`` (the
    contradiction check of tests/test_claims.py)."""
    out = []
    for r in records:
        if r["variant"] not in BASELINES and (variants is None or r["variant"] in variants) \
                and r.get("t_target") is not None:
            r = replace_dict(r, t_target=r["t_target"] * factor)
        out.append(r)
    return out


def replace_dict(d: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**d, **changes}


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/claims.py [--quick|--tiny] [--out DIR]``: the same as ``leashed claims``."""
    from leashed.claims import main as cli_main

    return cli_main(argv)


__all__ = ["CAVEATS", "CLAIMS", "ClaimsConfig", "ClaimsResult", "Rule", "aggregate", "log_ratio_interval",
           "quick_config", "run_claims", "slowed", "speedup_rows", "t_interval", "tiny_config", "verdict"]

if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "claims.py"))
