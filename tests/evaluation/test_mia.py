"""MIA statistics against values worked out by hand, scikit-learn, zlib itself and a manual autograd computation.

Toy distributions: p = (1/2, 1/4, 1/4) has μ = Σ p log p = −1.5 ln 2 and σ² = Σ p (log p)² − μ² = (2.5 − 2.25)(ln 2)²,
so σ = 0.5 ln 2, and the z-scores of its first two tokens are (−ln 2 + 1.5 ln 2)/(0.5 ln 2) = 1 and
(−2 ln 2 + 1.5 ln 2)/(0.5 ln 2) = −1.
"""

import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from transformers import LlamaForCausalLM

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import mia
from unlearnkit.evaluation.scoring.gradients import gradient_norms
from unlearnkit.evaluation.scoring.passes import next_token_moments
from unlearnkit.models.tiny import tiny_config, train_tokenizer

LN2 = math.log(2)
HALF_QUARTER = [0.5, 0.25, 0.25]


def logits_of(probs):
    return torch.tensor([[math.log(p) if p > 0 else -math.inf for p in probs]], dtype=torch.float64)


def test_next_token_moments_by_hand():
    mu, sigma = next_token_moments(logits_of(HALF_QUARTER))
    assert mu.shape == (1,) and sigma.shape == (1,)
    assert mu.item() == pytest.approx(-1.5 * LN2, abs=1e-12)
    assert sigma.item() == pytest.approx(0.5 * LN2, abs=1e-12)


def test_next_token_moments_batch_matches_written_out_sums():
    probs = [0.7, 0.2, 0.1]
    mu_hand = sum(p * math.log(p) for p in probs)
    var_hand = sum(p * math.log(p) ** 2 for p in probs) - mu_hand**2
    logits = torch.tensor([[math.log(p) + 3.0 for p in probs], [0.0, 0.0, 0.0]], dtype=torch.float64)  # shift-free
    mu, sigma = next_token_moments(logits)
    assert mu.tolist() == pytest.approx([mu_hand, -math.log(3)], abs=1e-12)
    assert sigma.tolist() == pytest.approx([math.sqrt(var_hand), 0.0], abs=1e-7)
    # float32 logits give float32 moments; a 1-D row gives scalars
    mu32, sigma32 = next_token_moments(logits[0].float())
    assert mu32.dtype == torch.float32 and mu32.shape == () and mu32.item() == pytest.approx(mu_hand, abs=1e-5)


def test_next_token_moments_with_impossible_tokens_is_finite():
    mu, sigma = next_token_moments(logits_of([0.5, 0.5, 0.0]))
    assert mu.item() == pytest.approx(-LN2, abs=1e-12) and sigma.item() == pytest.approx(0.0, abs=1e-7)


def test_min_k_plus_plus_by_hand():
    # z = [1, -1, 0]: positions 1-2 under (1/2, 1/4, 1/4), position 3 under (1/2, 1/2, 0) with σ = 0 → clamp
    rows = logits_of(HALF_QUARTER).repeat(3, 1)
    rows[2] = logits_of([0.5, 0.5, 0.0])[0]
    mu, sigma = next_token_moments(rows)
    logprobs = [-LN2, -2 * LN2, -LN2]
    # T = 3, k = 0.4: int(1.2) = 1 lowest z = -1
    assert mia.min_k_plus_plus_score(logprobs, mu.tolist(), sigma.tolist()) == pytest.approx(1.0, abs=1e-6)
    # k = 0.7: int(2.1) = 2 lowest z = [-1, 0]
    assert mia.min_k_plus_plus_score(logprobs, mu.tolist(), sigma.tolist(), k=0.7) == pytest.approx(0.5, abs=1e-6)
    # k = 1.0: all three, mean 0
    assert mia.min_k_plus_plus_score(logprobs, mu.tolist(), sigma.tolist(), k=1.0) == pytest.approx(0.0, abs=1e-6)


def test_min_k_plus_plus_clamps_the_variance_and_handles_empty():
    # σ = 0 → σ² clamped to 1e-6 → σ = 1e-3: z = (−1 − (−1.5)) / 1e-3 = 500
    assert mia.min_k_plus_plus_score([-1.0], [-1.5], [0.0]) == pytest.approx(-500.0)
    assert mia.min_k_plus_plus_score([], [], []) == 0.0
    with pytest.raises(UnlearnkitError, match="one length"):
        mia.min_k_plus_plus_score([-1.0, -2.0], [-1.5], [0.5])


def test_loss_zlib_and_reference_by_hand():
    lp = [-1.0, -2.0, -3.0]
    assert mia.loss_score(lp) == pytest.approx(2.0)
    text = "the cat sat on the mat, the cat sat on the mat"
    compressed = len(zlib.compress(bytes(text, "utf-8")))
    assert mia.zlib_entropy(text) == compressed
    assert mia.zlib_score(lp, text) == pytest.approx(2.0 / compressed)
    accented = "héllo wörld"
    assert mia.zlib_score(lp, accented) == pytest.approx(2.0 / len(zlib.compress(accented.encode("utf-8"))))
    assert mia.zlib_score(lp, "") == pytest.approx(2.0 / len(zlib.compress(b"")))  # zlib header: never 0
    assert mia.reference_score([-1.0, -1.0], [-2.0, -4.0]) == pytest.approx(1.0 - 3.0)
    with pytest.raises(UnlearnkitError, match="no scored tokens"):
        mia.loss_score([])


