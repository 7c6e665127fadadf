"""The algorithm registry: one entry per algorithm, the one place that knows an algorithm's traits.

Every engine (runtime, simulator, reference twin, MPI backend) and every analysis asks this module what an
algorithm is -- "does it have a persistence bound?", "can it lose updates?", "how many parameter vectors
are live?" -- instead of testing its name. The engines' implementations are named here as dotted paths
(``module:attribute``) and resolved lazily, so importing the registry imports no engine; a test resolves
every path (:func:`check_registry`), so a missing piece fails loudly instead of silently defaulting.

The algorithms come from docs/papers.md: §2 (SEQ, SYNC, LOCK, HOGWILD!), §2.1 (Leashed-SGD); ``seqlock``
(docs/seqlock.md) was added through this registry alone, as the proof that one entry is enough.

Adding an algorithm: add an :class:`Algorithm` entry to ``_ENTRIES`` with its traits and the paths of its
implementations, then write those implementations; help texts and the docs table are generated from the
entries (:func:`help_text`, :func:`markdown_table`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ALGORITHMS", "Algorithm", "algorithm", "asynchronous_names", "check_registry", "codes", "entries",
           "help_text", "markdown_table", "mpi_names", "multi_thread_names", "names", "or_list"]

#: how live parameter vectors are counted: a constant function of m, or measured from the recycling pool
LIVE_CONSTANT = "constant"
LIVE_POOL = "pool"


@dataclass(frozen=True)
class Algorithm:
    """One algorithm's name, traits and implementations (module docstring)."""

    #: the name used on the command line and in results files
    name: str
    #: its integer code in the runtime's worker loops (``leashed.runtime._workers.ALGORITHM_CODES``)
    code: int
    #: one line for help texts
    summary: str
    #: where it is described (a section of docs/papers.md, or its own docs page)
    paper: str
    #: runs on exactly one thread (True) or on any number m >= 1 (False)
    single_thread: bool = False
    #: the sequential baseline that speedups are measured against (papers.md §6.1, T5)
    speedup_baseline: bool = False
    #: AsyncSGD: each worker commits its own gradient without waiting for the others (papers.md §2)
    asynchronous: bool = False
    #: has the persistence bound T_p (drop a gradient after T_p + 1 failed attempts; papers.md §2.1)
    has_persistence: bool = False
    #: commits by compare-and-swap, so "CAS failures" are meaningful
    has_cas: bool = False
    #: keeps its parameter vectors in the recycling pool (live vectors measured, bound 2m + 1)
    uses_pool: bool = False
    #: live vectors of a run with m threads when not measured from the pool (LIVE_CONSTANT)
    live_vectors_constant: Callable[[int], int] | None = None
    #: every applied update is applied to a consistent vector: the counter model ends exact (no lost updates)
    consistent: bool = True
    #: racing stores may lose updates (HOGWILD!, papers.md §6 T9)
    can_lose_updates: bool = False
    #: a private copy of θ is read before the gradient (lock, hogwild): with a sparsifier, the copy stays
    #: dense, so the dense share of an update is the copy fraction (papers.md §5); else 0
    dense_copy: bool = False
    #: the simulator's commit instant of an update is the end of its gradient (the version counter's
    #: fetch-and-add, hogwild) rather than the end of its update
    commits_at_gradient_end: bool = False
    #: E[τ] = m − 1 exactly (papers.md §6 T1: hogwild; leashed with T_p = ∞)
    staleness_identity: bool = False
    #: reads a consistent snapshot without a lock, retried while a writer overlaps it (seqlock): the runtime
    #: records the end of the successful snapshot as ``t_attempt``, so calibration measures the copy
    #: (t_attempt − t_start, per try) and the gradient (t_grad − t_attempt) apart
    snapshot_reads: bool = False
    #: a sync round is one version (all m gradients of a round produce it)
    versions_are_rounds: bool = False
    #: the MPI backend runs it (``leashed train --backend mpi``)
    mpi: bool = False
    #: implementations, ``module:attribute``; ``runtime_loop`` names the constant that
    #: ``leashed.runtime._workers`` dispatches to the algorithm's worker loop (it must equal ``code``)
    runtime_loop: str = ""
    sim_worker: str = ""
    reference: str = ""

    def live_vectors(self, m: int) -> int | None:
        """Live vectors with m threads when they are a constant of the algorithm; None if measured."""
        return None if self.live_vectors_constant is None else int(self.live_vectors_constant(m))

    def has_persistence_bound(self, persistence: float) -> bool:
        """Whether a run of this algorithm with bound ``persistence`` can drop gradients."""
        return self.has_persistence and persistence != float("inf")

    @property
    def zero_staleness(self) -> bool:
        """Whether every τ is 0 by construction: a non-asynchronous algorithm (sync's gradients read the
        round's θ and make its version; seq runs one thread), papers.md §2."""
        return not self.asynchronous

    def identity_holds(self, persistence: float) -> bool:
        """Whether E[τ] = m − 1 holds by construction for this algorithm and bound (T1)."""
        return self.staleness_identity and not self.has_persistence_bound(persistence)

    def label(self, persistence_label: str) -> str:
        """``leashed Tp=inf``, ``lock``: the name, with the bound where the algorithm has one."""
        return f"{self.name} Tp={persistence_label}" if self.has_persistence else self.name

    def resolve(self, piece: str) -> Any:
        """The implementation named by field ``piece`` (``runtime_loop``, ``sim_worker``, ``reference``)."""
        path = getattr(self, piece)
        if not path:
            raise LookupError(f"algorithm {self.name!r} has no {piece}")
        module, _, attr = path.partition(":")
        return getattr(importlib.import_module(module), attr)


