"""``leashed inspect FILE [--json]``: summarise a results file (any engine), or a machine file of
``leashed calibrate`` (validated by :func:`leashed.machine.load_machine`, docs/machine.md)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from leashed.errors import ResultsFileError
from leashed.machine import FORMAT_NAME as MACHINE_FORMAT
from leashed.machine import LOADED_SHARE, expected_share, load_machine, machine_loaded, summary_lines
from leashed.results import RunResult

#: JSON files other leashed commands write: format name -> (what it is, the commands that read it)
OTHER_FORMATS = {
    "leashed-staleness-fit": ("a staleness fit file (written by `leashed fit --out`)",
                              "`leashed train --step-policy normalised --staleness-model FILE#N` reads it"),
    "leashed-comparison": ("a comparison file (written by `leashed compare --out`)",
                           "`python3 -m json.tool FILE` shows it"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="results file (.npz) written by leashed train or leashed simulate, or "
                        "a machine file (.json) written by leashed calibrate")
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
    lines += machine_lines(meta.get("machine"))
    width = max(len(k) for k in summary)
    lines += [f"  {key:<{width}}  {_fmt(value)}" for key, value in summary.items()]
    return "\n".join(lines)


def _nums(values: Any, fmt: str) -> str:
    if not isinstance(values, list):
        return "-"
    shown = ", ".join("-" if v is None else format(v, fmt) for v in values[:8])
    return shown + (f", ... ({len(values)})" if len(values) > 8 else "")


def machine_lines(machine: dict[str, Any] | None) -> list[str]:
    """The machine during a runtime run (docs/machine.md): cores, load, each thread's CPU share against
    the expected min(1, P/m), context switches, and "machine loaded" when the median share is below
    90 % of the expected one."""
    if not isinstance(machine, dict) or not machine:
        return []
    cores = machine.get("usable_cores")
    start, end = machine.get("loadavg_start"), machine.get("loadavg_end")
    load = f"{start[0]:.2f} -> {end[0]:.2f}" if start and end else "-"
    background = machine.get("background_load_cores")
    lines = [f"during the run: {cores} usable cores, load average {load}, background load "
             f"{'-' if background is None else format(background, '.2f')} cores"]
    shares = machine.get("thread_cpu_share")
    if isinstance(shares, list) and shares and isinstance(cores, int):
        loaded = machine_loaded(machine)
        lines.append(f"threads' CPU share {_nums(shares, '.2f')} (expected "
                     f"{expected_share(cores, len(shares)):.2f} each), "
                     f"CPU s {_nums(machine.get('thread_cpu_s'), '.3g')}")
        lines.append(f"context switches: involuntary {_nums(machine.get('involuntary_switches'), 'd')}, "
                     f"voluntary {_nums(machine.get('voluntary_switches'), 'd')}")
        if loaded:
            lines.append(f"machine loaded: the threads got less than {LOADED_SHARE:.0%} of their expected "
                         f"CPU share (mean); timings of this run are not those of a quiet machine")
    if machine.get("machine_file"):
        lines.append(f"machine file: {machine['machine_file']}")
    return lines


def _not_a_results_file(path: Path) -> None:
    """Raise a one-line error naming what ``path`` is when it is one of leashed's JSON files."""
    try:
        with open(path, "rb") as f:
            head = f.read(1).lstrip()
            if head != b"{":
                return
            data = json.loads(head + f.read())
    except (OSError, ValueError):
        return
    kind = OTHER_FORMATS.get(data.get("format")) if isinstance(data, dict) else None
    if kind is None and isinstance(data, dict) and "model" in data and "params" in data:
        kind = OTHER_FORMATS["leashed-staleness-fit"]
    if kind is not None:
        what, readers = kind
        raise ResultsFileError(f"{path} is {what}, not a results file (.npz of train or simulate): "
                               f"{readers.replace('FILE', str(path))}")


def _is_machine_file(path: Path) -> bool:
    """A JSON file of format leashed-machine, or a .json file that names it but does not parse (so that a
    truncated machine file is reported as one)."""
    try:
        text = path.read_bytes()
    except OSError:
        return False
    if not text.lstrip().startswith(b"{"):
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return path.suffix == ".json" and MACHINE_FORMAT.encode() in text
    return isinstance(data, dict) and data.get("format") == MACHINE_FORMAT


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if _is_machine_file(path):
        profile = load_machine(path)
        if args.json:
            print(json.dumps(profile.to_dict(), sort_keys=False))
        else:
            print(f"machine file {path} (format {MACHINE_FORMAT} {profile.format_version}, "
                  f"dim {profile.dim})")
            print("\n".join(f"  {line}" for line in summary_lines(profile)))
        return 0
    _not_a_results_file(path)
    result = RunResult.load(args.file)
    if args.json:
        summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                   for k, v in result.summary().items()}
        summary["machine_loaded"] = machine_loaded(result.metadata.get("machine"))
        summary["machine"] = result.metadata.get("machine")
        print(json.dumps(summary, sort_keys=False))
    else:
        print(describe(result))
    return 0
