"""SimNPO against the code-form formula, one example at a time."""

import math

import pytest

import naive_reference as naive
from unlearnkit.methods import get_method


def naive_simnpo(model, beta, delta):
    terms = []
    for ids, labels in naive.forget_examples():
        tokens = naive.answer_token_logprobs(model, ids, labels)
        normalised_nll = -sum(tokens) / len(tokens)
        terms.append(-(2 / beta) * naive.log_sigmoid(beta * (normalised_nll - delta)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta, delta", [(4.5, 0.0), (2.5, 0.3)])
def test_simnpo_forget_term(beta, delta):
    model = naive.tiny_llama()
    method = get_method("simnpo", beta=beta, delta=delta, retain_loss=None)
    assert not method.needs_reference_model and not method.uses_retain
    loss, logs = method.loss(model, naive.forget_batch(), None)
    want = naive_simnpo(model, beta, delta)
    assert logs["forget_loss"] == pytest.approx(want, abs=1e-5)
    assert loss.item() == pytest.approx(0.125 * want, abs=1e-5)


def test_simnpo_defaults_add_the_retain_nll():
    model = naive.tiny_llama()
    method = get_method("simnpo")
    assert method.params() == {"beta": 4.5, "delta": 0.0, "forget_weight": 0.125, "retain_weight": 1.0, "retain_loss": "nll"}
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want = 0.125 * naive_simnpo(model, 4.5, 0.0) + naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_code_margin_is_beta_times_delta_in_the_paper_form():
    """log sigmoid(beta*(nll/|y| - delta)) == log sigmoid(-(beta/|y|) log pi - gamma) with gamma = beta*delta."""
    model = naive.tiny_llama()
    beta, delta = 1.0, 3.0
    _, logs = get_method("simnpo", beta=beta, delta=delta, retain_loss=None).loss(model, naive.forget_batch(), None)
    paper = []
    for ids, labels in naive.forget_examples():
        tokens = naive.answer_token_logprobs(model, ids, labels)
        log_pi = sum(tokens)
        paper.append(-(2 / beta) * naive.log_sigmoid(-(beta / len(tokens)) * log_pi - beta * delta))
    assert logs["forget_loss"] == pytest.approx(sum(paper) / len(paper), abs=1e-5)
    assert not math.isclose(logs["forget_loss"], naive_simnpo(model, beta, 0.0), abs_tol=1e-2)
