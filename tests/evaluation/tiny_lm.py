"""Test helpers: a 2-layer, 32-wide Llama with a tokenizer trained on the given texts and a plain-prompt formatter;
a few training steps on one batch; the comparison of two sets of answer scores."""

import pytest
import torch
from transformers import LlamaForCausalLM

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.models.tiny import tiny_config, train_tokenizer


def tiny_lm(texts: list[str], seed: int = 0) -> tuple[LlamaForCausalLM, QAFormatter]:
    tokenizer = train_tokenizer(texts, vocab_size=300)
    formatter = QAFormatter(tokenizer, max_length=96, template="plain")
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size=32, layers=2, heads=2)), formatter


def fit(model, batch: dict, steps: int, lr: float = 1e-2) -> None:
    """Adam steps on one batch: the model learns some answers (they end early) but not every one."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()


def assert_same_scores(scores: dict, reference: dict, pairs, tol: float) -> None:
    """Log-probs and Min-K%++ moments within ``tol``, argmax matches exactly, for every pair."""
    for pair in pairs:
        assert scores[pair].token_logprobs == pytest.approx(reference[pair].token_logprobs, abs=tol)
        assert scores[pair].argmax_match == reference[pair].argmax_match
        assert scores[pair].token_mu == pytest.approx(reference[pair].token_mu, abs=tol)
        assert scores[pair].token_sigma == pytest.approx(reference[pair].token_sigma, abs=tol)
