"""The report of a few tiny real runs, rendered by headless Chromium at 1,400 and 1,200 px (docs/analysis.md).

From the DOM: the page and every table fit their width (scrollWidth <= clientWidth: nothing hidden behind
a sideways scroll), the first table shows final loss and test accuracy inside the window, and every
embedded figure loads (naturalWidth > 0). Needs the Debian package ``chromium`` (or ``LEASHED_CHROMIUM``
naming a Chrome/Chromium binary) and MNIST; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow  # about 15-30 s on 2 cores: three tiny runs, two simulations, the report

#: writes the measurements into the DOM once the page (and its data-URI images) have loaded
MEASURE_JS = """
window.addEventListener('load', function () {
  var out = {width: window.innerWidth, page_scroll: document.documentElement.scrollWidth, tables: [],
             images: [], glance: {}};
  document.querySelectorAll('table').forEach(function (t, i) {
    var box = t.parentElement;
    out.tables.push({i: i, head: t.rows[0] ? t.rows[0].innerText.slice(0, 60) : '', scroll: box.scrollWidth,
                     client: box.clientWidth, own_scroll: t.scrollWidth, own_client: t.clientWidth});
  });
  var first = document.querySelector('table.glance');
  if (first) first.querySelectorAll('th').forEach(function (th) {
    out.glance[th.innerText] = Math.round(th.getBoundingClientRect().right);
  });
  document.querySelectorAll('img').forEach(function (im, i) {
    out.images.push({i: i, complete: im.complete, natural: im.naturalWidth,
                     inline: im.getAttribute('src').indexOf('data:image/png;base64,') === 0});
  });
  var pre = document.createElement('pre');
  pre.id = 'leashed-measure';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def chromium() -> str | None:
    """The Chromium binary: ``LEASHED_CHROMIUM``, else chromium / chromium-browser / google-chrome."""
    named = os.environ.get("LEASHED_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).exists() else None)
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browser_args(width: int, height: int) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
            f"--window-size={width},{height}", "--virtual-time-budget=15000"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    binary = chromium()
    if binary is None:
        pytest.skip("headless Chromium not found: apt-get install -y chromium (or set LEASHED_CHROMIUM)")
    from leashed.errors import LeashedError
    from leashed.models.datasets import load_dataset

    try:
        data = load_dataset("mnist", dim=None, seed=0)
    except LeashedError as exc:
        pytest.skip(f"MNIST not available: {exc}")
    from leashed.analysis.report import build_report
    from leashed.results import RunResult
    from leashed.runtime.run import run
    from leashed.spec import ExperimentSpec

    out = tmp_path_factory.mktemp("report-browser")
    files = []
    for algorithm, m in (("seq", 1), ("leashed", 2), ("hogwild", 2)):
        spec = ExperimentSpec(algorithm=algorithm, threads=m, model="mlp", hidden=(16,), updates=300,
                              evaluations=5)
        files.append(run(spec, dataset=data, progress=False).save(out / f"{algorithm}-m{m}.npz"))
    for m in (2, 4):
        path = out / f"sim-m{m}.npz"
        proc = run_cli("simulate", "--calibrate-from", str(files[1]), "--threads", str(m), "--out", str(path))
        assert proc.returncode == 0, proc.stderr
        files.append(path)
    # a paired comparison given to the report, as the demo gives its held-out rounds
    second = out / "sim-m2-seed1.npz"
    proc = run_cli("simulate", "--calibrate-from", str(files[1]), "--threads", "2", "--seed", "1", "--out",
                   str(second))
    assert proc.returncode == 0, proc.stderr
    from leashed.analysis.compare import compare_results

    rounds = [RunResult.load(p) for p in (files[3], second, files[1], files[1])]
    given = compare_results(rounds, ["sim-m2.npz", second.name, files[1].name, files[1].name], paired=True)
    index = build_report([RunResult.load(p) for p in files], out / "report", files=[p.name for p in files],
                         comparisons=[("Held-out rounds", given)])
    assert "<h2>Held-out rounds</h2>" in index.read_text()
    return binary, index


def measure(binary: str, index: Path, width: int) -> dict:
    """Render a copy of ``index`` with :data:`MEASURE_JS` added and read the measurements from the DOM."""
    page = index.with_name(f"measure-{width}.html")
    text = index.read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", f"<script>{MEASURE_JS}</script></body>"), encoding="utf-8")
    proc = subprocess.run([binary, *_browser_args(width, 900), "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="leashed-measure">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no measurements in the DOM (chromium rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.mark.parametrize("width", [1400, 1200])
def test_report_fits_the_window_and_every_figure_loads(report, width):
    binary, index = report
    m = measure(binary, index, width)
    assert m["width"] == width, m["width"]
    assert m["page_scroll"] <= width, f"the page scrolls sideways: {m['page_scroll']} > {width}"
    assert len(m["tables"]) >= 4, m["tables"]
    for t in m["tables"]:
        assert t["scroll"] <= t["client"], f"table overflows its container at {width} px: {t}"
        assert t["own_scroll"] <= t["own_client"] + 1, f"table content overflows at {width} px: {t}"
    for column in ("algorithm", "m", "updates/s", "final loss", "test accuracy", "mean τ", "CAS failures",
                   "live vectors max"):
        assert column in m["glance"], (column, m["glance"])
        assert m["glance"][column] <= width, f"{column!r} is outside the window: {m['glance']}"
    figures = sorted((index.parent / "figures").glob("*.png"))
    assert len(m["images"]) == len(figures) >= 5, (m["images"], figures)
    for image in m["images"]:
        assert image["complete"] and image["natural"] > 0, f"figure {image['i']} did not load: {image}"
        assert image["inline"], "figures must be data URIs: index.html is one file"


def test_report_screenshot_is_written(report, tmp_path):
    """The page renders to a 1,400 px screenshot (for a person to look at; kept in the pytest temp dir)."""
    binary, index = report
    shot = tmp_path / "report-1400.png"
    subprocess.run([binary, *_browser_args(1400, 2400), f"--screenshot={shot}", index.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 50_000
