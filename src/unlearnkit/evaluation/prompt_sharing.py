"""Teacher-forced scoring that runs each prompt once for all the answers that follow it.

The TOFU suite scores up to seven answers after one question (the gold, the paraphrased and five perturbed
answers), and with a chat template the prompt is often longer than the answer: on the synthetic task 63% of the
teacher-forced tokens are prompt tokens. Here the prompts of a batch (all but their last token) run once, with the
model's KV cache, and the cache is copied to every answer row, which then runs only the prompt's last token and its
answer. The output layer runs on those rows only (``logits_to_keep=1`` for the prompt pass).

Exactness: every prompt in a batch has the same token length, so neither the prompts nor the cache carry padding,
the answer rows are right-padded, the positions are the cache's own, and each answer token sees the same keys at the
same positions as in a full forward pass of its (prompt + answer) sequence: the same computation in exact
arithmetic. The matrix products run on other shapes, though (a prompt pass of a few rows, an answer pass of the
answer tokens), and kernels may round some shapes differently, so a few log-probs can differ from a full pass's
at the rounding level of the model's dtype (measured on the CPU in float32: up to about 1e-6; on the TOFU-suite
benchmark 80 of 1244 answers at their first two positions, 3e-8 at most in an aggregate). The same holds between
any two batchings under SDPA attention. Results stay deterministic: the batches are a function of the items, so a
repeated, resumed or sharded evaluation gets the same bits.
"""

from __future__ import annotations

import inspect
import math
from itertools import groupby
from typing import Hashable, Sequence, TypeVar

import torch

from unlearnkit.data.formatting import Encoded, collate

K = TypeVar("K", bound=Hashable)
# the fixed cost of a batch's forward calls (prompt pass and answer pass) in tokens' worth of compute: on a CPU about
# as much as a few tokens, so smaller batches with less padding win; on an accelerator a call costs as much as
# hundreds of tokens (kernel launches), and full batches win
CALL_COST = 16.0
ACCELERATOR_CALL_COST = 1024.0


def call_cost(device: torch.device) -> float:
    """The fixed cost of a batch's forward calls on ``device``, in tokens' worth (see :data:`CALL_COST`)."""
    return CALL_COST if device.type == "cpu" else ACCELERATOR_CALL_COST


