"""The comparison's error rates, measured on the simulator: false alarms, power, small samples, replicates.

Data: pairs of simulations (docs/simulator.md), one side relabelled as the measurement. Same model, two
seeds: the verdict must rarely be ``differ`` (≤ 5 %); a 1.5x slower machine or a ~2x CAS-failure
difference must be flagged ``differ`` in ≥ 90 % of pairs (docs/analysis.md, "Verdict").
"""

import json

import numpy as np
import pytest

from leashed.analysis import compare as C
from leashed.analysis import equivalence as E
from leashed.sim.simulate import simulate
from leashed.spec import ExperimentSpec

from conftest import run_cli

LAWS = ("gamma:mean=1ms,cv=0.3", "exp:mean=1ms", "lognormal:mean=1ms,cv=0.5")


def spec(algorithm="leashed", m=4, law=LAWS[0], update="const:50us", n=3000, seed=0, **kw):
    return ExperimentSpec(algorithm=algorithm, threads=m, model="counter", dataset="none", updates=n,
                          compute_time=law, update_time=update, seed=seed, **kw)


def measured(s):
    return simulate(s).replace(source="runtime")


def test_false_alarm_rate_of_same_model_pairs():
    """54 pairs (3 laws × m ∈ {2, 4, 8} × lock/hogwild/leashed × 2): differ ≤ 5 %, intervals cover."""
    verdicts, covered, judged = [], 0, 0
    i = 0
    for law in LAWS:
        for m in (2, 4, 8):
            for alg in ("leashed", "lock", "hogwild"):
                for _ in range(2):
                    i += 1
                    s = spec(alg, m, law, seed=100 * i)
                    pair = C.compare_pair(simulate(s), measured(s.replace(seed=100 * i + 1)), calibrated=True)
                    verdicts.append(pair.verdict)
                    for name, target in (("throughput", 1.0), ("cas_failure", 0.0)):
                        d = pair.quantities[name].difference if name in pair.quantities else None
                        if d is not None and d.low is not None:
                            judged += 1
                            covered += d.low <= target <= d.high
    rate = verdicts.count("differ") / len(verdicts)
    print(f"false-alarm rate {rate:.3f} over {len(verdicts)} pairs; verdicts "
          f"{ {v: verdicts.count(v) for v in set(verdicts)} }; 90% intervals covered {covered}/{judged}")
    assert len(verdicts) >= 50
    assert rate <= 0.05
    assert verdicts.count("agree") >= 0.6 * len(verdicts)  # the test is not merely timid
    # the batch intervals respect autocorrelation: nominal 90 %, allow sampling error (±2.5 sd)
    assert covered / judged >= 0.80


def test_power_against_a_slower_machine_and_more_cas_failures():
    """1.5x slower timing: throughput differs; update time 50 → 110 µs (~2x CAS failures): CAS differs."""
    x_verdicts, cas_verdicts, ratios = [], [], []
    i = 0
    for law in LAWS:
        for m in (2, 4, 8):
            for _ in range(2):
                i += 1
                s = spec("leashed", m, law, n=2000, seed=1000 + i)
                pred = simulate(s)
                slow = measured(s.replace(seed=5000 + i, compute_time=law.replace("mean=1ms", "mean=1.5ms"),
                                          update_time="const:75us"))
                pair = C.compare_pair(pred, slow, calibrated=True)
                x_verdicts.append(pair.quantities["throughput"].verdict)
                if m == 2:  # p ≈ 0.035: a doubling stays inside the 0.03 floor of the tolerance by design
                    continue
                more = measured(s.replace(seed=7000 + i, update_time="const:110us"))
                q = C.compare_pair(pred, more, calibrated=True).quantities["cas_failure"]
                ratios.append(q.measured.value / q.predicted.value)
                cas_verdicts.append(q.verdict)
    x_power = x_verdicts.count("differ") / len(x_verdicts)
    cas_power = cas_verdicts.count("differ") / len(cas_verdicts)
    print(f"power: throughput 1.5x {x_power:.2f} of {len(x_verdicts)}; CAS ~2x (ratios "
          f"{min(ratios):.2f}-{max(ratios):.2f}) {cas_power:.2f} of {len(cas_verdicts)}")
    assert 1.6 <= np.mean(ratios) <= 2.5
    assert x_power >= 0.9 and cas_power >= 0.9


def test_tiny_samples_are_inconclusive_not_differ():
    s = spec("lock", 4, n=150)
    slow = measured(s.replace(seed=9, compute_time="gamma:mean=1.5ms,cv=0.3"))
    pair = C.compare_pair(simulate(s), slow, calibrated=True)
    assert pair.verdict == "inconclusive", pair.detail()
    assert all(q.verdict == "inconclusive" for q in pair.quantities.values())
    assert "too few updates" in pair.quantities["throughput"].note