def test_example_statistics_drop_the_eos_only_where_the_reference_does():
    lp, eos_lp = [-1.0, -0.2], -3.0
    text = "an answer"
    mu, sigma = [-1.5 * LN2] * 3, [0.5 * LN2] * 3
    with_eos = mia.example_statistics(lp + [eos_lp], True, text=text, mu=mu, sigma=sigma,
                                      reference_token_logprobs=[-1.0, -1.0, -1.0])
    loss = (1.0 + 0.2 + 3.0) / 3  # loss, zlib and reference keep the EOS
    assert with_eos["loss"] == pytest.approx(loss)
    assert with_eos["zlib"] == pytest.approx(loss / len(zlib.compress(text.encode("utf-8"))))
    assert with_eos["reference"] == pytest.approx(loss - 1.0)
    assert with_eos["min_k"] == pytest.approx(1.0)  # Min-K% on [-1, -0.2]: max(1, int(0.8)) = 1 token
    z_lowest = (-1.0 + 1.5 * LN2) / (0.5 * LN2)
    assert with_eos["min_k_plus_plus"] == pytest.approx(-z_lowest)
    without = mia.example_statistics(lp + [eos_lp], False)
    assert set(without) == {"loss", "min_k"} and without["min_k"] == pytest.approx(3.0)  # int(1.2) = 1: −3
    with pytest.raises(UnlearnkitError, match="both mu and sigma"):
        mia.example_statistics(lp, False, mu=[0.0, 0.0])
    with pytest.raises(UnlearnkitError, match="every scored position"):
        mia.example_statistics(lp, False, mu=[0.0], sigma=[1.0])


def test_auc_hand_count_on_four_points_and_sklearn():
    # forget 0.1 and 0.4, holdout 0.3 and 0.5: forget < holdout in 3 of the 4 pairs
    assert mia.mia_auc([0.1, 0.4], [0.3, 0.5]) == pytest.approx(0.75)
    # a tie counts one half: (0.5 + 1) / 2
    assert mia.mia_auc([0.3], [0.3, 0.5]) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    forget, holdout = rng.normal(0, 1, 17), rng.normal(0.5, 1, 23)
    wins = sum((f < h) + 0.5 * (f == h) for f in forget for h in holdout) / (len(forget) * len(holdout))
    labels = [0] * len(forget) + [1] * len(holdout)
    assert mia.mia_auc(forget, holdout) == pytest.approx(wins)
    assert mia.mia_auc(forget, holdout) == pytest.approx(roc_auc_score(labels, np.concatenate([forget, holdout])))


# --- gradnorm on a tiny Llama ------------------------------------------------------------------------------

PAIR = ("Who wrote The Glass Orchard?", "Mira Solen wrote it in 1998.")
TEXT = "Mira Solen was born in Oslo and writes quiet fiction about orchards."


@pytest.fixture(scope="module")
def tiny():
    tokenizer = train_tokenizer([*PAIR, TEXT, "Question: Answer:"], vocab_size=300)
    formatter = QAFormatter(tokenizer, max_length=64, template="plain")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size=32, layers=2, heads=2))
    return model, formatter


def manual_grads(model, ids, start, end):
    """Gradients of the mean NLL of tokens ids[start:end] by loss.backward() (not the code under test)."""
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    loss = F.cross_entropy(logits[start - 1 : end - 1], torch.tensor(ids[start:end]))
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return grads


def test_gradient_norm_matches_manual_autograd(tiny):
    model, formatter = tiny
    enc = formatter.encode(*PAIR)
    ids = enc.input_ids
    assert ids[-1] == formatter.eos_token_id
    grads = manual_grads(model, ids, enc.prompt_length, len(ids) - 1)  # the reference drops the EOS prediction
    mean_l2 = torch.stack([g.norm(2) for g in grads]).mean().item()
    flat = torch.cat([g.flatten() for g in grads])
    model.train()
    (got,) = gradient_norms(model, formatter, [PAIR])
    assert got == pytest.approx(mean_l2, rel=1e-5)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # .grad buffers untouched
    for p in (1, 2, math.inf):
        (global_norm,) = gradient_norms(model, formatter, [PAIR], p=p, reduction="global")
        assert global_norm == pytest.approx(torch.linalg.vector_norm(flat, ord=p).item(), rel=1e-5)
    # keeping the EOS changes the loss, hence the norm
    with_eos = manual_grads(model, ids, enc.prompt_length, len(ids))
    (got_eos,) = gradient_norms(model, formatter, [PAIR], drop_eos=False)
    assert got_eos == pytest.approx(torch.stack([g.norm(2) for g in with_eos]).mean().item(), rel=1e-5)
    assert got_eos != pytest.approx(got, rel=1e-3)


def test_gradient_norm_of_raw_text_scores_every_token_after_the_first(tiny):
    model, formatter = tiny
    ids = list(formatter.tokenizer(TEXT)["input_ids"])
    grads = manual_grads(model, ids, 1, len(ids))
    got = gradient_norms(model, formatter, [TEXT, PAIR])
    assert len(got) == 2
    assert got[0] == pytest.approx(torch.stack([g.norm(2) for g in grads]).mean().item(), rel=1e-5)


def test_gradient_norm_rejects_bad_input(tiny):
    model, formatter = tiny
    with pytest.raises(UnlearnkitError, match="p must be"):
        gradient_norms(model, formatter, [PAIR], p=3)
    with pytest.raises(UnlearnkitError, match="reduction"):
        gradient_norms(model, formatter, [PAIR], reduction="sum")
    with pytest.raises(UnlearnkitError, match="cannot score"):
        gradient_norms(model, formatter, [42])
    with pytest.raises(UnlearnkitError, match="no scored tokens"):
        gradient_norms(model, formatter, [("Who?", "")])
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with pytest.raises(UnlearnkitError, match="no trainable parameters"):
            gradient_norms(model, formatter, [PAIR])
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
