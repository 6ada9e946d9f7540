"""WGA: the loss against a token-by-token recomputation (OpenUnlearning ``compute_wga_loss``:
-(p^beta * CE).mean() over the batch's answer tokens, arXiv:2502.19301), and its defining property: each token's
weight is the model's own probability^beta, detached, so the gradient is gradient ascent's scaled by p^beta."""

import math

import naive_reference as naive
import pytest
import torch

from unlearnkit.methods import get_method
from unlearnkit.methods.losses import answer_mask, token_logprobs
from unlearnkit.methods.wga import wga_loss


def naive_wga(model, beta):
    """(1/N) * sum over every answer token of every forget example of p^beta * log p."""
    terms = [math.exp(lp) ** beta * lp for ids, labels in naive.forget_examples()
             for lp in naive.answer_token_logprobs(model, ids, labels)]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_wga_forget_loss_matches_token_by_token(beta):
    model = naive.memorised()
    method = get_method("wga", beta=beta, retain_loss=None)
    assert not method.uses_retain and not method.needs_reference_model
    method.prepare(model, [naive.forget_batch()])
    loss, logs = method.loss(model, naive.forget_batch(), None)
    assert loss.item() == pytest.approx(naive_wga(model, beta), abs=1e-6)
    probs = [math.exp(lp) for ids, labels in naive.forget_examples()
             for lp in naive.answer_token_logprobs(model, ids, labels)]
    assert logs["token_prob"] == pytest.approx(sum(probs) / len(probs), abs=1e-6)


def test_wga_defaults_and_retain_nll():
    model = naive.memorised()
    method = get_method("wga")
    assert method.params() == {"beta": 1.0, "forget_weight": 1.0, "retain_weight": 1.0, "retain_loss": "nll"}
    method = get_method("wga", forget_weight=0.5, retain_weight=2.0)
    method.prepare(model, [naive.forget_batch()])
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want = 0.5 * naive_wga(model, 1.0) + 2.0 * naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_wga_gradient_is_gradient_ascent_scaled_by_detached_p_to_the_beta(beta):
    # d/dz_t [sg(p)^beta * log p_y] = p_y^beta * (onehot(y) - softmax(z_t)): the weight is a constant
    # (a weight with gradient would give (1 + beta) * p_y^beta * (onehot(y) - softmax(z_t)) instead)
    torch.manual_seed(0)
    batch = naive.forget_batch()
    logits = (3 * torch.randn(*batch["input_ids"].shape, naive.VOCAB, dtype=torch.float64)).requires_grad_()
    labels = batch["labels"]
    wga_loss(token_logprobs(logits, labels), answer_mask(labels), beta).backward()
    n_tokens = int((labels[:, 1:] != -100).sum())
    checked = 0
    for row in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            y = int(labels[row, t])
            if y == -100:
                continue
            p = torch.softmax(logits[row, t - 1].detach(), dim=-1)
            want = -p * p[y] ** beta / n_tokens
            want[y] += p[y] ** beta / n_tokens
            assert torch.allclose(logits.grad[row, t - 1], want, atol=1e-12)
            checked += 1
    assert checked == n_tokens == 9
