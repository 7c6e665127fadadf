"""docs/api.md's walkthrough runs as written; every Markdown file the code and docs cite exists."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

from conftest import ROOT

#: files whose text may cite docs: code, headers, docs, README
CITING = ("*.py", "*.pyx", "*.pxd", "*.pyi", "*.h", "*.md")
FOLDERS = ("leashed", "models", "runtime", "sim", "analysis", "benchmarks", "docs", "tests", ".ci")
#: ``NAME.md`` files the code writes (outputs, not citations)
WRITTEN = {"report.md", "index.md"}
_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)\b")


def api_blocks() -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8, "docs/api.md lost its walkthrough"
    return blocks


def test_api_walkthrough_runs(tmp_path):
    """Run the blocks in order in one interpreter, in an empty folder, as a reader would paste them."""
    script = "\n\n".join(api_blocks())
    for step in ("run(spec", ".save(", "RunResult.load(", "fit_result(", "step_table(", "from_result(",
                 "simulate(", "compare_pair(", "plot_training(", "build_report("):
        assert step in script, f"the walkthrough lost its {step} step"
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning:leashed", "-c", script],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error: a timing-only simulation needs the number of gradients: pass `updates=N`" in proc.stdout
    for name in ("leashed-m2.npz", "training.png", "staleness.png", "report/index.html"):
        assert (tmp_path / name).stat().st_size > 0, name


def cited_files() -> list[tuple[str, str]]:
    """(citing file, cited name) for every ``NAME.md`` / ``docs/NAME.md`` mention in the repository."""
    found = []
    for folder in FOLDERS:
        for pattern in CITING:
            for path in sorted((ROOT / folder).rglob(pattern)):
                if "__pycache__" in path.parts or path.name == "test_api_doc.py":
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
                found += [(str(path.relative_to(ROOT)), m) for m in _REF.findall(text)]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found += [("README.md", m) for m in _REF.findall(text)]
    return found


def _exists(citing: str, name: str) -> bool:
    if name == Path(citing).stem + ".md":  # a script's own output table (benchmarks/mpi_scaling.py ...)
        return True
    here = (ROOT / citing).parent
    return any(p.is_file() for p in (ROOT / name, ROOT / "docs" / name, here / name))


def test_every_cited_markdown_file_exists():
    refs = cited_files()
    assert any(name == "architecture.md" for _, name in refs), "the reference scan found nothing"
    missing = sorted({f"{citing}: {name}" for citing, name in refs
                      if name not in WRITTEN and not _exists(citing, name)})
    assert not missing, "cited Markdown files missing from the repository:\n" + "\n".join(missing)


def test_no_citation_outside_the_repository():
    bad = []
    for folder in FOLDERS:
        for pattern in CITING:
            for path in (ROOT / folder).rglob(pattern):
                if path.name == "test_api_doc.py" or "__pycache__" in path.parts:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
                if "shared/design" in text:
                    bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"cite docs/ in the repository, not the design folder: {bad}"


def test_deprecated_staleness_hist_still_works():
    from test_results import make_result

    result = make_result()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = result.staleness_hist()
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert old.tolist() == result.staleness_histogram.tolist()


def test_cli_translates_python_words():
    from leashed.cli import cli_words

    assert cli_words("pass `updates=N`") == "pass `--updates N`"
    assert cli_words("use `threads=1` or `error_memory=True`") == "use `--threads 1` or `--error-memory`"
    assert cli_words("K=5 and `mean=2ms` stay") == "K=5 and `mean=2ms` stay"


def test_leashed_docs_prints_every_doc_the_help_texts_cite():
    from conftest import run_cli

    listing = run_cli("docs")
    assert listing.returncode == 0, listing.stderr
    for doc in (ROOT / "docs").glob("*.md"):
        assert any(line.split()[0] == doc.stem for line in listing.stdout.splitlines() if line.strip())
    page = run_cli("docs", "docs/architecture.md")
    assert page.returncode == 0 and page.stdout == (ROOT / "docs" / "architecture.md").read_text()
    assert run_cli("docs", "nothing-like-this").returncode == 2
