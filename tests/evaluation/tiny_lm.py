"""A 2-layer, 32-wide Llama with a tokenizer trained on the given texts and a plain-prompt formatter (test helper)."""

import torch
from transformers import LlamaForCausalLM

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.models.tiny import tiny_config, train_tokenizer


def tiny_lm(texts: list[str], seed: int = 0) -> tuple[LlamaForCausalLM, QAFormatter]:
    tokenizer = train_tokenizer(texts, vocab_size=300)
    formatter = QAFormatter(tokenizer, max_length=96, template="plain")
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size=32, layers=2, heads=2)), formatter
