"""IdkNLL and IdkDPO against values computed one example at a time."""

import math

import pytest

import naive_reference as naive
from unlearnkit.methods import get_method


def test_idknll_is_refusal_nll_plus_retain_nll():
    model = naive.tiny_llama()
    method = get_method("idknll", retain_weight=0.5)
    assert method.uses_idk and method.uses_retain and not method.needs_reference_model
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    refusal = naive.mean_nll(model, naive.refusal_examples())
    retain = naive.mean_nll(model, naive.retain_examples())
    assert logs["forget_loss"] == pytest.approx(refusal, abs=1e-5)
    assert loss.item() == pytest.approx(refusal + 0.5 * retain, abs=1e-5)


def naive_idkdpo(model, reference, beta):
    terms = []
    for (ids_l, labels_l), (ids_w, labels_w) in zip(naive.forget_examples(), naive.refusal_examples()):
        chosen = naive.sequence_logprob(model, ids_w, labels_w) - naive.sequence_logprob(reference, ids_w, labels_w)
        rejected = naive.sequence_logprob(model, ids_l, labels_l) - naive.sequence_logprob(reference, ids_l, labels_l)
        terms.append(-(2 / beta) * naive.log_sigmoid(beta * (chosen - rejected)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_idkdpo_matches_formula(beta):
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = get_method("idkdpo", beta=beta)
    assert method.uses_idk and not method.needs_reference_model
    method.prepare(reference, [naive.forget_batch([1]), naive.forget_batch([0, 2])])
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want_forget = naive_idkdpo(model, reference, beta)
    assert logs["forget_loss"] == pytest.approx(want_forget, abs=1e-5)
    assert loss.item() == pytest.approx(want_forget + naive.mean_nll(model, naive.retain_examples()), abs=1e-5)


def test_idkdpo_prepare_stores_both_reference_logprobs():
    reference = naive.tiny_llama()
    method = get_method("idkdpo", retain_loss=None)
    method.prepare(reference, [naive.forget_batch()])
    answers = [naive.sequence_logprob(reference, i, l) for i, l in naive.forget_examples()]
    refusals = [naive.sequence_logprob(reference, i, l) for i, l in naive.refusal_examples()]
    assert method._reference_answer.tolist() == pytest.approx(answers, abs=1e-5)
    assert method._reference_refusal.tolist() == pytest.approx(refusals, abs=1e-5)


def test_idkdpo_at_step_zero_is_two_over_beta_log_two():
    model = naive.tiny_llama()
    method = get_method("idkdpo", beta=0.1, retain_loss=None)
    method.prepare(model, [naive.forget_batch()])
    loss, _ = method.loss(model, naive.forget_batch([1, 2]), None)
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), abs=1e-4)
