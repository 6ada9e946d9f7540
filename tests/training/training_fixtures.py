"""Tiny models, hand-made examples and small objectives shared by the training tests and the 2-process script."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.data.formatting import IGNORE_INDEX, Encoded
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.params import MethodParams

PAD = 0
VOCAB = 64


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=PAD)
    return LlamaForCausalLM(config)


def make_examples(n: int, seed: int = 0) -> list[Encoded]:
    """``n`` random QA examples with prompts of 2-4 tokens and answers of 2-5 tokens ending in EOS (id 2)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [1] + [rng.randrange(4, VOCAB) for _ in range(rng.randint(1, 3))]
        answer = [rng.randrange(4, VOCAB) for _ in range(rng.randint(1, 4))] + [2]
        out.append(Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, len(prompt)))
    return out


def per_example_nll(model, batch: dict, prefix: str = "") -> torch.Tensor:
    """For each row, the mean NLL over its answer tokens (shape [batch])."""
    logits = model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"]).logits
    labels = batch[prefix + "labels"][:, 1:]
    token_nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                reduction="none")
    mask = (labels != IGNORE_INDEX).float()
    return (token_nll * mask).sum(1) / mask.sum(1)


class ExampleMeanNLL(UnlearningMethod):
    """Mean over the micro-batch's examples of each example's mean answer-token NLL (sign=-1: gradient ascent)."""

    name = "test-nll"
    summary = citation = "test objective"

    class Params(MethodParams):
        sign: float = Field(1.0, description="1: descent on the NLL; -1: gradient ascent")

    def __init__(self, sign: float = 1.0):
        super().__init__(sign=sign)
        self._calls = 0

    def loss(self, model, forget_batch, retain_batch):
        self._calls += 1
        nll = per_example_nll(model, forget_batch).mean()
        return self.sign * nll, {"forget_nll": float(nll.detach())}


class NoisyGradDiff(UnlearningMethod):
    """−NLL(forget) + NLL(retain), each an example mean, times a random factor drawn from the global generator
    (so that runs only agree if the loop seeds randomness the same way)."""

    name = "test-noisy-graddiff"
    summary = citation = "test objective"
    uses_retain = True

    def loss(self, model, forget_batch, retain_batch):
        assert retain_batch["input_ids"].shape[0] == forget_batch["input_ids"].shape[0]
        forget_nll = per_example_nll(model, forget_batch).mean()
        retain_nll = per_example_nll(model, retain_batch).mean()
        factor = 1.0 + 0.5 * torch.rand(())
        return factor * (retain_nll - forget_nll), {"forget_nll": float(forget_nll.detach()),
                                                      "retain_nll": float(retain_nll.detach())}


def run_two_process_setup(output_dir, gradient_accumulation_steps: int, n_forget: int):
    """The run compared between 2 processes × accumulation 1 and 1 process × accumulation 2.

    2 examples per micro-batch, 2 slots, so steps of 4 examples. ``n_forget=7``: steps of 4 and 3 (chunks of 2
    and 1); ``n_forget=5``: steps of 4 and 1, where the second process has no data. 5 retain examples, so the
    retain stream wraps around inside an epoch; random loss factors; clipping on.
    """
    from unlearnkit.training import TrainConfig, train

    model = tiny_llama(seed=3)
    config = TrainConfig(epochs=2, batch_size=2, gradient_accumulation_steps=gradient_accumulation_steps,
                         learning_rate=1e-2, warmup_steps=1, max_grad_norm=1.0, seed=5)
    train(model, NoisyGradDiff(), make_examples(n_forget, seed=1), make_examples(5, seed=2), None, PAD, config,
          output_dir, progress=False)
    return model


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class InterruptAt(NoisyGradDiff):
    """NoisyGradDiff that raises KeyboardInterrupt at its ``at``-th loss call."""

    def __init__(self, at: int):
        self._at, self._calls = at, 0

    def loss(self, model, forget_batch, retain_batch):
        self._calls += 1
        if self._calls == self._at:
            raise KeyboardInterrupt
        return super().loss(model, forget_batch, retain_batch)
