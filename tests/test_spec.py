import math

import pytest

from leashed.errors import SpecError
from leashed.spec import ExperimentSpec, parse_persistence, sparsifier_k


def test_defaults_are_valid_and_round_trip():
    spec = ExperimentSpec(algorithm="leashed", threads=4, persistence="inf", hidden=(128, 64))
    assert spec.persistence == math.inf
    again = ExperimentSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.label() == "leashed m=4 Tp=inf"


@pytest.mark.parametrize("changes, needle", [
    ({"algorithm": "hogwlid"}, "unknown algorithm"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"threads": -3, "algorithm": "lock"}, "threads must be a positive integer"),
    ({"algorithm": "seq", "threads": 2}, "one thread"),
    ({"lr": -0.1}, "learning rate"),
    ({"lr": float("nan")}, "learning rate"),
    ({"batch_size": 0}, "batch size"),
    ({"persistence": -1}, "persistence"),
    ({"persistence": "1.5"}, "persistence"),
    ({"step_policy": "magic"}, "unknown step policy"),
    ({"step_policy": "normalised"}, "step_table=leashed.analysis.steps.step_table_from_fit("),
    ({"model": "resnet"}, "unknown model"),
    ({"sparsifier": "top:3"}, "sparsifier"),
    ({"hidden": (0,)}, "hidden"),
])
def test_bad_specs_raise_one_line(changes, needle):
    with pytest.raises(SpecError) as err:
        ExperimentSpec(**changes)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_total_gradients_and_batch_larger_than_data():
    spec = ExperimentSpec(batch_size=64, epochs=3)
    assert spec.total_gradients(60000) == 3 * 937
    assert ExperimentSpec(updates=10).total_gradients(60000) == 10
    with pytest.raises(SpecError, match="larger than the training set"):
        ExperimentSpec(batch_size=100).total_gradients(50)


def test_persistence_and_sparsifier_parsing():
    assert parse_persistence("0") == 0
    assert parse_persistence(3) == 3
    assert parse_persistence("INF") == math.inf
    assert sparsifier_k("none", 50) == 50
    assert sparsifier_k("topk:5", 50) == 5
    assert sparsifier_k("randk:10%", 50) == 5
    assert sparsifier_k("topk:1%", 101770) == 1018
    with pytest.raises(SpecError, match="larger than the model"):
        sparsifier_k("topk:51", 50)
    with pytest.raises(SpecError, match="at least 1"):
        sparsifier_k("topk:0", 50)
