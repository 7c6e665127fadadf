"""What a spec trains on, the same for every engine (runtime, reference twin, MPI backend, simulator).

The rules both engines share, so that neither imports the other: which data set a spec uses
(:func:`dataset_name`), the model built from a spec and its data (:func:`build_spec_model`), the seeded
training rows on which losses are evaluated (:func:`evaluation_rows`) and the seeds of the per-thread
generators (:func:`thread_seeds`, used by rand-k, papers.md §5). Model facts come from the model
descriptors (:mod:`leashed.models.registry`), never from tests of a model's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from leashed.models.registry import DATALESS_MODELS, DEFAULT_DATASET, TARGET_REGRESSION, model_descriptor

if TYPE_CHECKING:
    from leashed.spec import ExperimentSpec

__all__ = ["DATALESS_MODELS", "EVAL_TRAIN_ROWS", "build_spec_model", "dataset_name", "evaluation_rows",
           "thread_seeds"]

#: rows of the training set on which snapshot losses are evaluated
EVAL_TRAIN_ROWS = 10_000


def dataset_name(spec: ExperimentSpec) -> str:
    """The data set a spec trains on: its model's default data set while the spec keeps the default
    (``mnist``, which doubles as "unset"), else the spec's."""
    if spec.dataset == DEFAULT_DATASET:
        from leashed.models.user import ModelError

        try:
            return model_descriptor(spec.model).default_dataset
        except ModelError:  # a user model that cannot be loaded now (a results file read elsewhere)
            return spec.dataset
    return spec.dataset


def build_spec_model(spec: ExperimentSpec, dataset: Any) -> Any:
    """The :class:`~leashed.models._kernels.Model` of ``spec`` for ``dataset`` (its shape, classes and,
    for image models, ``input_shape``); one-line SpecError on a mismatch."""
    from leashed.models.registry import build_model

    desc = model_descriptor(spec.model)
    n_classes = 0 if desc.target == TARGET_REGRESSION else dataset.n_classes
    return build_model(spec.model, dataset.n_features, n_classes, spec.hidden,
                       input_shape=dataset.input_shape if desc.uses_input_shape else None,
                       dim=spec.dim if desc.params_from_dim else None)


def evaluation_rows(seed: int, n_train: int) -> np.ndarray:
    """The sorted training rows (at most :data:`EVAL_TRAIN_ROWS`, without replacement, drawn from
    ``default_rng([seed, 3])``) on which every engine evaluates the training loss."""
    rng = np.random.default_rng([seed, 3])
    return np.sort(rng.choice(n_train, size=min(n_train, EVAL_TRAIN_ROWS), replace=False))


def thread_seeds(seed: int, threads: int) -> np.ndarray:
    """Seeds of the per-thread generators (uint64): the first word of each child of
    ``SeedSequence([seed, 2]).spawn(threads)``."""
    children = np.random.SeedSequence([seed, 2]).spawn(threads)
    return np.array([c.generate_state(1, np.uint64)[0] for c in children], dtype=np.uint64)
