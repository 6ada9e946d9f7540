"""The static catalogue (unlearnkit/catalogue.py, issue #20): the method, optimizer and metric names and typed
parameters that a run config is checked against before torch is imported. It must say what the registries say:
the same entries, the same parameter types, bounds and defaults, and, for a bad value, the very message the
registry's own ``Params`` class gives (compared here value by value, never against a written-down string)."""

import subprocess
import sys

import pytest

from unlearnkit import catalogue, catalogue_build
from unlearnkit.config import check_catalogued, check_parameters, parse_structure
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.params import rows
from unlearnkit.methods.registry import available as methods
from unlearnkit.optim.registry import available as optimizers

PROBES = ["x", -1, -0.5, 0, 0.5, 1, 2, 1e9, None, True, [], ["a"], [1, -1], "nll", "auto", {"a": 1}]


def test_the_catalogue_is_the_registries_now():
    assert catalogue.CATALOGUE == catalogue_build.build(), (
        "the catalogue is stale: run `python -m unlearnkit.catalogue_build` after adding or changing a method, an "
        "optimizer or a metric")
    assert all(catalogue.current(kind) for kind in catalogue.PACKAGES)


def _entries():
    yield from (("method", name, cls.Params, catalogue.method_params(name)) for name, cls in methods().items())
    yield from (("optimizer", name, cls.Params, catalogue.optimizer_params(name)) for name, cls in optimizers().items())


def _message(params, values, name):
    try:
        params.check(values, name, "c.yaml")
    except UnlearnkitError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("kind, name, real, rebuilt", list(_entries()), ids=lambda v: v if isinstance(v, str) else "")
def test_rebuilt_params_check_like_the_registered_ones(kind, name, real, rebuilt):
    assert rebuilt is not None
    assert rebuilt.model_json_schema()["properties"] == real.model_json_schema()["properties"]
    assert rows(rebuilt) == rows(real)  # type, default, range and meaning as `unlearnkit methods NAME` prints them
    with_validators = set(real.__pydantic_decorators__.field_validators) or real.__pydantic_decorators__.model_validators
    assert _message(rebuilt, {"no_such_parameter": 1}, name) == _message(real, {"no_such_parameter": 1}, name)
    for field in real.model_fields:
        for value in PROBES:
            got, want = _message(rebuilt, {field: value}, name), _message(real, {field: value}, name)
            if with_validators:  # a validator written as code is left to the full check after torch, and may
                assert got is None or want is not None, (field, value)  # speak first: both must refuse then
            else:
                assert got == want, (field, value)


BAD = [  # each a run config with one mistake; the catalogue's message must equal the registries'
    {"method": {"name": "npoo"}},
    {"method": {"name": "npo", "params": {"beta": "x"}}},
    {"method": {"name": "simnpo", "params": {"gamma": -1, "delta": 2}}},
    {"method": {"name": "rmu", "params": {"layer_ids": [1, -1]}}},
    {"method": {"name": "graddiff", "params": {"bta": 1}}},
    {"train": {"optimizer": "adamm"}},
    {"train": {"optimizer": {"name": "lion", "beta1": 5}}},
    {"train": {"optimizer": {"name": "sgd", "momentum": "high"}}},
    {"train": {"optimizer": {"name": "adamw", "lr": 1}}},
    {"prepare": {"optimizer": {"name": "zo"}, "max_grad_norm": 1.0}},
    {"train": {"optimizer": "sam", "max_grad_norm": 1.0}, "method": {"name": "nope"}},
    {"eval": {"extra_metrics": ["forget_Q_A_PARA_ROUG"]}},
    {"task": {"source": "synthetic_corpus"}, "eval": {"extra_metrics": ["forget_Q_A_PARA_ROUGE"]}},
]


@pytest.mark.parametrize("data", BAD, ids=lambda d: str(d)[:60])
def test_early_check_says_what_the_full_check_says(data):
    cfg = parse_structure(data, "c.yaml")
    with pytest.raises(UnlearnkitError) as full:
        check_parameters(cfg, "c.yaml")
    with pytest.raises(UnlearnkitError) as early:
        check_catalogued(cfg, "c.yaml")
    assert str(early.value) == str(full.value)


def test_good_configs_pass_the_early_check():
    for data in ({}, {"method": {"name": "rmu", "params": {"steering_coeff": 5.0}}},
                 {"train": {"optimizer": {"name": "lion", "beta1": 0.95}, "max_grad_norm": 1.0}},
                 {"eval": {"extra_metrics": ["forget_Q_A_PARA_ROUGE"]}}):
        check_catalogued(parse_structure(data, "c.yaml"), "c.yaml")


def test_a_stale_catalogue_answers_nothing(monkeypatch):
    """A method module the catalogue was not written from: the catalogue steps aside, the full check decides."""
    monkeypatch.setitem(catalogue.CATALOGUE["modules"], "methods", ["npo"])
    catalogue.current.cache_clear()
    try:
        assert catalogue.method_names() is None and catalogue.method_params("npo") is None
        check_catalogued(parse_structure({"method": {"name": "a_method_added_since"}}, "c.yaml"), "c.yaml")
        with pytest.raises(UnlearnkitError, match="unknown method 'a_method_added_since'"):
            check_parameters(parse_structure({"method": {"name": "a_method_added_since"}}, "c.yaml"), "c.yaml")
    finally:
        catalogue.current.cache_clear()


def test_the_early_check_imports_no_torch():
    code = ("import sys\nfrom unlearnkit.config import check_catalogued, parse_structure\n"
            "cfg = parse_structure({'method': {'name': 'npo', 'params': {'beta': 0.2}}, "
            "'train': {'optimizer': {'name': 'lion'}, 'max_grad_norm': 1.0}, "
            "'eval': {'extra_metrics': ['forget_Q_A_PARA_ROUGE']}})\n"
            "check_catalogued(cfg)\nassert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
