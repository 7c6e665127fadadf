"""How fast the SimPy simulator (``leashed simulate``, timing-only mode) runs on one core.

Measures, each the best of ``--repeat`` runs (the machine may be shared):

* committed updates per wall second with little contention (update time 1/1000 of the compute time;
  exponential compute, constant update) for ``leashed`` (T_p = inf; the default runtime attempt model,
  and the paper's, docs/simulator.md "Attempt models") and ``lock`` at m = 8 and m = 512, on the ideal
  machine (no machine model); targets >= 200,000/s at m = 8 and >= 100,000/s at m = 512; the same with
  the machine model on (m threads time-sharing 2 cores; no target: its cost is stated);
* simulated CAS attempts per wall second in saturation (update 1/10 of compute) for ``leashed`` at
  m = 512 with the paper's attempt model; target >= 500,000/s (the runtime model's rate is printed: its
  doomed attempts end early, so each commit reschedules up to m − 1 waiting threads);
* end to end as a user sees it: ``leashed simulate`` of 400,000 updates at m = 8 (little contention) in
  a child process, from process start to the file written; target >= 200,000 updates/s of wall time;
* one 1,000,000-update ``leashed`` simulation of 64 threads (exponential compute, update 1/100 of it),
  in a child process: wall time (target < 15 s) and the child's peak resident memory (target < 1 GB).

Times are those of ``run_simulation`` as a whole (SimPy loop and result assembly). The simulator runs on
one thread, so its CPU time is its wall time on an idle core; the targets are judged on CPU time, which
a busy (shared) machine does not inflate, and the wall-clock rate is printed beside it. Usage::

    python benchmarks/sim_speed.py            # about a minute
    python benchmarks/sim_speed.py --quick    # smaller runs, a few seconds (numbers less stable)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

from leashed.sim.simulate import run_simulation
from leashed.spec import ExperimentSpec

TARGETS = {"little contention, m=8": 200_000, "little contention, m=512": 100_000,
           "saturation attempts, m=512": 500_000, "1M updates m=64 wall s": 15.0,
           "1M updates m=64 peak MB": 1000.0, "leashed simulate 400k m=8": 200_000}


def _spec(algorithm: str, m: int, updates: int, compute: str, update: str,
          attempt_model: str = "runtime") -> ExperimentSpec:
    return ExperimentSpec(algorithm=algorithm, threads=m, updates=updates, model="counter", dataset="none",
                          compute_time=compute, update_time=update, seed=0,
                          extra={"attempt_model": attempt_model})


def _best(spec: ExperimentSpec, repeat: int) -> tuple[float, dict[str, float]]:
    """(best CPU seconds, info with the wall seconds of that run) over ``repeat`` runs."""
    best = float("inf")
    info: dict[str, float] = {}
    for _ in range(repeat):
        start, cpu0 = time.perf_counter(), time.process_time()
        sim = run_simulation(spec)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - start
        if cpu < best:
            best = cpu
            r = sim.result
            attempts = r.extra["cas_attempts"]
            info = {"applied": r.totals["updates_applied"], "attempts": attempts, "wall": wall,
                    "p": (r.totals["cas_failures"] / attempts) if attempts else 0.0, "events": sim.events}
    return best, info


def child_million() -> None:
    """The 1M-update run, in its own process so that its peak memory is its own."""
    spec = _spec("leashed", 64, 1_000_000, "exp:mean=1ms", "const:10us")
    start, cpu0 = time.perf_counter(), time.process_time()
    sim = run_simulation(spec)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak_mb,
                      "applied": sim.result.totals["updates_applied"], "events": sim.events}))


def _end_to_end(updates: int, repeat: int) -> tuple[str, str, float, float | None, str]:
    """``leashed simulate`` in a child process, process start to file written (best wall of ``repeat``)."""
    import tempfile

    best = None
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "leashed", "simulate", "--algorithm", "leashed",
                            "--threads", "8", "--compute-time", "exp:mean=1ms", "--update-time", "const:1us",
                            "--updates", str(updates), "--quiet", "--out", os.path.join(tmp, "s.npz")],
                           check=True)
            wall = time.perf_counter() - start
            best = wall if best is None else min(best, wall)
    assert best is not None
    return ("leashed simulate 400k m=8", "leashed", updates / best, TARGETS["leashed simulate 400k m=8"],
            f"updates per wall second, process start to file written ({best:.2f} s; {updates:,} updates)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a few seconds)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    parser.add_argument("--child-million", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_million:
        child_million()
        return 0
    scale = 10 if args.quick else 1
    rows: list[tuple[str, str, float, float | None, str]] = []
    print(f"simulator speed on one core (best of {args.repeat}, rates per CPU second); load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    for algorithm, model in (("leashed", "runtime"), ("leashed", "paper"), ("lock", "runtime")):
        for m, n in ((8, 200_000), (512, 200_000)):
            spec = _spec(algorithm, m, n // scale, "exp:mean=1ms", "const:1us", model)
            cpu, info = _best(spec, args.repeat)
            name = algorithm + ("" if algorithm != "leashed" else f" ({model})")
            rows.append((f"little contention, m={m}", name, info["applied"] / cpu,
                         TARGETS[f"little contention, m={m}"],
                         f"updates/s (wall {info['applied'] / info['wall']:,.0f}/s; p={info['p']:.3f}, "
                         f"{info['events'] / cpu:,.0f} events/s)"))
    for m in (8, 64):
        spec = _spec("leashed", m, 100_000 // scale, "exp:mean=1ms", "const:1us")
        spec = spec.replace(extra={**spec.extra, "machine": {"cores": 2, "time_slice_s": 3e-3}})
        cpu, info = _best(spec, args.repeat)
        rows.append((f"machine model on, m={m}", "leashed", info["applied"] / cpu, None,
                     f"updates/s on 2 simulated cores (wall {info['applied'] / info['wall']:,.0f}/s)"))
    for model in ("paper", "runtime"):
        spec = _spec("leashed", 512, 2_000 // scale, "exp:mean=1ms", "const:100us", model)
        cpu, info = _best(spec, args.repeat)
        rows.append(("saturation attempts, m=512", f"leashed ({model})", info["attempts"] / cpu,
                     TARGETS["saturation attempts, m=512"] if model == "paper" else None,
                     f"CAS attempts/s (wall {info['attempts'] / info['wall']:,.0f}/s; p={info['p']:.3f}, "
                     f"{info['applied'] / cpu:,.0f} updates/s)"))
    rows.append(_end_to_end(400_000 // scale, args.repeat))
    if not args.quick:
        proc = subprocess.run([sys.executable, __file__, "--child-million"], capture_output=True, text=True,
                              check=True)
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(("1M updates m=64 wall s", "leashed", child["cpu"], TARGETS["1M updates m=64 wall s"],
                     f"CPU s (wall {child['wall']:.1f} s; {child['applied']:,} applied, "
                     f"{child['events']:,} events)"))
        rows.append(("1M updates m=64 peak MB", "leashed", child["peak_mb"],
                     TARGETS["1M updates m=64 peak MB"], "MB peak RSS of the child process"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(width)}  {'algorithm':17}  {'value':>12}  {'target':>10}  ok   unit")
    ok_all = True
    for name, algorithm, value, target, unit in rows:
        lower_is_better = name.endswith(("wall s", "peak MB"))
        ok = target is None or (value < target if lower_is_better else value >= target)
        ok_all &= ok
        target_text = "-" if target is None else \
            (f"<{target:,.0f}" if lower_is_better else f">={target:,.0f}")
        verdict = "yes" if ok else "NO"
        print(f"{name.ljust(width)}  {algorithm:17}  {value:12,.1f}  {target_text:>10}  {verdict:4} {unit}")
    print("all targets met" if ok_all else "some targets missed")
    return 0


if __name__ == "__main__":
    from _common import script_main

    sys.exit(script_main(main, "sim_speed.py"))
