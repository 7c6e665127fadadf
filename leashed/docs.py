"""``leashed docs [TOPIC]``: print the Markdown documentation that the help texts and docstrings cite.

The files are the repository's ``docs/*.md``; they are installed with leashed as package data of
``leashed._docs`` (pyproject.toml's package-dir maps ``docs/`` there), so they can be read from a wheel
as well as from a checkout. ``leashed docs`` lists the topics; ``leashed docs simulator`` (or
``docs/simulator.md``, or ``simulator.md``) prints one.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from leashed.errors import LeashedError


def docs_dir() -> Path:
    """The folder holding the ``*.md`` docs: the installed ``leashed._docs``, else the checkout's docs/."""
    try:
        spec = importlib.util.find_spec("leashed._docs")
    except ImportError:
        spec = None
    candidates = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    candidates.append(Path(__file__).resolve().parent.parent / "docs")
    for folder in candidates:
        if any(folder.glob("*.md")):
            return folder
    raise LeashedError(f"the leashed docs are not installed (looked in {candidates[0]}): reinstall leashed")


def topics() -> dict[str, Path]:
    """Topic name (file name without ``.md``) -> path, sorted by name."""
    return {p.stem: p for p in sorted(docs_dir().glob("*.md"))}


def _first_line(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            return line.lstrip("# ").strip()
    return ""


def read_topic(topic: str) -> str:
    """The text of one doc; ``topic`` may be ``simulator``, ``simulator.md`` or ``docs/simulator.md``."""
    name = topic.removeprefix("docs/").removesuffix(".md")
    found = topics()
    if name not in found:
        raise LeashedError(f"no doc {topic!r}; topics: {', '.join(found)} (`leashed docs` lists them)")
    return found[name].read_text(encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", nargs="?", metavar="TOPIC",
                        help="a doc to print, e.g. simulator or docs/simulator.md (default: list them)")


def run(args: argparse.Namespace) -> int:
    if args.topic is None:
        found = topics()
        width = max(map(len, found), default=0)
        for name, path in found.items():
            print(f"{name:<{width}}  {_first_line(path)}")
        print(f"\n`leashed docs TOPIC` prints one (files in {docs_dir()})")
        return 0
    sys.stdout.write(read_topic(args.topic))
    return 0
