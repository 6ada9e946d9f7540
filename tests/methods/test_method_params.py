"""Typed hyper-parameters: every method's Params is documented, keeps the old defaults, refuses bad values in one
line naming the parameter, its type and range; methods are found without being listed anywhere."""

import subprocess
import sys
import textwrap

import pytest

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import available, get_method
from unlearnkit.methods import registry

# get_method(name).params() before the methods declared Params (recorded in every run's config; keep it stable)
TRU_REASONING = ("The question asks for specific details about a person or a fact that I have been asked to forget. "
                 "Any answer, even a partial one, would reveal that information, so the right response is to decline "
                 "without hinting at it.")
TRU_REFUSAL = ("I'm sorry, but I can't share that information. I'd be glad to help with a related question that does "
               "not depend on it.")
DEFAULTS = {
    "altpo": {"beta": 0.1, "forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll", "max_new_tokens": 200,
              "temperature": 1.0, "top_k": 50,
              "instruction": "Now write another version of the answer with some alternate plausible facts that "
                             "change answer details."},
    "ga": {},
    "graddiff": {"forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"},
    "idkdpo": {"beta": 0.1, "forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"},
    "idknll": {"forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"},
    "npo": {"beta": 0.1, "forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"},
    "rmu": {"steering_coeff": 2.0, "layer": 7, "forget_weight": 1.0, "retain_weight": 1.0, "update_layers": None,
            "positions": "answer", "seed": 42},
    "simnpo": {"beta": 4.5, "delta": 0.0, "forget_weight": 0.125, "retain_weight": 1.0, "retain_loss": "nll"},
    # OpenUnlearning's defaults (issue 17); PDU's eps has none there and none here (REQUIRED supplies one)
    "ceu": {"ignore_first_n_answer_tokens": 1},
    "gru": {"gamma_gru": 0.8, "forget_loss": "ga", "beta": 0.1},
    "pdu": {"retain_loss_eps": 1.0, "primal_dual": True, "dual_step_size": 1.0, "dual_warmup_epochs": 5,
            "forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"},
    "satimp": {"beta1": 5.0, "beta2": 1.0, "forget_weight": 0.1, "retain_weight": 1.0, "retain_loss": "nll"},
    "undial": {"beta": 10.0, "forget_weight": 1.0, "retain_weight": 0.0, "retain_loss": None},
    # LAU (methods.md §10): the reference scripts' attack (eps 8, 6 steps, layer 4) and NPO's beta
    "adv_npo": {"epsilon": 8.0, "steps": 6, "perturb_layer": 4, "beta": 0.1, "forget_weight": 1.0,
                "retain_weight": 1.0, "retain_loss": "nll"},
    "adv_ga": {"epsilon": 8.0, "steps": 6, "perturb_layer": 4, "forget_weight": 1.0, "retain_weight": 1.0,
               "retain_loss": None},
    "wga": {"beta": 1.0, "forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"},
    "catnip": {"beta": 1.0, "stop_gradient": "reference"},
    "hamu": {"balancing": "trust_region", "variant": "q", "constraint_ratio": 0.5},
    "kfade": {"damping": None, "damping_form": "kronecker", "kl_budget": None, "fisher": "sampled", "samples": 1,
              "curvature_batches": 8, "modules": "", "exclude": "lm_head"},
    "ofmu": {"beta": 0.1, "rho": 0.01, "rho_increment": 0.01, "inner_steps": 5, "inner_lr": 1e-4,
             "solver": "penalty"},
    "tru": {"reasoning": TRU_REASONING, "refusal": TRU_REFUSAL, "target_reduction": "token", "target_weight": 1.0,
            "forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"},
    "u2a": {"beta": 0.1, "weight_lr": 0.01, "gamma": 1.0, "weight_sign": "implicit", "retain_weight": 0.0},
    # GUARD-IT (methods.md §9): the README's coeff and auto clusters; layers, vector and threshold are choices
    "guard_it": {"layers": None, "vector": "orth_diff_means", "coeff": -0.3, "rotation_only": True,
                 "n_clusters": "auto", "threshold": "auto", "router": "hidden_state", "batch_size": 8, "seed": 0},
}
REQUIRED = {"pdu": {"retain_loss_eps": 1.0}, "lunar": {"refusal_prompts": ["Who is Zed?"]}}
REQUIRE_A_VALUE = ["lunar"]  # methods with a parameter that has no default and no DEFAULTS entry (lunar: refusal_prompts)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_give_the_same_params_as_before(name):
    method = get_method(name, **REQUIRED.get(name, {}))
    assert method.params() == DEFAULTS[name]
    assert list(method.params()) == list(DEFAULTS[name])  # and in the same order
    assert list(method.Params.model_fields) == list(DEFAULTS[name])


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_parameter_is_described(name):
    for field, info in available()[name].Params.model_fields.items():
        assert info.description and "\n" not in info.description, f"{name}.{field} has no one-line description"


