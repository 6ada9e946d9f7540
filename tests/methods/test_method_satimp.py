"""SatImp: the loss against a token-by-token recomputation (OpenUnlearning ``compute_satimp_loss``:
-(p^beta1 * (1-p)^beta2 * CE).mean() over the batch's answer tokens, arXiv:2505.11953), and its two weightings:
saturation p^beta1 and importance (1-p)^beta2, both detached."""

import math

import naive_reference as naive
import pytest
import torch

from unlearnkit.methods import get_method
from unlearnkit.methods.losses import answer_mask, token_logprobs
from unlearnkit.methods.satimp import satimp_loss, satimp_weights


def naive_satimp(model, beta1, beta2):
    terms = []
    for ids, labels in naive.forget_examples():
        for lp in naive.answer_token_logprobs(model, ids, labels):
            p = math.exp(lp)
            terms.append(p ** beta1 * (1 - p) ** beta2 * lp)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta1, beta2", [(5.0, 1.0), (1.0, 2.0), (0.0, 0.5)])
def test_satimp_forget_loss_matches_token_by_token(beta1, beta2):
    model = naive.memorised()
    method = get_method("satimp", beta1=beta1, beta2=beta2, retain_loss=None, forget_weight=1.0)
    method.prepare(model, [naive.forget_batch()])
    loss, _ = method.loss(model, naive.forget_batch(), None)
    assert loss.item() == pytest.approx(naive_satimp(model, beta1, beta2), abs=1e-6)
    assert abs(loss.item()) > 1e-3


def test_satimp_defaults_are_the_config_ones_with_retain_nll():
    # SatImp.yaml: beta1 5, beta2 1, gamma (forget) 0.1, alpha (retain) 1, NLL
    method = get_method("satimp")
    assert method.params() == {"beta1": 5.0, "beta2": 1.0, "forget_weight": 0.1, "retain_weight": 1.0,
                               "retain_loss": "nll"}
    model = naive.memorised()
    method.prepare(model, [naive.forget_batch()])
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want = 0.1 * naive_satimp(model, 5.0, 1.0) + naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_satimp_gradient_uses_both_weights_as_constants():
    # d/dz_t [sg(w) log p_y] = w * (onehot(y) - softmax(z_t)), w = p_y^beta1 * (1 - p_y)^beta2
    torch.manual_seed(1)
    batch = naive.forget_batch()
    logits = (3 * torch.randn(*batch["input_ids"].shape, naive.VOCAB, dtype=torch.float64)).requires_grad_()
    labels = batch["labels"]
    beta1, beta2 = 2.0, 3.0
    satimp_loss(token_logprobs(logits, labels), answer_mask(labels), beta1, beta2).backward()
    n_tokens = int((labels[:, 1:] != -100).sum())
    for row, t in ((r, t) for r in range(labels.shape[0]) for t in range(1, labels.shape[1])):
        y = int(labels[row, t])
        if y == -100:
            continue
        p = torch.softmax(logits[row, t - 1].detach(), dim=-1)
        weight = p[y] ** beta1 * (1 - p[y]) ** beta2
        want = -weight * p / n_tokens
        want[y] += weight / n_tokens
        assert torch.allclose(logits.grad[row, t - 1], want, atol=1e-12)


def test_importance_weight_orders_tokens_opposite_to_saturation():
    # saturation alone (beta2 = 0) is WGA: higher weight for the likelier token; importance alone the reverse
    model = naive.memorised()
    batch = naive.forget_batch()
    with torch.no_grad():
        logprobs = token_logprobs(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                  batch["labels"])
    mask = answer_mask(batch["labels"])
    wga = get_method("wga", beta=2.0, retain_loss=None)
    only_sat = get_method("satimp", beta1=2.0, beta2=0.0, retain_loss=None, forget_weight=1.0)
    for method in (wga, only_sat):
        method.prepare(model, [batch])
    assert only_sat.loss(model, batch, None)[0].item() == pytest.approx(wga.loss(model, batch, None)[0].item(),
                                                                       abs=1e-7)
    p = logprobs[mask].exp()
    order = p.argsort()
    assert torch.all(satimp_weights(logprobs[mask], 1.0, 0.0)[order].diff() >= 0)
    assert torch.all(satimp_weights(logprobs[mask], 0.0, 1.0)[order].diff() <= 0)
