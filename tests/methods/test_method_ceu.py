"""CE-U: the loss against a token-by-token recomputation (OpenUnlearning ``cross_entropy_unlearning_loss``:
cross-entropy against softmax(detached logits with the true token at -inf), averaged over the answer tokens after
the first ``ignore_first_n_answer_tokens``, arXiv:2503.01224), and its target distribution."""

import math

import naive_reference as naive
import pytest
import torch

from unlearnkit.methods import get_method
from unlearnkit.methods.ceu import ceu_loss, without_first_answer_tokens


def naive_ceu(model, skip):
    """Mean over every answer token but each answer's first ``skip`` of -sum_{v != y} q(v) log p(v), with
    q(v) = p(v) / (1 - p(y))."""
    terms = []
    for ids, labels in naive.forget_examples():
        for logp, y in naive.answer_token_rows(model, ids, labels)[skip:]:
            rest = 1 - math.exp(logp[y])
            terms.append(-sum(math.exp(lp) / rest * lp for v, lp in enumerate(logp) if v != y))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("skip", [0, 1, 2])
def test_ceu_loss_matches_token_by_token(skip):
    model = naive.memorised()
    method = get_method("ceu", ignore_first_n_answer_tokens=skip)
    assert not method.uses_retain and not method.needs_reference_model
    loss, _ = method.loss(model, naive.forget_batch(), None)
    assert loss.item() == pytest.approx(naive_ceu(model, skip), abs=1e-5)


def test_ceu_default_skips_the_first_answer_token():
    assert get_method("ceu").params() == {"ignore_first_n_answer_tokens": 1}
    labels = naive.forget_batch()["labels"]
    kept = without_first_answer_tokens(labels, 1)
    for row, (_, answer, _) in enumerate(naive.FORGET):
        assert [t for t in kept[row].tolist() if t != -100] == answer[1:]


def test_gradient_is_softmax_minus_the_target_that_excludes_the_true_token():
    # d CE(z, q) / dz = softmax(z) - q, with q = p renormalised without y (q(y) = 0): the true logit goes down by p(y)
    torch.manual_seed(0)
    batch = naive.forget_batch()
    labels = without_first_answer_tokens(batch["labels"], 1)
    logits = (2 * torch.randn(*labels.shape, naive.VOCAB, dtype=torch.float64)).requires_grad_()
    ceu_loss(logits, labels).backward()
    n_scored = int((labels[:, 1:] != -100).sum())
    for row in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            y = int(labels[row, t])
            if y == -100:
                assert torch.all(logits.grad[row, t - 1] == 0)  # prompt, padding and skipped tokens: no gradient
                continue
            p = torch.softmax(logits[row, t - 1].detach(), dim=-1)
            q = p / (1 - p[y])
            q[y] = 0.0
            assert torch.allclose(logits.grad[row, t - 1], (p - q) / n_scored, rtol=0, atol=1e-8)  # float32 inside
            assert logits.grad[row, t - 1, y].item() == pytest.approx(p[y].item() / n_scored, rel=1e-5)


def test_batch_with_nothing_scored_contributes_zero():
    model = naive.tiny_llama()
    batch = naive.forget_batch([2])  # a one-token answer plus EOS: nothing left after skipping 2
    loss, _ = get_method("ceu", ignore_first_n_answer_tokens=2).loss(model, batch, None)
    assert loss.item() == 0.0
    loss.backward()
