"""The registry lists every method; names, flags and user errors."""

import sys

import pytest

import naive_reference as naive
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import available, get_method

NAMES = ["adv_ga", "adv_npo", "altpo", "catnip", "ceu", "ga", "graddiff", "gru", "guard_it", "hamu", "idkdpo", "idknll", "kfade",
         "lunar", "npo", "ofmu", "pdu", "rmu", "satimp", "simnpo", "tru", "u2a", "undial", "wga"]
# parameters without a default (OpenUnlearning's PDU has none for eps; LUNAR's refusal prompts are the user's)
REQUIRED = {"pdu": {"retain_loss_eps": 1.0}, "lunar": {"refusal_prompts": ["Who is Zed?"]}}
# defaults that name a layer of a 7B model; the test model has 4
FOUR_LAYERS = {"rmu": {"layer": 2}, "adv_ga": {"perturb_layer": 2}, "adv_npo": {"perturb_layer": 2}}
# write text of their own with the tokenizer saved beside the model (tiny_llama has none): their own tests cover them
NEEDS_TOKENIZER = ["altpo", "lunar"]
# inference-time methods have no loss (fit, then apply): tests/methods/test_method_guard_it.py covers them
INFERENCE = ["guard_it"]


def test_registry_lists_all_methods():
    methods = available()
    assert list(methods) == NAMES
    for name, cls in methods.items():
        assert cls.name == name
        assert cls.summary and "\n" not in cls.summary
        assert "arXiv:" in cls.citation
        assert cls.__doc__
        assert "arXiv" in sys.modules[cls.__module__].__doc__  # the module docstring names the paper


def test_flags():
    made = {n: get_method(n, **REQUIRED.get(n, {})) for n in NAMES}
    assert [n for n in NAMES if made[n].uses_idk] == ["idkdpo", "idknll"]
    assert [n for n in NAMES if made[n].uses_retain] == ["adv_npo", "altpo", "graddiff", "gru", "guard_it", "hamu", "idkdpo",
                                                         "idknll", "kfade", "lunar", "npo", "ofmu", "pdu", "rmu", "satimp",
                                                         "simnpo", "tru", "u2a", "wga"]
    assert [n for n in NAMES if made[n].needs_reference_model] == ["rmu", "undial"]
    assert [n for n in NAMES if made[n].kind == "inference"] == INFERENCE
    assert {made[n].kind for n in NAMES} == {"training", "inference"}
    assert get_method("npo", retain_loss="kl").needs_reference_model
    assert not get_method("npo", retain_loss=None).uses_retain


def test_unknown_method_is_a_user_error():
    with pytest.raises(UnlearnkitError, match="unknown method 'nop'"):
        get_method("nop")


def test_unknown_parameter_is_a_user_error():
    with pytest.raises(UnlearnkitError, match="has no parameter 'gamma'"):
        get_method("npo", gamma=1.0)


@pytest.mark.parametrize("name, value", [("graddiff", None), ("npo", "mse"), ("idkdpo", "KL")])
def test_bad_retain_loss_is_a_user_error(name, value):
    with pytest.raises(UnlearnkitError, match="retain_loss"):
        get_method(name, retain_loss=value)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NEEDS_TOKENIZER + INFERENCE])
def test_every_method_trains_one_step(name):
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference)
    method = get_method(name, **{**REQUIRED.get(name, {}), **FOUR_LAYERS.get(name, {})})
    if name == "tru":  # it encodes its target templates; the in-memory tiny model has no tokenizer folder
        method.use_tokenizer(naive.CharTokenizer())
    params = method.trainable_parameters(model)
    method.prepare(model, [naive.forget_batch()], reference_model=reference if method.needs_reference_model else None)
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch() if method.uses_retain else None)
    assert loss.dim() == 0
    assert all(isinstance(v, float) for v in logs.values()) and "forget_loss" in logs
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
