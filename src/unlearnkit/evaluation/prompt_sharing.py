"""Teacher-forced scoring that runs each prompt once for all the answers that follow it.

The TOFU suite scores up to seven answers after one question (the gold, the paraphrased and five perturbed
answers), and with a chat template the prompt is often longer than the answer: on the synthetic task 63% of the
teacher-forced tokens are prompt tokens. Here the prompts of a batch run once, with the model's KV cache, and the
cache is copied to every answer row, which then runs only the rest of its sequence. The cached part is each prompt
up to the batch's shortest prompt less one token, so a batch may hold prompts of any lengths: a longer prompt's
extra tokens run in its answer rows (the batching weighs that against one more batch: on real TOFU with SmolLM2, 30
batches instead of 49 for about the same tokens, where a forward call on a CPU costs as much as a few dozen
tokens). The output layer runs on the answer rows only (``logits_to_keep=1`` for the prompt pass). The opening
every prompt starts with (a chat template's system prompt) runs once for all batches, and the prompt pass starts
from its cache (:mod:`~unlearnkit.evaluation.shared_prefix`).

Exactness: the cached parts of a batch have one length, so neither they nor the cache carry padding; the answer
rows are right-padded, the positions are the cache's own, and each answer token sees the same keys at the same
positions (and cache columns) as in a full forward pass of its (prompt + answer) sequence: the same computation in
exact arithmetic, with no hand-made positions or masks with holes. The matrix products run on other shapes, though
(a prompt pass of a few rows, an answer pass of the answer tokens), and kernels may round some shapes
differently, so a few log-probs can differ from a full pass's at the rounding level of the model's dtype (measured
on the CPU in float32: up to about 1e-6; on the TOFU-suite benchmark 80 of 1244 answers at their first two
positions, 3e-8 at most in an aggregate). The same holds between any two batchings under SDPA attention. Results
stay deterministic: the batches are a function of the items, so a repeated, resumed or sharded evaluation gets the
same bits.
"""

from __future__ import annotations

import inspect
import math
from typing import Hashable, Sequence, TypeVar

import torch

from unlearnkit.data.formatting import Encoded, collate
from unlearnkit.evaluation.shared_prefix import SharedPrefix

K = TypeVar("K", bound=Hashable)
# the fixed cost of a batch's forward calls (prompt pass and answer pass) in tokens' worth of compute: on a CPU about
# 48 (measured with SmolLM2-135M on one thread: a call of one token takes 57 ms, each further token 2.4 ms), so
# batches with less padding win over full ones; on an accelerator a call costs as much as hundreds of tokens (kernel
# launches), and full batches win
CALL_COST = 48.0
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


def shared_prompt_batches(encoded: dict[K, Encoded], batch_size: int, call_cost: float = CALL_COST,
                          opening: int = 0) -> list[list[K]]:
    """Batches of at most ``batch_size`` items, each question's answers kept together where they fit.

    Items are grouped by prompt, each group's answers ordered longest first, and the groups ordered by their longest
    sequence (prompt + answer, longest first: a batch's rows are padded to its longest, see
    :func:`forward_shared_prompts`), then cut into batches where they run the fewest tokens
    (:func:`_cheapest_cuts`; a group cut in two runs its prompt in both batches). Deterministic for a given
    ``encoded`` order, so every process of a group deals out the same batches.
    """
    groups: dict[tuple[int, ...], list[K]] = {}
    for key, enc in encoded.items():
        groups.setdefault(prompt_of(enc), []).append(key)
    for keys in groups.values():
        keys.sort(key=lambda key: len(encoded[key].input_ids), reverse=True)
    ordered = sorted(groups.values(), key=lambda keys: len(encoded[keys[0]].input_ids), reverse=True)
    return _cheapest_cuts([key for keys in ordered for key in keys], encoded, batch_size, call_cost, opening)


def _batch_cost(examples: Sequence[Encoded], opening: int) -> int:
    """The tokens :func:`forward_shared_prompts` runs for a batch: each distinct cached part once (the prompts up
    to the batch's shortest prompt less one token, without the shared ``opening``), and every row's rest padded to
    the longest rest."""
    cut = min(enc.prompt_length for enc in examples) - 1
    cached = {tuple(enc.input_ids[:cut]) for enc in examples}
    return len(cached) * (cut - opening) + len(examples) * max(len(enc.input_ids) - cut for enc in examples)


