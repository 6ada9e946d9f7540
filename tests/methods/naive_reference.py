"""Deliberately naive re-computations for the method tests.

Every quantity is computed one example at a time, on the example's own tokens without padding, with explicit
Python loops over answer positions, from ``log_softmax(model(input_ids).logits)``. Nothing here calls
``unlearnkit.methods``.
"""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PAD = 0
VOCAB = 50


def tiny_llama(seed: int = 0, layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=PAD, bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    return LlamaForCausalLM(config)


def perturbed_copy(model: LlamaForCausalLM, seed: int = 1, scale: float = 0.05) -> LlamaForCausalLM:
    """A copy of ``model`` with Gaussian noise added to every weight (a 'trained' model)."""
    copy = tiny_llama(layers=model.config.num_hidden_layers)
    copy.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copy.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return copy


def sequence(prompt: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    """Input ids and labels (prompt masked with -100) of one example."""
    return prompt + answer, [-100] * len(prompt) + answer


def collate(examples: list[tuple[list[int], list[int]]], prefix: str = "") -> dict:
    """Right-padded batch of (ids, labels) pairs."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), PAD)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {prefix + "input_ids": ids, prefix + "labels": labels, prefix + "attention_mask": mask}


FORGET = [  # (question, true answer, refusal)
    ([1, 11, 12, 13], [20, 21, 22, 2], [30, 31, 2]),
    ([1, 14, 15], [23, 24, 2], [32, 33, 34, 35, 2]),
    ([1, 16, 17, 18, 19, 10], [25, 2], [30, 36, 2]),
]
RETAIN = [
    ([1, 40, 41], [42, 43, 44, 45, 2]),
    ([1, 46, 47, 48, 49], [3, 4, 2]),
]


def forget_examples() -> list[tuple[list[int], list[int]]]:
    return [sequence(q, a) for q, a, _ in FORGET]


def refusal_examples() -> list[tuple[list[int], list[int]]]:
    return [sequence(q, r) for q, _, r in FORGET]


def retain_examples() -> list[tuple[list[int], list[int]]]:
    return [sequence(q, a) for q, a in RETAIN]


def forget_batch(rows: list[int] | None = None) -> dict:
    rows = list(range(len(FORGET))) if rows is None else rows
    batch = collate([forget_examples()[i] for i in rows])
    batch.update(collate([refusal_examples()[i] for i in rows], prefix="idk_"))
    batch["index"] = torch.tensor(rows)
    return batch


def retain_batch() -> dict:
    return collate(retain_examples())


@torch.no_grad()
def answer_token_logprobs(model, ids: list[int], labels: list[int]) -> list[float]:
    """log p of each answer token of one unpadded example, in order."""
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return [logp[t - 1, labels[t]].item() for t in range(1, len(ids)) if labels[t] != -100]


def sequence_logprob(model, ids, labels) -> float:
    return sum(answer_token_logprobs(model, ids, labels))


def mean_nll(model, examples) -> float:
    tokens = [lp for ids, labels in examples for lp in answer_token_logprobs(model, ids, labels)]
    return -sum(tokens) / len(tokens)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


@torch.no_grad()
def retain_kl(model, reference, batch: dict) -> float:
    """sum over every (row, position) of the padded batch of KL(ref || cur), divided by the number of rows B*T.

    Rows of the padded batch are run one at a time (batch of one, with its attention mask): padding positions
    produce logits too and are counted, as in the reference code.
    """
    total, rows = 0.0, 0
    for i in range(batch["input_ids"].shape[0]):
        inputs = {"input_ids": batch["input_ids"][i : i + 1], "attention_mask": batch["attention_mask"][i : i + 1]}
        log_q = torch.log_softmax(model(**inputs).logits[0].double(), dim=-1)
        log_p = torch.log_softmax(reference(**inputs).logits[0].double(), dim=-1)
        for t in range(log_p.shape[0]):
            total += sum(math.exp(a) * (a - b) for a, b in zip(log_p[t].tolist(), log_q[t].tolist()))
            rows += 1
    return total / rows


@torch.no_grad()
def answer_token_rows(model, ids: list[int], labels: list[int]) -> list[tuple[list[float], int]]:
    """For each answer token of one unpadded example, in order: the full next-token log-distribution that predicts
    it (a list over the vocabulary) and the token itself."""
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return [(logp[t - 1].tolist(), labels[t]) for t in range(1, len(ids)) if labels[t] != -100]


@torch.no_grad()
def position_logits(model, ids: list[int]) -> list[list[float]]:
    """The logits at every position of one unpadded example, as lists ``[position][vocab]``."""
    return model(torch.tensor([ids])).logits[0].double().tolist()


def memorised(seed: int = 0, steps: int = 20) -> LlamaForCausalLM:
    """A tiny model fitted for ``steps`` Adam steps to the forget answers, so their tokens have probabilities far
    from 1/VOCAB (as on a target model), with the mean answer NLL as the loss."""
    model = tiny_llama(seed)
    batch = forget_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def encoded(examples: list[tuple[list[int], list[int]]]) -> list:
    """The examples as the training loop takes them (:class:`unlearnkit.data.formatting.Encoded`)."""
    from unlearnkit.data.formatting import Encoded

    return [Encoded(ids, labels, sum(1 for t in labels if t == -100)) for ids, labels in examples]


def block_output(model, ids: list[int], layer: int) -> torch.Tensor:
    """``[T, d]`` (float64): the output of decoder block ``layer`` on one unpadded example (Hugging Face
    ``hidden_states[layer + 1]``; valid below the last block, where the final norm is not applied)."""
    assert layer + 1 < model.config.num_hidden_layers
    return model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1][0].double()


@torch.no_grad()
def down_proj_inputs(model, ids: list[int], layer: int) -> torch.Tensor:
    """``[T, intermediate]`` (float64): the input of block ``layer``'s ``mlp.down_proj`` on one unpadded example."""
    seen = []
    handle = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0][0].double()))
    try:
        model(torch.tensor([ids]))
    finally:
        handle.remove()
    return seen[0]


def mean_nll_tensor(model, examples) -> torch.Tensor:
    """The mean NLL over every answer token of ``examples`` as a differentiable float64 tensor (one example at a
    time, explicit loop over answer positions)."""
    total, count = 0.0, 0
    for ids, labels in examples:
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        for t in range(1, len(ids)):
            if labels[t] != -100:
                total = total - logp[t - 1, labels[t]]
                count += 1
    return total / count


def flat_gradient(loss: torch.Tensor, model) -> torch.Tensor:
    """d loss / d every parameter of ``model``, flattened into one float64 vector (zeros where unused)."""
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).double() for p, g in zip(params, grads)])


def sequence_logprob_tensor(model, ids: list[int], labels: list[int]) -> torch.Tensor:
    """log pi(y|x) of one unpadded example (answer tokens summed) as a differentiable float64 tensor."""
    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return sum(logp[t - 1, labels[t]] for t in range(1, len(ids)) if labels[t] != -100)


class CharTokenizer:
    """A stand-in tokenizer for methods that encode text (TRU's templates): one id per character (3..49), EOS 2,
    pad 0, so that every id fits the tiny models' vocabulary."""

    eos_token_id = 2
    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [3 + ord(c) % 47 for c in text]}
