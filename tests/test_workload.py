"""Rules both engines share (leashed/workload.py, leashed/batches.py, leashed/sparsify.py), the model
descriptors (leashed/models/registry.py), and the runtime's independence from the simulator."""

import subprocess
import sys

import numpy as np
import pytest

from leashed import spec as spec_module
from leashed import workload
from leashed.models import registry
from leashed.spec import ExperimentSpec


def test_runtime_imports_no_simulator():
    code = "import leashed.runtime; import leashed.runtime.run"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert "leashed.runtime.run" in modules  # the import log is read right
    assert not [m for m in modules if m == "simpy" or m.startswith(("simpy.", "leashed.sim"))]


def test_a_runtime_and_reference_run_import_no_simulator():
    # prepare() and the reference twin import the shared rules lazily: still no simulator after running
    code = """
import importlib, sys
from leashed.spec import ExperimentSpec
from leashed.runtime.reference import reference_run
run = importlib.import_module("leashed.runtime.run")
for model, extra in (("counter", {}), ("quadratic", {"dataset": "synthetic"})):
    spec = ExperimentSpec(algorithm="leashed", threads=2, model=model, dim=6, updates=40, lr=0.01,
                          sparsifier="randk:2", evaluations=2, **extra)
    run.run(spec, progress=False)
    reference_run(spec)
bad = [m for m in sys.modules if m == "simpy" or m.startswith(("simpy.", "leashed.sim"))]
print("BAD", bad)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "BAD []"


def test_one_list_of_model_names():
    assert spec_module.MODELS is registry.MODEL_NAMES
    assert registry.MODEL_NAMES == tuple(d.name for d in registry.MODELS)
    import leashed.models

    assert leashed.models.MODEL_NAMES is registry.MODEL_NAMES
    with pytest.raises(Exception, match="unknown model 'resnet'"):
        registry.model_descriptor("resnet")


@pytest.mark.parametrize("name, used", [("counter", "none"), ("quadratic", "synthetic"), ("mlp", "mnist")])
def test_dataset_rule_uses_the_descriptor(name, used):
    assert workload.dataset_name(ExperimentSpec(model=name)) == used
    assert workload.dataset_name(ExperimentSpec(model=name, dataset="fashion-mnist")) == "fashion-mnist"
    assert registry.model_descriptor(name).default_dataset == used
    assert spec_module.DATALESS_MODELS == {"counter": "none", "quadratic": "synthetic"}


@pytest.mark.parametrize("model, extra, dataset", [
    ("counter", {"dim": 7, "updates": 30}, "none"),
    ("quadratic", {"dim": 5, "updates": 30}, "synthetic"),
])
def test_summary_reports_the_dataset_used(model, extra, dataset):
    # A Python-API spec keeps the default dataset "mnist", which doubles as "unset": the summary names the
    # data set the run used (it said "mnist" before)
    import importlib

    run = importlib.import_module("leashed.runtime.run")
    spec = ExperimentSpec(algorithm="seq", model=model, lr=0.01, evaluations=0, **extra)
    assert spec.dataset == "mnist"
    result = run.run(spec, progress=False)
    assert result.summary()["dataset"] == dataset
    assert result.extra["dataset_used"] == dataset


def test_descriptors_state_the_model_facts():
    d = {m.name: m for m in registry.MODELS}
    assert not d["counter"].reads_rows and d["counter"].counts_updates and d["counter"].params_from_dim
    assert all(m.reads_rows and not m.counts_updates for n, m in d.items() if n != "counter")
    assert d["quadratic"].target == registry.TARGET_REGRESSION
    assert {d[n].target for n in ("softmax", "mlp", "cnn")} == {registry.TARGET_CLASSES}
    assert d["counter"].parameter_count(0, 0, dim=9) == 9
    assert d["quadratic"].parameter_count(20, 0) == 20
    assert d["softmax"].parameter_count(784, 10) == 7850
    assert d["mlp"].parameter_count(784, 10, hidden=(128,)) == 101_770
    assert d["cnn"].parameter_count(784, 10) == 27_354
    assert [name for name, _ in d["mlp"].layout(5, 3, hidden=(4,))] == ["fc1.W", "fc1.b", "fc2.W", "fc2.b"]


def test_build_spec_model_and_shared_rules():
    from leashed.models.datasets import load_dataset

    spec = ExperimentSpec(model="quadratic", dataset="synthetic", dim=6)
    data = load_dataset("synthetic", dim=6, seed=0)
    model = workload.build_spec_model(spec, data)
    assert model.n_params == 6 and model.name == "quadratic"
    rows = workload.evaluation_rows(3, 50_000)
    assert len(rows) == workload.EVAL_TRAIN_ROWS and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, workload.evaluation_rows(3, 50_000))
    assert not np.array_equal(rows, workload.evaluation_rows(4, 50_000))
    seeds = workload.thread_seeds(5, 3)
    assert seeds.dtype == np.uint64 and len(set(seeds.tolist())) == 3


def test_old_names_stay_importable():
    from leashed.batches import epoch_permutation
    from leashed.sim.batches import epoch_permutation as old_perm
    from leashed.sim.gradients import EVAL_TRAIN_ROWS, NumpySparsifier, dataset_name, sparse_seeds
    from leashed.sparsify import NumpySparsifier as shared

    assert old_perm is epoch_permutation and NumpySparsifier is shared
    assert dataset_name is workload.dataset_name and EVAL_TRAIN_ROWS == workload.EVAL_TRAIN_ROWS
    assert sparse_seeds(5, 3) == [int(s) for s in workload.thread_seeds(5, 3)]