def test_identity_is_reported_not_judged():
    for alg, tp, identity in (("hogwild", "inf", True), ("leashed", "inf", True), ("leashed", "0", False),
                              ("lock", "inf", False)):
        s = spec(alg, 4, n=1500, persistence=tp)
        pair = C.compare_pair(simulate(s), measured(s.replace(seed=3)), calibrated=True)
        assert (pair.quantities["staleness_mean"].verdict == "identity") == identity, (alg, tp)
        assert ("cas_failure" in pair.quantities) == (alg == "leashed")
        assert pair.quantities["dispersion"].verdict != "identity"
    # one thread: every τ is 0, so mean and dispersion are both identities (any algorithm)
    for alg in ("lock", "leashed"):
        s = spec(alg, 1, n=600, persistence="0" if alg == "leashed" else "inf")
        pair = C.compare_pair(simulate(s), measured(s.replace(seed=3)), calibrated=True)
        q = pair.quantities
        assert q["staleness_mean"].verdict == q["dispersion"].verdict == "identity"
        assert pair.verdict != "inconclusive" or pair.quantities["throughput"].verdict == "inconclusive"
    # sync at m > 1: τ ≡ 0 by construction (Algorithm.zero_staleness); the dispersion of two
    # all-zero samples is no judgement (it read "inconclusive" and made every sync comparison so)
    for alg in ("sync",):
        s = spec(alg, 4, n=800)
        pair = C.compare_pair(simulate(s), measured(s.replace(seed=3)), calibrated=True)
        q = pair.quantities
        assert q["staleness_mean"].verdict == q["dispersion"].verdict == "identity", alg
        assert pair.verdict == q["throughput"].verdict, (alg, pair.detail())


def _with_replicates(s, seeds):
    """A simulator result with per-seed summaries in extra["replicates"] (as `leashed simulate` writes)."""
    reps = []
    for seed in seeds:
        r = simulate(s.replace(seed=seed))
        summary = r.summary()
        reps.append({"seed": seed, "updates_per_s": summary["updates_per_s"],
                     "cas_failure_fraction": C.cas_failure_fraction(r),
                     "staleness_mean": summary["staleness_mean"],
                     "staleness_var": summary["staleness_var"], "staleness_hist": summary["staleness_hist"]})
    main = simulate(s.replace(seed=seeds[0]))
    return main.replace(extra={**main.extra, "replicates": reps, "calibrated": True})


def test_simulator_replicates_inside_one_file(tmp_path):
    s = spec("leashed", 4, n=1500)
    pred = _with_replicates(s, [1, 2, 3, 4, 5, 6])
    pred = type(pred).load(pred.save(tmp_path / "pred.npz"))  # extra survives the file
    pair = C.compare_pair(pred, measured(s.replace(seed=50)))
    assert pair.replicates == (6, 1) and pair.calibrated
    assert pair.quantities["throughput"].predicted.df == 5  # between-replicate: 6 seeds − 1
    assert pair.verdict in ("agree", "inconclusive") and pair.verdict != "differ", pair.detail()
    slow = measured(s.replace(seed=51, compute_time="gamma:mean=1.5ms,cv=0.3", update_time="const:75us"))
    assert C.compare_pair(pred, slow).quantities["throughput"].verdict == "differ"


def test_replicates_that_resample_the_calibration_runs_keep_their_whole_spread():
    """Replicates that each replay a resample of the calibration runs estimate the prediction's own
    spread: its variance is the between-replicate variance × (1 + 1/R), so the standard error of the
    predicted side is √(R + 1) times that of plain seed replicates (which average their noise away)."""
    s = spec("leashed", 4, n=1500)
    plain = _with_replicates(s, [1, 2, 3, 4, 5])
    resampled = plain.replace(extra={**plain.extra, "replicates_resample_calibration": True})
    real = measured(s.replace(seed=50))
    a = C.compare_pair(plain, real).quantities
    b = C.compare_pair(resampled, real).quantities
    for name in ("throughput", "cas_failure"):
        assert b[name].predicted.se == pytest.approx(a[name].predicted.se * np.sqrt(6), rel=1e-9)
        assert b[name].predicted.df == a[name].predicted.df == 4
    assert b["throughput"].predicted.value == a["throughput"].predicted.value