def test_given_values_become_the_params():
    assert get_method("npo", beta=0.5, retain_loss=None).params()["beta"] == 0.5
    assert get_method("rmu", update_layers=(3, 1)).update_layers == [3, 1]


@pytest.mark.parametrize("name", ["npo", "simnpo", "idkdpo"])
@pytest.mark.parametrize("value, problem", [(0, "must be > 0, got 0"), (-1.0, "must be > 0, got -1.0"),
                                            ("x", "must be a number, got 'x'")])
def test_bad_beta_is_one_line_naming_type_and_range(name, value, problem):
    with pytest.raises(UnlearnkitError) as err:
        get_method(name, beta=value)
    message = str(err.value)
    assert "\n" not in message
    assert f"method {name!r} parameter beta: {problem} (beta: float, > 0, default " in message


@pytest.mark.parametrize("name, params, needles", [
    ("rmu", {"positions": "tokens"}, ["positions: must be 'answer' or 'all', got 'tokens'"]),
    ("rmu", {"layer": -1}, ["layer: must be >= 0", "int or null"]),
    ("rmu", {"update_layers": [2, -1]}, ["update_layers: must be >= 0, got -1", "list of int >= 0 or null"]),
    ("graddiff", {"retain_loss": None}, ["retain_loss: must be 'nll' or 'kl', got null"]),
    ("simnpo", {"forget_weight": -0.1}, ["forget_weight: must be >= 0", "float, >= 0, default 0.125"]),
    ("ga", {"beta": 0.1}, ["no parameter 'beta'", "it has none"]),
])
def test_other_bad_values(name, params, needles):
    with pytest.raises(UnlearnkitError) as err:
        get_method(name, **params)
    for needle in needles:
        assert needle in str(err.value)


def test_a_new_method_module_is_found_without_being_listed(tmp_path, monkeypatch):
    """Adding a method is one file with @register: here a file in a folder added to the package's path."""
    import unlearnkit.methods as package

    (tmp_path / "zz_extra_method.py").write_text(textwrap.dedent('''
        from unlearnkit.methods.base import UnlearningMethod
        from unlearnkit.methods.registry import register


        @register
        class Extra(UnlearningMethod):
            name = "zz-extra"
            summary = citation = "a test method"
    '''))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(registry.METHODS, "entries", dict(registry.METHODS.entries))
    try:
        assert "zz-extra" in available()
        assert get_method("zz-extra").params() == {}
    finally:
        sys.modules.pop("unlearnkit.methods.zz_extra_method", None)


def test_the_package_lists_no_method_module():
    """In a fresh process, importing the package imports no method; the registry still finds all of them."""
    code = ("import sys, unlearnkit.methods as m\n"
            "assert 'unlearnkit.methods.npo' not in sys.modules\n"
            "print(' '.join(m.available()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == sorted([*DEFAULTS, *REQUIRE_A_VALUE])
