"""CATNIP (reconstruction of research/methods.md §4): the token-level loss against a token-by-token recomputation,
and its gradient against the token-wise reweighting w_t = 2 p^beta / (p^beta + (1-p)^beta) of gradient ascent."""

import math

import pytest
import torch

import naive_reference as naive
from unlearnkit.methods import get_method


def naive_catnip(model, beta):
    """(2/beta) * mean over every answer token of log(1 + (p/(1-p))^beta), one unpadded example at a time."""
    terms = []
    for ids, labels in naive.forget_examples():
        for logp in naive.answer_token_logprobs(model, ids, labels):
            p = math.exp(logp)
            terms.append((2 / beta) * math.log1p((p / (1 - p)) ** beta))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("stop_gradient", ["reference", "none"])
def test_catnip_loss_matches_token_formula(beta, stop_gradient):
    model = naive.perturbed_copy(naive.tiny_llama(), scale=0.5)
    method = get_method("catnip", beta=beta, stop_gradient=stop_gradient)
    assert not method.uses_retain and not method.needs_reference_model
    loss, _ = method.loss(model, naive.forget_batch(), None)
    assert loss.item() == pytest.approx(naive_catnip(model, beta), rel=1e-5)


def test_catnip_gradient_is_confidence_reweighted_gradient_ascent():
    """With a constant reference, grad L = (1/N) sum_t w_t grad log p_t: descending it is gradient ascent on the
    NLL with each token reweighted by w_t (Eq. 9's token-wise reweighting)."""
    beta = 1.5
    model = naive.perturbed_copy(naive.tiny_llama(), scale=0.5)
    loss, _ = get_method("catnip", beta=beta).loss(model, naive.forget_batch(), None)
    got = torch.autograd.grad(loss, model.lm_head.weight)[0]

    want = torch.zeros_like(got)
    n_tokens = sum(len(naive.answer_token_logprobs(model, ids, labels)) for ids, labels in naive.forget_examples())
    for ids, labels in naive.forget_examples():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        surrogate = 0.0
        for t in range(1, len(ids)):
            if labels[t] == -100:
                continue
            p = math.exp(logp[t - 1, labels[t]].item())
            w = 2 * p**beta / (p**beta + (1 - p) ** beta)
            surrogate = surrogate + w * logp[t - 1, labels[t]] / n_tokens
        want += torch.autograd.grad(surrogate, model.lm_head.weight)[0].float()
    assert want.abs().max() > 1e-6
    assert torch.allclose(got, want, atol=1e-9, rtol=1e-4)


def test_catnip_differentiating_the_reference_changes_the_gradient():
    model = naive.perturbed_copy(naive.tiny_llama(), scale=0.5)
    grads = []
    for stop in ("reference", "none"):
        loss, _ = get_method("catnip", stop_gradient=stop).loss(model, naive.forget_batch(), None)
        grads.append(torch.autograd.grad(loss, model.lm_head.weight)[0])
    # differentiating log(1 - p_t) adds its own term to the gradient: the two settings must differ
    assert (grads[0] - grads[1]).norm() > 1e-3 * grads[0].norm()


def test_catnip_certain_token_gives_a_finite_loss():
    from unlearnkit.methods.catnip import catnip_loss

    logprobs = torch.tensor([[0.0, -0.5]], requires_grad=True)
    loss = catnip_loss(logprobs, torch.tensor([[True, True]]), 1.0, "reference")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logprobs.grad).all()
