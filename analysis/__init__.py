"""leashed.analysis: what the results files say (architecture.md, "One idea, three engines").

Reads only results files (:meth:`leashed.results.RunResult.load`), never engine internals.

* :mod:`~leashed.analysis.staleness` -- Poisson, geometric, Conway–Maxwell–Poisson, negative binomial and
  empirical staleness models; maximum-likelihood fits, AIC, χ² goodness of fit (papers.md §4).
* :mod:`~leashed.analysis.steps` -- step policies as lookup tables over τ, including the model-normalised
  (MindTheStep family) policy (papers.md §3).
* :mod:`~leashed.analysis.compare` -- predicted (simulator) against measured (runtime) results.
* :mod:`~leashed.analysis.plots` -- figures (matplotlib, Agg, PNG or SVG).
* :mod:`~leashed.analysis.report` -- one HTML page of a set of runs.
* ``fit_command``, ``compare_command``, ``report_command`` -- ``leashed fit | compare | report``.

Submodules are imported on demand so that ``import leashed.analysis`` stays cheap.
"""
