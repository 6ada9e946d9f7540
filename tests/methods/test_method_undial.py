"""UNDIAL: the loss against a token-by-token recomputation (OpenUnlearning ``compute_undial_loss``: cross-entropy
of the model against softmax(z_ref - beta * onehot(y)), averaged over the batch's answer tokens,
arXiv:2402.10052), and its target: only the true token's logit is lowered, by beta."""

import math

import naive_reference as naive
import pytest
import torch

from unlearnkit.methods import get_method
from unlearnkit.methods.undial import undial_targets


def naive_undial(model, reference, beta):
    terms = []
    for ids, labels in naive.forget_examples():
        current = naive.answer_token_rows(model, ids, labels)
        teacher = naive.answer_token_rows(reference, ids, labels)
        for (logp, y), (ref_logp, y_ref) in zip(current, teacher):
            assert y == y_ref
            adjusted = [lr - (beta if v == y else 0.0) for v, lr in enumerate(ref_logp)]
            norm = math.log(sum(math.exp(a) for a in adjusted))
            terms.append(-sum(math.exp(a - norm) * lp for a, lp in zip(adjusted, logp)))
    return sum(terms) / len(terms)


def prepared(reference, **params):
    method = get_method("undial", **params)
    method.prepare(reference, [naive.forget_batch()], reference_model=reference)
    return method


@pytest.mark.parametrize("beta", [0.0, 3.0, 10.0])
def test_undial_loss_matches_token_by_token(beta):
    reference = naive.memorised()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(reference, beta=beta)
    loss, _ = method.loss(model, naive.forget_batch(), None)
    assert loss.item() == pytest.approx(naive_undial(model, reference, beta), abs=1e-5)


def test_undial_defaults_hold_a_reference_and_no_retain_term():
    # UNDIAL.yaml: beta 10, gamma 1, alpha 0 (OpenUnlearning multiplies an NLL retain term by 0; here none is run)
    method = get_method("undial")
    assert method.needs_reference_model and not method.uses_retain
    assert {k: method.params()[k] for k in ("beta", "forget_weight", "retain_weight", "retain_loss")} == \
        {"beta": 10.0, "forget_weight": 1.0, "retain_weight": 0.0, "retain_loss": None}
    with pytest.raises(ValueError, match="reference model"):
        get_method("undial").prepare(naive.tiny_llama(), [naive.forget_batch()])


def test_undial_with_retain_nll():
    reference = naive.memorised()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(reference, beta=5.0, retain_loss="nll", retain_weight=0.5)
    assert method.uses_retain
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want = naive_undial(model, reference, 5.0) + 0.5 * naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_target_lowers_only_the_true_token_by_beta():
    torch.manual_seed(0)
    logits = 2 * torch.randn(4, naive.VOCAB)
    labels = torch.tensor([3, 7, 7, 0])
    beta = 2.5
    targets = undial_targets(logits, labels, beta)
    original = torch.softmax(logits, dim=-1)
    ratio = targets / original  # the same factor for every other token, exp(-beta) times it for the true token
    for row, y in enumerate(labels.tolist()):
        others = torch.cat([ratio[row, :y], ratio[row, y + 1:]])
        assert torch.allclose(others, others[0].expand_as(others), rtol=1e-5)
        assert ratio[row, y].item() == pytest.approx(others[0].item() * math.exp(-beta), rel=1e-5)
        assert targets[row].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_at_beta_zero_the_initial_model_is_a_fixed_point():
    # the target is then the model's own distribution: cross-entropy is minimal there, the gradient vanishes;
    # with beta > 0 the first step lowers the forget tokens' probability
    reference = naive.memorised()
    model = naive.perturbed_copy(reference, scale=0.0)
    loss, _ = prepared(reference, beta=0.0).loss(model, naive.forget_batch(), None)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert max(g.abs().max().item() for g in grads) < 1e-5
    loss, _ = prepared(reference, beta=10.0).loss(model, naive.forget_batch(), None)
    loss.backward()
    before = naive.sequence_logprob(model, *naive.forget_examples()[0])
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(1e-2 * p.grad)
    assert naive.sequence_logprob(model, *naive.forget_examples()[0]) < before
