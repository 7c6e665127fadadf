"""``leashed claims`` (benchmarks/claims.py, analysis/claims_page.py; docs/claims.md): the verdict rules
on synthetic numbers, the statistics, a contradiction check (a slowed-down leashed turns the time-to-target
verdict around), and a tiny run end to end with the page's structure."""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, run_cli

sys.path.insert(0, str(ROOT / "benchmarks"))
import claims  # noqa: E402


# ------------------------------------------------------------------------------------------- rules
def test_verdict_rules_on_synthetic_intervals() -> None:
    speed = claims.SPEEDUP  # reproduced above 1.2, not reproduced at or below 1.0
    assert claims.verdict(speed, 1.3, 2.0) == claims.REPRODUCED
    assert claims.verdict(speed, 1.1, 2.0) == claims.INCONCLUSIVE  # touches the 20 % line
    assert claims.verdict(speed, 0.5, 0.99) == claims.NOT_REPRODUCED
    assert claims.verdict(speed, 0.5, 1.0) == claims.NOT_REPRODUCED
    assert claims.verdict(speed, 0.9, 1.5) == claims.INCONCLUSIVE
    assert claims.verdict(speed, None, None) == claims.INCONCLUSIVE
    sparse = claims.SPARSE  # "below": reproduced if the ratio's interval lies below 1.1
    assert claims.verdict(sparse, 0.95, 1.05) == claims.REPRODUCED
    assert claims.verdict(sparse, 1.12, 1.4) == claims.NOT_REPRODUCED
    assert claims.verdict(sparse, 1.0, 1.2) == claims.INCONCLUSIVE
    bound = claims.BOUND
    assert claims.verdict(bound, -3.0, -3.0) == claims.REPRODUCED
    assert claims.verdict(bound, 0.0, 0.0) == claims.REPRODUCED  # max = 2m + 1 exactly: within the bound
    assert claims.verdict(bound, 1.0, 1.0) == claims.NOT_REPRODUCED


def test_every_claim_states_its_rules_before_the_run() -> None:
    assert [c.number for c in claims.CLAIMS] == [1, 2, 3, 4, 5, 6]
    for c in claims.CLAIMS:
        assert c.quote and c.measured and c.rules
        for rule in c.rules:
            assert rule.direction in ("above", "below") and "reproduced" in rule.text
            # the thresholds are on the right side of each other: no interval is both verdicts
            assert (rule.reproduce >= rule.refute) if rule.direction == "above" else \
                (rule.reproduce <= rule.refute)


def test_aggregate() -> None:
    R, N, I = claims.REPRODUCED, claims.NOT_REPRODUCED, claims.INCONCLUSIVE
    assert claims.aggregate([R, R, I]) == R
    assert claims.aggregate([R, I, I]) == I  # fewer than half
    assert claims.aggregate([R, N]) == I  # mixed
    assert claims.aggregate([N, N, I, I]) == N
    assert claims.aggregate([]) == I


def test_intervals() -> None:
    mean, low, high, n = claims.t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(2, 0.95) = 2.920: half-width 2.920 / sqrt(3) = 1.686
    assert (mean, n) == (2.0, 3) and low == pytest.approx(2 - 1.6859, abs=1e-3)
    assert high == pytest.approx(2 + 1.6859, abs=1e-3)
    assert claims.t_interval([5.0])[1:3] == (None, None)
    est, low, high, _ = claims.log_ratio_interval([2.0, 2.0, 2.0])
    assert est == pytest.approx(2.0) and low == pytest.approx(2.0) and high == pytest.approx(2.0)
    est, low, high, _ = claims.log_ratio_interval([1.0, 4.0])
    assert est == pytest.approx(2.0) and low < 1.0 < 4.0 < high
    est, low, high, _ = claims.t_interval([1.0, math.inf])  # a diverged run: the upper side is infinite
    assert est == math.inf and high == math.inf and low == 1.0


# ------------------------------------------------------------------------------------------- contradiction
def _synthetic_records(leashed_time: float) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for lr in (0.1, 0.5):
        for seed in range(5):
            for variant, t in (("lock", 1.0), ("hogwild", 1.0), ("leashed-inf", leashed_time)):
                out.append({"engine": "simulated", "m": 8, "lr": lr, "seed": seed, "variant": variant,
                            "t_target": t * float(np.exp(rng.normal(0, 0.05))), "reached": True})
    return out