_ENTRIES = (
    Algorithm("seq", 0, "sequential SGD on one thread (the baseline)", "§2", single_thread=True,
              speedup_baseline=True, live_vectors_constant=lambda m: 1,
              runtime_loop="leashed.runtime._workers:LOOP_SEQ", sim_worker="leashed.sim.processes:seq_worker",
              reference="leashed.runtime.reference:_seq"),
    Algorithm("sync", 1, "synchronous SGD: m gradients per round, barrier, mean step", "§2",
              live_vectors_constant=lambda m: 1, versions_are_rounds=True,
              runtime_loop="leashed.runtime._workers:LOOP_SYNC",
              sim_worker="leashed.sim.processes:sync_worker", reference="leashed.runtime.reference:_sync"),
    Algorithm("lock", 2, "lock-based AsyncSGD: read and apply under one mutex", "§2",
              asynchronous=True, live_vectors_constant=lambda m: m + 1, dense_copy=True, mpi=True,
              runtime_loop="leashed.runtime._workers:LOOP_LOCK",
              sim_worker="leashed.sim.processes:lock_worker", reference="leashed.runtime.reference:_lock"),
    Algorithm("hogwild", 3, "HOGWILD!: lock-free racy reads and element-wise updates", "§2",
              asynchronous=True, live_vectors_constant=lambda m: m + 1, consistent=False,
              can_lose_updates=True, dense_copy=True, commits_at_gradient_end=True, staleness_identity=True,
              mpi=True,
              runtime_loop="leashed.runtime._workers:LOOP_HOGWILD",
              sim_worker="leashed.sim.processes:hogwild_worker",
              reference="leashed.runtime.reference:_hogwild"),
    Algorithm("leashed", 4, "Leashed-SGD: lock-free, consistent, CAS-published vectors, persistence bound",
              "§2.1", asynchronous=True, has_persistence=True, has_cas=True, uses_pool=True, dense_copy=True,
              staleness_identity=True, mpi=True,
              runtime_loop="leashed.runtime._workers:LOOP_LEASHED",
              sim_worker="leashed.sim.processes:leashed_worker",
              reference="leashed.runtime.reference:_leashed"),
    Algorithm("seqlock", 5, "seqlock AsyncSGD: consistent snapshots without a lock, applies in place under a "
              "spin lock", "docs/seqlock.md", asynchronous=True, live_vectors_constant=lambda m: m + 1,
              dense_copy=True, snapshot_reads=True,
              runtime_loop="leashed.runtime._workers:LOOP_SEQLOCK",
              sim_worker="leashed.sim.processes:seqlock_worker",
              reference="leashed.runtime.reference:_seqlock"),
)