def cache_argument(model) -> str | None:
    """The name under which ``model``'s forward takes a KV cache (``cache`` in transformers ≥ 5.2x,
    ``past_key_values`` before), or None when prompts cannot be shared: not a decoder-only LM whose forward takes a
    cache and ``logits_to_keep``, or one whose cache holds more than attention keys and values (hybrid and
    linear-attention models keep convolution / recurrent states that cannot be copied row by row here).

    Decided from the model and its config alone, so every process of a group decides the same. A PEFT model counts
    through its base model, unless its adapter is a prompt-learning one (prefix tuning feeds its own cache).
    """
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or not _plain_kv_cache(config):
        return None
    try:
        parameters = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # a scripted or built-in forward
        return None
    if "logits_to_keep" not in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _plain_kv_cache(config) -> bool:
    """Whether the model's dynamic cache is made of key/value layers only (full or sliding-window attention)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

        layers = DynamicCache(config=config).layers
    except Exception:  # an older transformers, or a config the dynamic cache does not understand: no sharing
        return False
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def prompt_of(enc: Encoded) -> tuple[int, ...]:
    return tuple(enc.input_ids[: enc.prompt_length])


def has_shared_prompts(encoded: dict[K, Encoded]) -> bool:
    """Whether at least two items start with the same prompt (otherwise sharing saves nothing)."""
    seen: set[tuple[int, ...]] = set()
    for enc in encoded.values():
        prompt = prompt_of(enc)
        if prompt in seen:
            return True
        seen.add(prompt)
    return False


def shared_prompt_batches(encoded: dict[K, Encoded], batch_size: int, call_cost: float = CALL_COST) -> list[list[K]]:
    """Batches of at most ``batch_size`` items whose prompts all have one token length.

    Items are grouped by prompt; each group's answers are ordered longest first and kept together, groups are
    ordered by prompt length and then by their longest answer (longest first), and the items of one prompt length
    are cut into batches in that order (a group cut in two runs its prompt in both batches) where the batches run
    the fewest tokens (:func:`_cheapest_cuts`). Deterministic for a given ``encoded`` order, so every process of a
    group deals out the same batches.
    """
    groups: dict[tuple[int, ...], list[K]] = {}
    for key, enc in encoded.items():
        groups.setdefault(prompt_of(enc), []).append(key)

    def answer_length(key: K) -> int:
        return len(encoded[key].input_ids) - encoded[key].prompt_length

    for keys in groups.values():
        keys.sort(key=answer_length, reverse=True)
    ordered = sorted(groups.items(), key=lambda group: (len(group[0]), answer_length(group[1][0])), reverse=True)
    batches: list[list[K]] = []
    for _, same_length in groupby(ordered, key=lambda group: len(group[0])):
        rows = [key for _, keys in same_length for key in keys]
        batches += _cheapest_cuts(rows, encoded, batch_size, call_cost)
    return batches


def _cheapest_cuts(rows: list[K], encoded: dict[K, Encoded], batch_size: int, call_cost: float) -> list[list[K]]:
    """``rows`` (one prompt length, in order) cut into consecutive batches of at most ``batch_size`` rows that run
    the fewest tokens in all: per batch, each distinct prompt once (without its last token), every row padded to the
    batch's longest rest (last prompt token + answer), and ``call_cost`` tokens' worth for the two forward calls.

    Filling every batch to ``batch_size`` pads short answers to long ones (a fifth of the tokens run on TOFU with a
    chat template); a cut costs a prompt run again when it splits a question's answers. Dynamic programming over the
    cut points, O(len(rows) × batch_size).
    """
    best = [0.0] + [math.inf] * len(rows)  # best[j]: the cheapest cost of rows[:j]
    start_of = [0] * (len(rows) + 1)
    for end in range(1, len(rows) + 1):
        prompts: set[tuple[int, ...]] = set()
        longest = 0
        for start in range(end - 1, max(-1, end - batch_size - 1), -1):
            enc = encoded[rows[start]]
            prompts.add(prompt_of(enc))
            longest = max(longest, len(enc.input_ids) - enc.prompt_length + 1)
            cost = best[start] + len(prompts) * (enc.prompt_length - 1) + (end - start) * longest + call_cost
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    batches, end = [], len(rows)
    while end > 0:
        batches.append(rows[start_of[end] : end])
        end = start_of[end]
    return batches[::-1]


def forward_shared_prompts(
    model,
    examples: Sequence[Encoded],
    pad_token_id: int,
    device: torch.device,
    output_hidden_states: bool,
    cache_name: str,
) -> tuple[list[torch.Tensor], object, list[Encoded]]:
    """Run a batch from :func:`shared_prompt_batches`: each distinct prompt once, then every answer on its cache.

    The cached part is the prompt without its last token; the answer pass runs that last token followed by the
    answer, so every logit that predicts an answer token comes out of one output-layer matmul, as in a full pass.
    Returns, per example, the logits that predict its answer tokens (``[n_answer, V]``: row t predicts answer token
    t), the model outputs of the answer pass, and the views of the examples that those outputs are aligned with
    (the last prompt token, ``prompt_length`` 1, then the answer). ``cache_name``: the forward's cache argument
    (:func:`cache_argument`).
    """
    prefixes: dict[tuple[int, ...], int] = {}
    group_of_row = [prefixes.setdefault(prompt_of(enc)[:-1], len(prefixes)) for enc in examples]
    if len({len(prefix) for prefix in prefixes}) != 1:
        raise ValueError("forward_shared_prompts needs prompts of one token length: use shared_prompt_batches")
    rests = [Encoded(enc.input_ids[enc.prompt_length - 1 :], enc.labels[enc.prompt_length - 1 :], 1)
             for enc in examples]
    batch = collate(rests, pad_token_id, padding_side="right")
    mask, cached = batch["attention_mask"], {}
    prefix_length = len(next(iter(prefixes)))
    if prefix_length > 0:
        prefix_ids = torch.tensor(list(prefixes), dtype=torch.long, device=device)
        prefix_out = model(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids), use_cache=True,
                           logits_to_keep=1)
        cache = prefix_out[cache_name]
        # CPU indices index a cache on any device (also one spread over several GPUs by a device map)
        cache.batch_select_indices(torch.tensor(group_of_row, dtype=torch.long))
        mask = torch.cat([torch.ones((len(examples), prefix_length), dtype=mask.dtype), mask], dim=1)
        cached = {cache_name: cache, "use_cache": True}
    outputs = model(input_ids=batch["input_ids"].to(device), attention_mask=mask.to(device),
                    output_hidden_states=output_hidden_states, **cached)
    step_logits = [outputs.logits[row, : len(rest.input_ids) - 1] for row, rest in enumerate(rests)]
    return step_logits, outputs, rests
