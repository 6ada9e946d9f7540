"""U2A (research/methods.md §12; muyiahhh/U2A ``optimize_unlearning_weights``): the per-example weights against a
recomputation (per-example NPO gradients and the retain-loss gradient, one unpadded example at a time; delta_i =
grad J . grad l_i / gamma; omega_i <- omega_i exp(+-eta delta_i), renormalised to mean 1) and the weighted loss."""

import math

import pytest
import torch

import naive_reference as naive
from unlearnkit.methods import get_method


def naive_npo_terms(model, reference, beta, rows):
    """Per forget example: (l_NPO as a differentiable tensor)."""
    terms = []
    for i in rows:
        ids, labels = naive.forget_examples()[i]
        ratio = naive.sequence_logprob_tensor(model, ids, labels) - naive.sequence_logprob(reference, ids, labels)
        terms.append(-(2 / beta) * torch.nn.functional.logsigmoid(-beta * ratio))
    return terms


def expected(model, reference, beta, eta, gamma, sign, rows, n=3):
    grad_j = naive.flat_gradient(naive.mean_nll_tensor(model, naive.retain_examples()), model)
    terms = naive_npo_terms(model, reference, beta, rows)
    weights = [1.0] * n
    for i, term in zip(rows, terms):
        delta = float(grad_j @ naive.flat_gradient(term, model)) / gamma
        weights[i] *= math.exp(sign * eta * delta)
    weights = [w * n / sum(weights) for w in weights]
    loss = sum(weights[i] * t.item() for i, t in zip(rows, terms)) / len(rows)
    return weights, loss


@pytest.mark.parametrize(("sign_name", "sign"), [("implicit", 1.0), ("reference", -1.0)])
def test_u2a_weights_and_loss_match_recomputation(sign_name, sign):
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.3)
    method = get_method("u2a", beta=0.5, weight_lr=3.0, gamma=2.0, weight_sign=sign_name)
    method.prepare(reference, [naive.forget_batch([0, 1]), naive.forget_batch([2])])
    rows = [2, 0]
    loss, _ = method.loss(model, naive.forget_batch(rows), naive.retain_batch())
    want_weights, want_loss = expected(model, reference, 0.5, 3.0, 2.0, sign, rows)
    assert method.weights().tolist() == pytest.approx(want_weights, rel=1e-4)
    assert max(want_weights) - min(want_weights) > 0.01  # the weights did move
    assert loss.item() == pytest.approx(want_loss, rel=1e-4)


def test_u2a_weights_persist_across_steps_and_in_state():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.3)
    method = get_method("u2a", weight_lr=3.0)
    method.prepare(reference, [naive.forget_batch()])
    method.loss(model, naive.forget_batch([0]), naive.retain_batch())
    after_one = method.weights()
    assert after_one.mean().item() == pytest.approx(1.0)
    restored = get_method("u2a", weight_lr=3.0)
    restored.load_state_dict(method.state_dict())
    restored.prepare(reference, [naive.forget_batch()])  # a resumed run prepares again: the weights are kept
    assert torch.equal(restored.weights(), after_one)


def test_u2a_with_zero_weight_lr_is_npo():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.3)
    method = get_method("u2a", weight_lr=0.0)
    method.prepare(reference, [naive.forget_batch()])
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    npo = get_method("npo", retain_loss=None)
    npo.prepare(reference, [naive.forget_batch()])
    assert loss.item() == pytest.approx(npo.loss(model, naive.forget_batch(), None)[0].item(), rel=1e-6)