_BY_NAME = {a.name: a for a in _ENTRIES}
#: algorithm names in code order
ALGORITHMS: tuple[str, ...] = tuple(a.name for a in sorted(_ENTRIES, key=lambda a: a.code))
assert [a.code for a in sorted(_ENTRIES, key=lambda a: a.code)] == list(range(len(_ENTRIES))), \
    "algorithm codes must be 0..n-1"


def names() -> tuple[str, ...]:
    """The algorithm names in code order."""
    return ALGORITHMS


def entries() -> tuple[Algorithm, ...]:
    """Every entry, in code order."""
    return tuple(_BY_NAME[n] for n in ALGORITHMS)


def codes() -> dict[str, int]:
    """``{name: code}``: the codes of the runtime's worker loops (``_workers.ALGORITHM_CODES``)."""
    return {n: _BY_NAME[n].code for n in ALGORITHMS}


def asynchronous_names() -> tuple[str, ...]:
    """The AsyncSGD algorithms (each worker commits on its own), in code order."""
    return tuple(n for n in ALGORITHMS if _BY_NAME[n].asynchronous)


def mpi_names() -> tuple[str, ...]:
    """The algorithms the MPI backend runs, in code order."""
    return tuple(n for n in ALGORITHMS if _BY_NAME[n].mpi)


def multi_thread_names() -> tuple[str, ...]:
    """The algorithms that run on any number of threads (for the hint of a wrong ``--threads``)."""
    return tuple(n for n in ALGORITHMS if not _BY_NAME[n].single_thread)


def or_list(items: tuple[str, ...] | list[str]) -> str:
    """``a, b or c``: a list for an error message or a help text."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def algorithm(name: str) -> Algorithm:
    """The entry of ``name``; KeyError (with the known names) for an unknown one."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None


def help_text() -> str:
    """One line per algorithm, for ``--algorithm`` help."""
    return "; ".join(f"{a.name}: {a.summary}" for a in entries())


def markdown_table() -> str:
    """The docs table of algorithms and traits (docs/algorithms.md is generated from it)."""
    head = ("algorithm", "paper", "threads", "persistence T_p", "CAS", "live vectors", "consistent",
            "MPI", "what it is")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in entries():
        live = "pool (≤ 2m + 1)" if a.uses_pool else (
            "1" if a.live_vectors(7) == 1 else "m + 1" if a.live_vectors(7) == 8 else str(a.live_vectors(7)))
        rows.append("| " + " | ".join((
            f"`{a.name}`", a.paper, "1" if a.single_thread else "m ≥ 1", "yes" if a.has_persistence else "—",
            "yes" if a.has_cas else "—", live, "yes" if a.consistent else "no (may lose updates)",
            "yes" if a.mpi else "—", a.summary)) + " |")
    return "\n".join(rows)


def check_registry() -> list[str]:
    """Problems with the registry, [] when all is well: every implementation path must resolve, each
    ``runtime_loop`` constant must be the entry's code, and the runtime's code table must be the
    registry's (imports the engines: a test calls it, the registry's import does not)."""
    problems = []
    for a in _ENTRIES:
        for piece in ("runtime_loop", "sim_worker", "reference"):
            try:
                target = a.resolve(piece)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                problems.append(f"{a.name}.{piece} = {getattr(a, piece)!r}: {type(exc).__name__}: {exc}")
                continue
            if piece == "runtime_loop" and target != a.code:
                problems.append(f"{a.name}.runtime_loop = {a.runtime_loop!r} is loop code {target!r}, "
                                f"not the registry's code {a.code}")
            elif piece != "runtime_loop" and not callable(target):
                problems.append(f"{a.name}.{piece} = {getattr(a, piece)!r} is not callable")
    try:
        runtime_codes = importlib.import_module("leashed.runtime._workers").ALGORITHM_CODES
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        problems.append(f"leashed.runtime._workers.ALGORITHM_CODES: {type(exc).__name__}: {exc}")
    else:
        if dict(runtime_codes) != codes():
            problems.append(f"runtime codes {dict(runtime_codes)} differ from the registry's {codes()}")
    return problems
