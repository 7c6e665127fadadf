"""``leashed inspect FILE [--json]``: summarise a results file (any engine)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from leashed.results import RunResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="results file (.npz) written by leashed train or leashed simulate")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}"
    if isinstance(value, list):
        head = ", ".join(str(v) for v in value[:12])
        return f"[{head}{', ...' if len(value) > 12 else ''}] ({len(value)} bins)"
    return str(value)


def describe(result: RunResult) -> str:
    """A human summary: the spec, then every key of the JSON summary."""
    summary = result.summary()
    meta = result.metadata
    lines = [f"{result.spec.label()}  ({result.source}, model {result.spec.model}, "
             f"dataset {result.spec.dataset})"]
    if meta:
        lines.append(f"machine: {meta.get('cpu_model')} ({meta.get('cpu_cores')} cores), "
                     f"git {meta.get('git_revision') or '-'}, started {meta.get('start_time')}")
    width = max(len(k) for k in summary)
    lines += [f"  {key:<{width}}  {_fmt(value)}" for key, value in summary.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = RunResult.load(args.file)
    if args.json:
        summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                   for k, v in result.summary().items()}
        print(json.dumps(summary, sort_keys=False))
    else:
        print(describe(result))
    return 0
