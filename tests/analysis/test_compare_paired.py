"""`leashed compare --paired`: differences judged over prediction/measurement pairs (docs/analysis.md).

The case it is for: the machine's speed drifts between pairs (each pair's members share it). Unpaired,
that drift sits in both sides' between-replicate variance and no verdict can agree; paired, it cancels.
Checked: the jackknife by hand, the interval's coverage and false-alarm rate under drift (synthetic
totals, 2,000 trials), and on simulations of one model at drifting speeds: agree paired (inconclusive
unpaired), differ against a 1.5x slower machine, and the CLI's refusals.
"""

import json
import math

import numpy as np
import pytest

from leashed.analysis import compare as C
from leashed.analysis import equivalence as E
from leashed.sim.simulate import simulate
from leashed.spec import ExperimentSpec

from conftest import run_cli

LOG_X = C.ESTIMATORS["throughput"]


def _units(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return E.Units(rows, np.arange(len(rows)), batches=len(rows))


def test_paired_jackknife_by_hand():
    # pair totals [commits, seconds]: X = 100, 200, 400 on the measured side, 5 % more on the predicted
    meas = [[100, 1.0], [200, 1.0], [400, 1.0]]
    pred = [[105, 1.0], [210, 1.0], [420, 1.0]]
    d = E.paired_difference(_units(pred), _units(meas), LOG_X, 0.90)
    assert d.value == pytest.approx(math.log(1.05))
    assert d.se == pytest.approx(0.0, abs=1e-12) and d.df == 2  # the drift cancels exactly
    # a pair that misses by 20 %: delete-one-pair values by hand
    pred[1] = [240, 1.0]
    d = E.paired_difference(_units(pred), _units(meas), LOG_X, 0.90)
    vals = []
    for k in range(3):
        p = sum(r[0] for i, r in enumerate(pred) if i != k)
        m = sum(r[0] for i, r in enumerate(meas) if i != k)
        vals.append(math.log(p / m))
    var = 2 / 3 * sum((v - sum(vals) / 3) ** 2 for v in vals)
    assert d.se == pytest.approx(math.sqrt(var), rel=1e-12)
    half = 2.919986 * d.se  # t(0.95, df 2)
    assert (d.low, d.high) == pytest.approx((d.value - half, d.value + half), rel=1e-5)
    with pytest.raises(ValueError):
        E.paired_difference(_units(pred), _units(meas[:2]), LOG_X, 0.90)
    assert E.paired_difference(_units(pred[:1]), _units(meas[:1]), LOG_X, 0.90).low is None


def test_paired_interval_covers_and_rarely_differs_under_drift():
    """2,000 trials of 8 pairs: speeds drift ×e^N(0, 0.25) between pairs, each run adds 4 % noise. True
    ratio 1: the 90 % paired interval covers it in ~90 % of trials, `differ` ≤ 5 %, and it is narrow
    enough to agree mostly; unpaired (Welch over replicates) it almost never agrees."""
    rng = np.random.default_rng(7)
    covered = differ = agree = agree_unpaired = 0
    trials, n = 2000, 8
    tol = (-math.log(1.1), math.log(1.1))
    for _ in range(trials):
        speed = 1000 * np.exp(rng.normal(0, 0.25, n))
        pred = np.column_stack([speed * np.exp(rng.normal(0, 0.04, n)), np.ones(n)])
        meas = np.column_stack([speed * np.exp(rng.normal(0, 0.04, n)), np.ones(n)])
        d = E.paired_difference(_units(pred), _units(meas), LOG_X, 0.90)
        covered += d.low <= 0.0 <= d.high
        verdict = E.equivalence(d.low, d.high, *tol)
        differ += verdict == E.DIFFER
        agree += verdict == E.AGREE
        a, b = (E.Estimate.make(*E.jackknife(_units(x), LOG_X), 0.90) for x in (pred, meas))
        u = E.difference(a, b, 0.90)
        agree_unpaired += E.equivalence(u.low, u.high, *tol) == E.AGREE
    print(f"paired: covered {covered / trials:.3f}, differ {differ / trials:.3f}, agree {agree / trials:.3f};"
          f" unpaired agree {agree_unpaired / trials:.3f}")
    assert 0.86 <= covered / trials <= 0.94  # nominal 0.90, ±3 sd of 2,000 trials
    assert differ / trials <= 0.05
    assert agree / trials >= 0.6
    assert agree_unpaired / trials <= 0.05


def _spec(mean_ms, seed, n=1200):
    return ExperimentSpec(algorithm="leashed", threads=4, model="counter", dataset="none", updates=n,
                          compute_time=f"gamma:mean={mean_ms:.4g}ms,cv=0.3", update_time="const:40us",
                          seed=seed)


def _drifting_pairs(slower=1.0, n_pairs=6):
    """Pairs of one model at speeds that drift ±30 % between pairs; ``slower`` stretches the measured side."""
    rng = np.random.default_rng(11)
    preds, meas = [], []
    for k, factor in enumerate(np.exp(rng.uniform(-0.3, 0.3, n_pairs))):
        pred = simulate(_spec(factor, 10 + k))
        preds.append(pred.replace(extra={**pred.extra, "calibrated": True}))
        meas.append(simulate(_spec(factor * slower, 50 + k)).replace(source="runtime"))
    return preds, meas


def test_paired_simulations_agree_where_unpaired_cannot_and_see_a_slower_machine(tmp_path):
    preds, meas = _drifting_pairs()
    paired = C.compare_pair(preds, meas, paired=True)
    unpaired = C.compare_pair(preds, meas)
    x, xu = paired.quantities["throughput"], unpaired.quantities["throughput"]
    assert paired.paired == 6 and unpaired.paired == 0 and x.difference.df == 5
    assert x.verdict == "agree", x.describe()
    assert xu.verdict == "inconclusive", xu.describe()
    assert (x.difference.high - x.difference.low) < 0.3 * (xu.difference.high - xu.difference.low)
    assert paired.quantities["cas_failure"].verdict != "differ"
    tv = paired.quantities["staleness_tv"]
    assert tv.verdict == "agree" and "over 6 pairs" in tv.note, tv.describe()
    assert paired.verdict != "differ", paired.detail()
    # the same pairs against a machine 1.5x slower
    preds, slow = _drifting_pairs(slower=1.5)
    flagged = C.compare_pair(preds, slow, paired=True).quantities["throughput"]
    assert flagged.verdict == "differ" and flagged.difference.low > 1.1, flagged.describe()
    # the pairing is by order: shuffling the measured side breaks it and widens the interval
    shuffled = C.compare_pair(preds, [slow[k] for k in (3, 5, 0, 4, 1, 2)], paired=True)
    d = shuffled.quantities["throughput"].difference
    assert (d.high - d.low) > 2 * (flagged.difference.high - flagged.difference.low)


def test_cli_paired(tmp_path):
    preds, meas = _drifting_pairs(n_pairs=3)
    pf = [p.save(tmp_path / f"pred{k}.npz") for k, p in enumerate(preds)]
    mf = [m.save(tmp_path / f"run{k}.npz") for k, m in enumerate(meas)]
    proc = run_cli("compare", "--paired", *map(str, pf), *map(str, mf), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "paired (intervals of the differences over prediction/measurement pairs): leashed m=4 Tp=inf " \
        "3 pairs" in proc.stdout, proc.stdout
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert data["pairs"][0]["paired"] == 3
    assert data["pairs"][0]["quantities"]["throughput"]["difference"]["df"] == 2
    assert data["pairs"][0]["predicted_files"] == list(map(str, pf))
    # unequal counts, or a single pair: one error line, exit 2, nothing written
    for files in ([*pf, *mf[:2]], [pf[0], mf[0]]):
        out = tmp_path / "bad"
        proc = run_cli("compare", "--paired", *map(str, files), "--out", str(out))
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert proc.stderr.startswith("leashed: error: --paired needs as many predictions as measured runs")
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


# ------------------------------------------------------- the trimmed mean of pair ratios (>= 10 pairs)
def test_paired_trimmed_mean_by_hand():
    ratios = [1.00, 0.98, 1.03, 1.01, 0.99, 1.02, 0.60, 0.97, 1.04, 1.00]  # one pair 0.6x: a slow host
    meas = [[1000.0, 1.0] for _ in ratios]
    pred = [[1000.0 * r, 1.0] for r in ratios]
    d = E.paired_trimmed_mean(_units(pred), _units(meas), LOG_X, 0.90)
    logs = np.sort(np.log(ratios))
    kept = logs[2:8]  # floor(0.2 * 10) = 2 set aside at each end: the 0.6 pair is one of them
    assert d.value == pytest.approx(float(kept.mean()))
    w = np.clip(logs, logs[2], logs[7])  # winsorized: the two at each end replaced by the nearest kept
    se = math.sqrt(((w - w.mean()) ** 2).sum() / (6 * 5))
    assert d.se == pytest.approx(se) and d.df == 5
    half = 2.015048 * se  # t(0.95, df 5)
    assert (d.low, d.high) == pytest.approx((d.value - half, d.value + half), rel=1e-6)
    # the pooled ratio would carry the 0.6 pair by its size
    pooled = E.paired_difference(_units(pred), _units(meas), LOG_X, 0.90)
    assert pooled.value < d.value - 0.03
    assert E.paired_trimmed_mean(_units(pred[:1]), _units(meas[:1]), LOG_X, 0.90).low is None
    with pytest.raises(ValueError):
        E.paired_trimmed_mean(_units(pred), _units(meas[:3]), LOG_X, 0.90)


def _pairs(rng, n, slower=1.0, slow_meas=0.15, slow_pred=0.05):
    """n pairs: speeds drift ×e^N(0, 0.25) between pairs, 5.5 % noise per run (the spread of the pair ratios
    of quiet 2-core-VM rounds, from their interquartile range); a measured run meets a slow host (×U(0.55,
    0.80), as 2–6 of 40 did on that VM) with probability ``slow_meas``, a calibration with ``slow_pred``."""
    speed = 1000 * np.exp(rng.normal(0, 0.25, n))

    def slowed(p):
        return np.where(rng.random(n) < p, rng.uniform(0.55, 0.80, n), 1.0)

    pred = np.column_stack([speed * slowed(slow_pred) * np.exp(rng.normal(0, 0.055, n)), np.ones(n)])
    meas = np.column_stack([speed * slowed(slow_meas) / slower * np.exp(rng.normal(0, 0.055, n)), np.ones(n)])
    return pred, meas


def test_paired_trimmed_mean_false_alarms_and_power_under_slow_host_runs():
    """1,000 trials each of 10, 20 and 40 pairs. Clean pairs: the interval covers the true ratio in about
    its nominal 90 %. With slow-host runs mixed in, true typical ratio 1: `differ` <= 5 % and, at 20 and 40
    pairs, `agree` far more often than the pooled ratio; a 1.5x slower machine: `differ` >= 90 %."""
    rng = np.random.default_rng(3)
    tol = (-math.log(1.1), math.log(1.1))
    trials = 1000
    rates = {}
    for n in (10, 20, 40):
        covered = differ = agree = agree_pooled = flagged = 0
        for _ in range(trials):
            pred, meas = _pairs(rng, n, slow_meas=0.0, slow_pred=0.0)
            d = E.paired_trimmed_mean(_units(pred), _units(meas), LOG_X, 0.90)
            covered += d.low <= 0.0 <= d.high
            pred, meas = _pairs(rng, n)
            d = E.paired_trimmed_mean(_units(pred), _units(meas), LOG_X, 0.90)
            v = E.equivalence(d.low, d.high, *tol)
            differ += v == E.DIFFER
            agree += v == E.AGREE
            p = E.paired_difference(_units(pred), _units(meas), LOG_X, 0.90)
            agree_pooled += E.equivalence(p.low, p.high, *tol) == E.AGREE
            pred, meas = _pairs(rng, n, slower=1.5)
            d = E.paired_trimmed_mean(_units(pred), _units(meas), LOG_X, 0.90)
            flagged += E.equivalence(d.low, d.high, *tol) == E.DIFFER
        rates[n] = tuple(x / trials for x in (covered, differ, agree, agree_pooled, flagged))
    print("(clean coverage, differ, agree, pooled agree, power 1.5x):",
          {n: tuple(round(x, 3) for x in r) for n, r in rates.items()})
    for n, (covered, differ, _agree, _agree_pooled, power) in rates.items():
        assert 0.86 <= covered <= 0.94 and differ <= 0.05 and power >= 0.90, (n, rates[n])
    for n in (20, 40):
        assert rates[n][2] >= 0.7 and rates[n][2] > rates[n][3] + 0.2, (n, rates[n])


def test_compare_judges_ten_or_more_pairs_on_the_trimmed_mean(tmp_path):
    preds, meas = _drifting_pairs(n_pairs=12)
    x = C.compare_pair(preds, meas, paired=True).quantities["throughput"]
    assert x.statistic == "trimmed" and x.pooled is not None and x.difference.df == 12 - 2 * 2 - 1
    assert x.verdict == "agree" and "20 % trimmed mean of 12 pair ratios" in x.note, x.describe()
    assert "trimmed pair ratio" in x.describe(), x.describe()
    preds, slow = _drifting_pairs(slower=1.5, n_pairs=12)
    flagged = C.compare_pair(preds, slow, paired=True).quantities["throughput"]
    assert flagged.statistic == "trimmed" and flagged.verdict == "differ", flagged.describe()
    # fewer pairs than Criteria.trimmed_pairs: the pooled ratio
    few = C.compare_pair(preds[:6], slow[:6], paired=True).quantities["throughput"]
    assert few.statistic == "pooled" and few.pooled is None
    pf = [p.save(tmp_path / f"pred{k}.npz") for k, p in enumerate(preds)]
    mf = [m.save(tmp_path / f"run{k}.npz") for k, m in enumerate(slow)]
    proc = run_cli("compare", "--paired", *map(str, pf), *map(str, mf), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "12 pairs (throughput: 20 % trimmed mean of pair ratios)" in proc.stdout, proc.stdout
    q = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["pairs"][0]["quantities"]["throughput"]
    assert q["statistic"] == "trimmed" and q["verdict"] == "differ"
    assert q["pooled"]["interval"][0] is not None and q["difference"]["df"] == 7


def test_report_shows_a_paired_comparison_and_the_comparisons_it_is_given(tmp_path):
    """`leashed report --paired` judges the k-th prediction against the k-th measured run (as `compare
    --paired`); build_report's ``comparisons`` (the demo's held-out rounds) get their own section, with
    the trimmed throughput statistic named, before the report's own comparison."""
    from leashed.analysis.report import build_report

    preds, meas = _drifting_pairs(n_pairs=10)
    pf = [p.save(tmp_path / f"pred{k}.npz") for k, p in enumerate(preds[:3])]
    mf = [m.save(tmp_path / f"run{k}.npz") for k, m in enumerate(meas[:3])]
    for flag, note in (["--paired"], "leashed m=4 Tp=inf: 3 pairs"), ([], None):
        out = tmp_path / f"report{len(flag)}"
        proc = run_cli("report", *flag, *map(str, pf), *map(str, mf), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        text = (out / "index.html").read_text()
        assert "Predicted (sim) against measured (runtime)" in text
        if note:
            assert note in text
        else:
            assert "pairs)" not in text.split("Predicted (sim)")[1].split("Verdict")[0]
            assert "3 pairs" not in text
    given = C.compare_results([*preds, *meas], paired=True)
    index = build_report(meas[:1], tmp_path / "given", comparisons=[("Held-out rounds", given)])
    text = index.read_text()
    section = text.split("<h2>Held-out rounds</h2>")[1]
    assert "leashed m=4 Tp=inf: 10 pairs" in section and "(trimmed; pooled" in section
    assert f"Verdict: {given.verdict}" in section
    assert "Predicted (sim) against measured (runtime)" not in text  # one runtime file: nothing of its own
    assert (tmp_path / "given" / "figures" / "compare1_staleness_pairs.png").stat().st_size > 1000