def test_replicate_files_carry_their_spread():
    """Three runtime files whose speeds differ by ±20 %: between-replicate variance widens the interval."""
    s = spec("lock", 4, n=2000)
    runs = [measured(s.replace(seed=60 + k, compute_time=f"gamma:mean={t}ms,cv=0.3"))
            for k, t in enumerate((0.8, 1.0, 1.25))]
    one = C.compare_pair(simulate(s), runs[1], calibrated=True).quantities["throughput"]
    three = C.compare_pair(simulate(s), runs, calibrated=True).quantities["throughput"]
    assert three.measured.df == 2 and one.measured.df >= 9
    assert (three.difference.high - three.difference.low) > 3 * (one.difference.high - one.difference.low)


def test_batches_merge_when_autocorrelated_and_verdict_rules():
    rng = np.random.default_rng(0)
    white = rng.normal(size=(3000, 1))
    ar = np.zeros((3000, 1))
    for k in range(1, 3000):  # AR(1), correlation time ~ 300 updates: 30 batches of 100 are too short
        ar[k] = 0.997 * ar[k - 1] + rng.normal()
    mean = lambda s: s[:, 0]  # noqa: E731
    assert len(E.make_batches(white, mean)) == 30
    assert len(E.make_batches(ar, mean)) < 30
    assert E.make_batches(white[:150], mean) is None  # < 10 batches of 20
    assert E.equivalence(-0.05, 0.05, -0.1, 0.1) == "agree"
    assert E.equivalence(0.15, 0.3, -0.1, 0.1) == "differ"
    assert E.equivalence(0.05, 0.3, -0.1, 0.1) == "inconclusive"
    assert E.equivalence(None, None, -0.1, 0.1) == "inconclusive"
    assert E.overall(["agree", "identity", "not judged"]) == "agree"
    assert E.overall(["agree", "inconclusive"]) == "inconclusive"
    assert E.overall(["inconclusive", "differ"]) == "differ"


def test_cli_strict_exit_status(tmp_path):
    s = spec("leashed", 4, n=3000)
    pred = simulate(s)
    pred = pred.replace(extra={**pred.extra, "calibrated_from": "run.npz"})
    files = [pred.save(tmp_path / "pred.npz"), measured(s.replace(seed=2)).save(tmp_path / "same.npz")]
    proc = run_cli("compare", *map(str, files), "--strict", "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: agree (1 pair)" in proc.stdout
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert data["format_version"] == 2 and data["verdict"] == "agree"
    slow = measured(s.replace(seed=3, compute_time="gamma:mean=1.5ms,cv=0.3")).save(tmp_path / "slow.npz")
    proc = run_cli("compare", str(files[0]), str(slow), "--strict")
    assert proc.returncode == 1 and "verdict: differ" in proc.stdout
    proc = run_cli("compare", str(files[0]), str(slow))
    assert proc.returncode == 0  # without --strict a verdict is not an error


def test_a_dispersion_that_rests_on_a_few_stalls_is_not_judged():
    """Var τ dominated by a handful of long stalls: n_eff ≈ the stalls, and the dispersion is
    inconclusive whatever the batches say; a spread-out distribution is judged."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from analysis_synth import make_run

    assert C.effective_tail_count([0, 1000]) == float("inf")  # no spread
    one = np.zeros(51)
    one[1], one[50] = 999, 1
    assert 1.0 <= C.effective_tail_count(one) < 1.2  # one stall carries the variance
    rng = np.random.default_rng(3)
    spread = np.bincount(rng.poisson(3, 4000))
    assert C.effective_tail_count(spread) > 1000  # Poisson: about a third of the updates, weighted
    base = rng.poisson(1.0, 4000)
    stalled = base.copy()
    stalled[[500, 1700, 3100]] = 60  # three stalls: D jumps from ~1 to ~3.7
    a = make_run(base, threads=2, source="sim", seed=1, extra={"calibrated": True})
    b = make_run(stalled, threads=2, seed=2)
    q = C.compare_pair(a, b).quantities["dispersion"]
    n_eff = C.effective_tail_count(b.staleness_histogram)
    assert 3 <= n_eff < 10  # the three stalls, and a little of the Poisson spread
    assert q.verdict == "inconclusive" and f"rests on {n_eff:.0f} updates" in q.note, q.note
    assert q.describe().endswith(f"inconclusive ({q.note})")  # the table says why
    loose = C.compare_pair(a, b, criteria=C.Criteria(min_effective=2)).quantities["dispersion"]
    assert loose.note == "" and loose.difference.low is not None  # below the guard: the interval decides
    same = C.compare_pair(a, make_run(rng.poisson(1.0, 4000), threads=2, seed=4)).quantities["dispersion"]
    assert same.verdict == "agree" and same.note == "", same.describe()