def _cheapest_cuts(rows: list[K], encoded: dict[K, Encoded], batch_size: int, call_cost: float,
                   opening: int = 0) -> list[list[K]]:
    """``rows`` (in order) cut into consecutive batches of at most ``batch_size`` rows that run the fewest tokens in
    all: :func:`_batch_cost` per batch plus ``call_cost`` tokens' worth for its two forward calls.

    Filling every batch to ``batch_size`` pads short answers to long ones (a fifth of the tokens run on TOFU with a
    chat template) and runs the longer prompts' extra tokens once per answer; a cut costs a prompt run again when it
    splits a question's answers, and a call. Dynamic programming over the cut points, O(len(rows) × batch_size²).
    """
    best = [0.0] + [math.inf] * len(rows)  # best[j]: the cheapest cost of rows[:j]
    start_of = [0] * (len(rows) + 1)
    for end in range(1, len(rows) + 1):
        for start in range(end - 1, max(-1, end - batch_size - 1), -1):
            cost = best[start] + _batch_cost([encoded[key] for key in rows[start:end]], opening) + call_cost
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
    shared: SharedPrefix | None = None,
) -> tuple[list[torch.Tensor], object, list[Encoded]]:
    """Run a batch from :func:`shared_prompt_batches`: each distinct prompt once, then every answer on its cache.

    The cached part of every row is its prompt up to the batch's shortest prompt less one token (``cut``), so that
    the cached parts have one length and carry no padding, and every row's positions are the cache's own; the answer
    pass runs the rest of each row: the prompt tokens after the cut (one for the shortest prompts: the last, whose
    logits predict the first answer token) and the answer, right-padded. Every logit that predicts an answer token
    thus comes out of one output-layer matmul, as in a full pass. Returns, per example, the logits that predict its
    answer tokens (``[n_answer, V]``: row t predicts answer token t), the model outputs of the answer pass, and the
    views of the examples that those outputs are aligned with (the tokens from the cut on, with their prompt
    length). ``cache_name``: the forward's cache argument (:func:`cache_argument`). ``shared``: the opening every
    prompt starts with, already run (:mod:`~unlearnkit.evaluation.shared_prefix`); the prompt pass then runs only
    the tokens after it.
    """
    cut = min(enc.prompt_length for enc in examples) - 1
    opening = len(shared) if shared is not None else 0
    prefixes: dict[tuple[int, ...], int] = {}
    group_of_row = [prefixes.setdefault(tuple(enc.input_ids[:cut]), len(prefixes)) for enc in examples]
    if shared is not None and (cut < opening or any(prefix[:opening] != tuple(shared.ids) for prefix in prefixes)):
        raise ValueError("forward_shared_prompts: a prompt does not start with the shared prefix and go on after it")
    rests = [Encoded(enc.input_ids[cut:], enc.labels[cut:], enc.prompt_length - cut) for enc in examples]
    batch = collate(rests, pad_token_id, padding_side="right")
    mask, cached = batch["attention_mask"], {}
    if cut > 0:
        cache = shared.cache_for(len(prefixes)) if opening else None
        if cut > opening:  # the prompts' own tokens after the shared opening
            prefix_ids = torch.tensor([prefix[opening:] for prefix in prefixes], dtype=torch.long, device=device)
            cached_mask = torch.ones((len(prefixes), cut), dtype=torch.long, device=device)
            prefix_out = model(input_ids=prefix_ids, attention_mask=cached_mask, use_cache=True, logits_to_keep=1,
                               **({cache_name: cache} if cache is not None else {}))
            cache = prefix_out[cache_name]
        # CPU indices index a cache on any device (also one spread over several GPUs by a device map)
        cache.batch_select_indices(torch.tensor(group_of_row, dtype=torch.long))
        mask = torch.cat([torch.ones((len(examples), cut), dtype=mask.dtype), mask], dim=1)
        cached = {cache_name: cache, "use_cache": True}
    outputs = model(input_ids=batch["input_ids"].to(device), attention_mask=mask.to(device),
                    output_hidden_states=output_hidden_states, **cached)
    step_logits = [outputs.logits[row, rest.prompt_length - 1 : len(rest.input_ids) - 1]
                   for row, rest in enumerate(rests)]
    return step_logits, outputs, rests
