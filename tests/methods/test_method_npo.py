"""NPO: the loss against a hand-written formula, its value at step 0, the precomputed reference, the GA limit."""

import math

import pytest
import torch

import naive_reference as naive
from unlearnkit.methods import get_method
from unlearnkit.methods.losses import forward_logits, sequence_nll


def naive_npo(model, reference, beta):
    terms = []
    for ids, labels in naive.forget_examples():
        log_ratio = naive.sequence_logprob(model, ids, labels) - naive.sequence_logprob(reference, ids, labels)
        terms.append(-(2 / beta) * naive.log_sigmoid(-beta * log_ratio))
    return sum(terms) / len(terms)


def prepared(method, reference, batches=None):
    method.prepare(reference, batches or [naive.forget_batch([0, 1]), naive.forget_batch([2])])
    return method


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_npo_forget_loss_matches_formula(beta):
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(get_method("npo", beta=beta, retain_loss=None), reference)
    assert not method.uses_retain
    loss, logs = method.loss(model, naive.forget_batch(), None)
    assert loss.item() == pytest.approx(naive_npo(model, reference, beta), abs=1e-5)
    assert "retain_loss" not in logs


def test_npo_with_retain_nll_and_weights():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(get_method("npo", forget_weight=0.5, retain_weight=2.0), reference)
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want = 0.5 * naive_npo(model, reference, 0.1) + 2.0 * naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_npo_with_retain_kl():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = get_method("npo", retain_loss="kl")
    assert method.needs_reference_model
    method.prepare(reference, [naive.forget_batch()], reference_model=reference)
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want = naive_npo(model, reference, 0.1) + naive.retain_kl(model, reference, naive.retain_batch())
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_npo_at_step_zero_is_two_over_beta_log_two():
    model = naive.tiny_llama()
    method = prepared(get_method("npo", beta=0.1, retain_loss=None), model)
    loss, logs = method.loss(model, naive.forget_batch([2, 0]), None)
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), abs=1e-4)
    assert logs["log_ratio"] == pytest.approx(0.0, abs=1e-5)


def test_precomputed_reference_equals_the_live_reference_model():
    reference = naive.tiny_llama()
    method = prepared(get_method("npo"), reference)
    want = [naive.sequence_logprob(reference, ids, labels) for ids, labels in naive.forget_examples()]
    assert method._reference_logprobs.tolist() == pytest.approx(want, abs=1e-5)
    # and equal to what a live frozen copy gives on a batch in another order
    batch = naive.forget_batch([2, 1])
    with torch.no_grad():
        live = -sequence_nll(forward_logits(reference, batch), batch["labels"])
    assert method._reference_logprobs[batch["index"]].tolist() == pytest.approx(live.tolist(), abs=1e-5)


def test_prepare_restores_training_mode():
    model = naive.tiny_llama().train()
    prepared(get_method("npo"), model)
    assert model.training


def test_npo_gradient_tends_to_summed_ga_as_beta_goes_to_zero():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(get_method("npo", beta=1e-4, retain_loss=None), reference)
    loss, _ = method.loss(model, naive.forget_batch(), None)
    npo_grad = torch.autograd.grad(loss, model.lm_head.weight)[0]
    batch = naive.forget_batch()
    ga_loss = -sequence_nll(forward_logits(model, batch), batch["labels"]).mean()  # GA on summed NLL: -E[nll]
    ga_grad = torch.autograd.grad(ga_loss, model.lm_head.weight)[0]
    # grad L_NPO = E[2 sigmoid(beta * log_ratio) * grad log pi_theta] -> E[grad log pi_theta] = grad ga_loss
    assert ga_grad.abs().max() > 1e-3
    assert ((npo_grad - ga_grad).norm() / ga_grad.norm()).item() < 1e-3


def test_loss_before_prepare_is_refused():
    with pytest.raises(RuntimeError, match="prepare"):
        get_method("npo").loss(naive.tiny_llama(), naive.forget_batch(), naive.retain_batch())


def test_example_missing_from_prepare_is_refused():
    model = naive.tiny_llama()
    method = prepared(get_method("npo"), model, batches=[naive.forget_batch([0, 2])])
    with pytest.raises(RuntimeError, match="every forget example"):
        method.loss(model, naive.forget_batch([1]), naive.retain_batch())