def test_slowed_leashed_turns_the_time_to_target_verdict() -> None:
    fast = _synthetic_records(0.5)  # leashed twice as fast: the claim holds
    rows = claims.speedup_rows(fast)
    assert {r["verdict"] for r in rows} == {claims.REPRODUCED}
    assert all(1.8 < r["estimate"] < 2.2 for r in rows)
    slow = claims.speedup_rows(claims.slowed(fast, 3.0))  # leashed at 1.5: slower than both baselines
    assert {r["verdict"] for r in slow} == {claims.NOT_REPRODUCED}
    same = claims.speedup_rows(_synthetic_records(0.9))  # 11 % faster: inside the paper's band's gap
    assert {r["verdict"] for r in same} == {claims.INCONCLUSIVE}


def test_stability_rule_needs_a_grid_that_probes_stability() -> None:
    recs = _synthetic_records(0.5)
    rows = claims.reach_rows(recs)  # everyone reached: the grid says nothing about stability
    assert {r["verdict"] for r in rows} == {claims.INCONCLUSIVE}
    for r in recs:  # the baselines fail at the large lr, leashed never does
        r["reached"] = r["variant"] == "leashed-inf" or r["lr"] == 0.1
    rows = claims.reach_rows(recs)
    assert {r["verdict"] for r in rows} == {claims.REPRODUCED}
    for r in recs:  # now leashed fails there instead
        r["reached"] = r["variant"] != "leashed-inf" or r["lr"] == 0.1
    assert {r["verdict"] for r in claims.reach_rows(recs)} == {claims.NOT_REPRODUCED}


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """``leashed claims --out DIR`` as docs/claims.md shows it, on the hidden tiny grid (seconds)."""
    out = tmp_path_factory.mktemp("claims") / "claims"
    proc = run_cli("claims", "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("index.html")
    return json.loads((out / "claims.json").read_text()), out, proc.stderr.splitlines()


@pytest.mark.slow  # the tiny run: about 15-30 s on 2 busy cores (MNIST conversion included)
def test_tiny_run_writes_every_row(tiny) -> None:
    data, out, lines = tiny
    assert sum(line.endswith(" ...") for line in lines) == 4  # one progress line per experiment
    assert "Traceback" not in "\n".join(lines)
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 6  # a figure per claim, embedded
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(f"{c.key}.png" for c in claims.CLAIMS)
    for c in claims.CLAIMS:
        assert f'id="{c.key}"' in page and c.title in page
        assert any(r["claim"] == c.key for r in data["rows"]), c.key
        for rule in c.rules:
            assert rule.statistic in page
    assert "hardware" in page and "simulated" in page
    summary = page.split("</table>")[0]
    assert len(re.findall(r'class="v-(reproduced|not|inconclusive)"', summary)) == len(claims.CLAIMS)
    assert set(data["overall"]) == {c.key for c in claims.CLAIMS}
    assert all(r["verdict"] in claims.VERDICTS for r in data["rows"])
    assert data["facts"]["run"] == "tiny"
    md = (out / "claims.md").read_text()
    assert all(f"\n## {c.number}. {c.title}: " in md for c in claims.CLAIMS) and "| comparison |" in md
    assert "## Limits of this evidence" in md and "Limits of this evidence" in page
    # the hardware rows are the machine's own threads, the larger m the simulator's
    engines = {(r["claim"], r["engine"]) for r in data["rows"]}
    assert ("time_to_target", "hardware") in engines and ("time_to_target", "simulated") in engines
    # the page can be drawn again from claims.json alone, with the same verdicts
    from leashed.analysis.claims_page import result_from_json, write_page

    again = result_from_json(out / "claims.json", claims)
    assert again.overall() == data["overall"]
    assert write_page(again, claims, out.parent / "again").read_text().count("data:image/png") == 6


@pytest.mark.slow
def test_tiny_run_verdict_follows_the_data(tiny) -> None:
    records = tiny[0]["records"]["time_to_target"]
    assert any(r["reached"] for r in records)  # the tiny grid reaches its target

    def hardware_verdicts(recs):
        return {r["verdict"] for r in claims.speedup_rows(recs)
                if r["engine"] == "hardware" and r["n"] >= 2}

    # real times (two seeds, so t(1) = 6.3 standard errors wide): scaled far enough to be decisive
    faster = hardware_verdicts(claims.slowed(records, 1e-5))
    slower = hardware_verdicts(claims.slowed(records, 1e5))
    assert faster == {claims.REPRODUCED} and slower == {claims.NOT_REPRODUCED}  # empty: nothing reached


def test_bad_out_is_one_line(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run_cli("claims", "--tiny", "--out", str(blocker / "sub")))
