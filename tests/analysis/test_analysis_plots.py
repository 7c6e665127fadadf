"""Plot smoke tests and the HTML report."""

import base64
import dataclasses
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
from analysis_synth import make_run

from leashed.analysis import plots
from leashed.analysis.report import build_report
from leashed.analysis.staleness import fit_result
from leashed.errors import LeashedError


def assert_png(path, min_w=400, min_h=250):
    image = mpimg.imread(str(path))
    assert image.ndim == 3 and image.shape[1] >= min_w and image.shape[0] >= min_h, image.shape
    assert float(image[..., :3].var()) > 0, f"{path} is blank"
    return image


@pytest.fixture(scope="module")
def runs():
    out = [make_run(threads=m, seed=m) for m in (2, 4, 8)]
    out.append(make_run(threads=4, seed=7, source="sim"))
    return out


def test_plot_training_png_and_svg(tmp_path, runs):
    path = plots.plot_training(runs, tmp_path / "train.png")
    image = assert_png(path, 1000, 400)
    assert image.shape[1] > image.shape[0]  # two panels side by side
    svg = plots.plot_training(runs[0], tmp_path / "train.svg").read_text()
    assert "<svg" in svg and "leashed m=2" in svg  # the spec label is in the legend
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_plot_training_skips_nan_samples(tmp_path):
    run = make_run(threads=2)
    nan = dataclasses.replace(run.samples, loss=np.full(len(run.samples), np.nan))
    assert_png(plots.plot_training([run.replace(samples=nan), run], tmp_path / "nan.png"))
    assert_png(plots.plot_training(run.replace(samples=nan), tmp_path / "allnan.png"))


def test_every_other_plot(tmp_path, runs):
    seq = make_run(np.zeros(200, int), algorithm="seq", threads=1, wall=4.0)
    assert_png(plots.plot_staleness(runs, tmp_path / "s.png", fits=[fit_result(r) for r in runs]))
    assert_png(plots.plot_staleness(np.array([3, 5, 9, 4]), tmp_path / "h.png"))
    assert_png(plots.plot_throughput([*runs, seq], tmp_path / "x.png"))
    assert_png(plots.plot_attempts(runs, tmp_path / "a.png"))
    assert_png(plots.plot_live_vectors(runs, tmp_path / "l.png"))
    assert_png(plots.plot_vs_threads({"lock predicted [sim]": ([2, 4, 8], [1, 3, 7]),
                                      "lock measured [runtime]": ([2, 4, 8], [1.1, 2.9, None])},
                                     tmp_path / "v.png", ylabel="mean staleness", title="t",
                                     reference=("m − 1", lambda m: m - 1)))
    with pytest.raises(LeashedError, match=".png or .svg"):
        plots.plot_training(runs, tmp_path / "x.pdf")


def test_report_links_every_figure_and_every_link_exists(tmp_path, runs):
    paired = [*runs, make_run(threads=2, seed=11, source="sim"),
              make_run(np.zeros(100, int), algorithm="seq", threads=1)]
    index = build_report(paired, tmp_path / "report", files=[f"r{i}.npz" for i in range(len(paired))])
    assert index == tmp_path / "report" / "index.html"
    text = index.read_text()
    # every figure is embedded (one file that can be mailed) and is the PNG written beside it
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"[^>]*data-file="([^"]+)"', text)
    assert len(embedded) >= 6, len(embedded)
    for data, rel in embedded:
        assert base64.b64decode(data) == (index.parent / rel).read_bytes(), rel
        assert_png(index.parent / rel)
    links = [rel for _, rel in embedded]
    on_disk = {str(p.relative_to(index.parent)) for p in (index.parent / "figures").iterdir()}
    assert on_disk == set(links)
    for needle in ("Summary", "Details", "Staleness", "Predicted (sim) against measured (runtime)", "Verdict",
                   "leashed m=4 Tp=inf", "AIC", "No staleness to fit"):
        assert needle in text, needle
    # the first table: one row per run, the columns a reader wants first, in this order
    glance = re.search(r'<table class="glance">(.*?)</table>', text, re.S).group(1)
    heads = re.findall(r"<th>([^<]*)</th>", glance)
    assert heads == ["run", "source", "algorithm", "m", "updates/s", "final loss", "test accuracy", "mean τ",
                     "CAS failures", "live vectors max"], heads
    assert glance.count("<tr>") == 1 + len(paired)
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")
    # rewriting replaces the folder as a whole; a foreign folder is refused
    build_report(runs[:1], tmp_path / "report")
    assert len(list((tmp_path / "report" / "figures").iterdir())) < len(on_disk)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(LeashedError, match="not written by leashed"):
        build_report(runs, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_staleness_panels_end_at_the_995th_percentile_and_say_what_is_left_out(tmp_path):
    hist = np.zeros(271)
    hist[:4] = [6000, 2500, 1000, 480]
    hist[10] = 15
    hist[270] = 5  # a long, thin tail: 0.05 % of the updates
    k_hi, tail, tau_max = plots.staleness_clip(hist)
    assert 3 <= k_hi < 10 and tau_max == 270
    assert tail == pytest.approx(20 / hist.sum())
    svg = plots.plot_staleness(hist, tmp_path / "s.svg").read_text()
    assert f"not shown: τ &gt; {k_hi}" in svg or f"not shown: τ > {k_hi}" in svg


def test_speedup_has_one_linear_line_and_names_each_baseline_once(tmp_path):
    runs = [make_run(threads=m, seed=m, wall=2.0 / m) for m in (2, 4, 8)]
    runs.append(make_run(np.zeros(4000, int), algorithm="seq", threads=1, wall=3.0))
    svg = plots.plot_throughput(runs, tmp_path / "x.svg").read_text()
    assert svg.count("<!-- linear speedup -->") == 1, re.findall(r"<!-- ([^>]*linear[^>]*) -->", svg)
    assert "<!-- leashed [runtime] over seq m=1 -->" in svg
    assert "seq, seq" not in svg and "baseline: " not in svg


def test_cpu_names_are_short_and_titles_wrap():
    assert plots.short_cpu("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz") == "Intel Xeon Platinum 8375C"
    assert plots.short_cpu("AMD EPYC 7B13 64-Core Processor") == "AMD EPYC 7B13"
    lines = plots.wrap_title("word " * 60, 7.5).splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= 7.5 * 9


def test_fit_table_says_in_words_when_every_model_is_rejected():
    from types import SimpleNamespace

    from leashed.analysis.report import _fit_sentences

    rejected = [SimpleNamespace(model=m, chi2_p=p) for m, p in (("negbin", 0.0), ("poisson", 1e-30))]
    mixed = [SimpleNamespace(model="negbin", chi2_p=0.4), SimpleNamespace(model="poisson", chi2_p=0.0)]
    one, two = _fit_sentences([(None, "a", rejected), (None, "b", mixed)])
    assert "all models rejected at α = 0.01" in one
    assert "rejected: poisson" in two and "all models rejected" not in two
    assert "not rejected at α = 0.01: negbin" in two
