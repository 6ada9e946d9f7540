"""The built-in ``tiny`` base: a small Llama trained from scratch, with a BPE tokenizer trained on the task's text.

Fully offline and seconds to build; big enough (about 2M parameters) to memorise a few hundred TOFU-style QA
pairs in a minute on two CPU cores, which is what the demo and the tests need. The weights are random until
``unlearnkit prepare`` fine-tunes them: "tiny" is a base, not a pretrained model.
"""

from __future__ import annotations

from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic for the same texts)."""
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_config(vocab_size: int, hidden_size: int = 192, layers: int = 4, heads: int = 4) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 8 // 3 // 16 * 16,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def build_tiny(texts: Iterable[str], seed: int = 0, vocab_size: int = 4096, hidden_size: int = 192,
               layers: int = 4, heads: int = 4) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A freshly initialised tiny Llama and a tokenizer trained on ``texts``."""
    tokenizer = train_tokenizer(texts, vocab_size)
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS.values()))
    assert ids == [0, 1, 2, 3], ids  # the config's special ids depend on this order
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size, layers, heads))
    return model, tokenizer
