"""Plot smoke tests and the HTML report."""

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
    links = re.findall(r'src="([^"]+)"', text)
    assert len(links) >= 10, links
    for link in links:
        assert_png(index.parent / link)
    on_disk = {str(p.relative_to(index.parent)) for p in (index.parent / "figures").iterdir()}
    assert on_disk == set(links)
    for needle in ("Summary", "Staleness", "Predicted (sim) against measured (runtime)", "Verdict",
                   "leashed m=4 Tp=inf", "AIC", "No staleness to fit"):
        assert needle in text, needle
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
