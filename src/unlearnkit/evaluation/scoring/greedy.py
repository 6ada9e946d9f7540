"""Greedy decoding with continuous batching: a finished answer's row is taken by the next question at once.

``model.generate`` runs a batch until its longest answer ends; every row that stopped earlier is computed as padding
meanwhile, and on a CPU a decoding step costs nearly as much for 4 rows as for 16 (the weights are read once per
step either way). Here a set of questions is decoded by one loop that keeps up to ``batch_size`` rows running:
when rows end (an end token, or their token budget) they leave the batch and their KV cache, and once a quarter of
the rows are free, waiting questions join it (their prompts run in one prefill, and their cache is appended to the
running one). The number of decoding
steps is then about the total answer length over ``batch_size`` rather than the sum of each batch's longest answer.

Each step is what ``model.generate`` does for a left-padded batch (transformers' ``prepare_inputs_for_generation``):
the attention mask marks padding, position ids count a row's real tokens (``cumsum(mask) − 1``), and the next token
is the argmax of the float32 logits of the last position. Rows joining a longer or shorter running cache are
left-padded to its length (zero keys and values, masked out), and columns that are padding for every row are dropped.
The opening every prompt shares (:mod:`~unlearnkit.evaluation.scoring.shared_prefix`) runs once: a prefill starts from its
cache and left-pads the rows' own tokens after it (padding in the middle, masked out the same way).
The answers are those of ``model.generate`` up to the rounding of other matrix shapes (tested against one question at
a time).

Used for decoder-only models whose cache is made of full-attention key/value layers and whose forward takes
position ids (:func:`supports_continuous_batching`); the others decode with ``model.generate``.
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import Sequence

import torch
import torch.nn.functional as F

from unlearnkit.data.formatting import Encoded, collate
from unlearnkit.evaluation.scoring.prompt_sharing import cache_argument
from unlearnkit.evaluation.scoring.shared_prefix import SharedPrefix

# generation-config settings that make ``generate`` change the logits before its argmax, with their neutral values:
# a model that sets one (e.g. a repetition penalty) decodes with ``generate``, which applies it
LOGIT_SETTINGS = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                  "encoder_no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": 0, "guidance_scale": 1.0,
                  "bad_words_ids": None, "sequence_bias": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                  "forced_bos_token_id": None, "forced_eos_token_id": None, "exponential_decay_length_penalty": None,
                  "watermarking_config": None}


def supports_continuous_batching(model) -> str | None:
    """The forward's cache argument name when ``model`` can be decoded here, else None (decode with ``generate``):
    a cache of full-attention key/value layers only (sliding windows keep a window per row that padding would
    shift), a forward that takes ``position_ids``, and a generation config that leaves greedy decoding plain (no
    setting of :data:`LOGIT_SETTINGS` away from neutral). Decided from the model alone, the same on every process."""
    name = cache_argument(model)
    generation_config = getattr(model, "generation_config", None)
    if name is None or any(getattr(generation_config, key, None) not in (None, neutral)
                           for key, neutral in LOGIT_SETTINGS.items()):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        layers = DynamicCache(config=base.config).layers
        parameters = inspect.signature(base.forward).parameters
    except Exception:
        return None
    if not all(type(layer) is DynamicLayer for layer in layers) or "position_ids" not in parameters:
        return None
    return name


def greedy_continuous(
    model,
    cache_name: str,
    inputs: Sequence[Sequence[int]],
    budgets: Sequence[int],
    stop_ids: Sequence[int],
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
    shared: SharedPrefix | None = None,
) -> list[list[int]]:
    """Greedy continuations of every ``inputs[i]`` (token ids), at most ``budgets[i]`` new tokens each, ending at
    the first token in ``stop_ids`` (included). Questions join the running batch in the order given. ``shared``:
    the opening every input starts with (:mod:`~unlearnkit.evaluation.scoring.shared_prefix`), run once; a prefill then
    runs only the tokens after it. Call under ``torch.inference_mode()`` with the model in eval mode."""
    if shared is not None and any(list(ids[: len(shared)]) != shared.ids or len(ids) <= len(shared) for ids in inputs):
        raise ValueError("greedy_continuous: every input must start with the shared prefix and go on after it")
    stops = torch.tensor(sorted(set(stop_ids)), device=device)
    waiting = deque(range(len(inputs)))
    out: list[list[int]] = [[] for _ in inputs]
    rows: list[int] = []  # the item each running row decodes
    cache = mask = last = None
    room = max(1, batch_size // 4)  # questions join once this many rows are free: fewer, fuller prefills
    while waiting or rows:
        if waiting and (not rows or len(rows) <= batch_size - room):
            joining = [waiting.popleft() for _ in range(min(batch_size - len(rows), len(waiting)))]
            new_cache, new_mask, new_last = _prefill(model, cache_name, [inputs[i] for i in joining], pad_token_id,
                                                     device, shared)
            if rows:
                cache, mask = _append(cache, mask, new_cache, new_mask)
                last = torch.cat([last, new_last])
            else:
                cache, mask, last = new_cache, new_mask, new_last
            rows += joining
            fresh = joining  # only the joining rows have a new token; the others wait for the next step
        else:
            positions = mask.sum(dim=1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            output = model(input_ids=last[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1, **{cache_name: cache})
            cache, last = output[cache_name], output.logits[:, -1].float().argmax(dim=-1)
            fresh = rows
        # ``last`` holds each row's newest token, not yet fed: record the new ones, and let the rows that are done go
        for row, token in zip(rows[len(rows) - len(fresh):], last[len(rows) - len(fresh):].tolist()):
            out[row].append(token)
        done = torch.isin(last, stops) | torch.tensor([len(out[r]) >= budgets[r] for r in rows], device=device)
        if bool(done.any()):
            keep = (~done).nonzero().flatten()
            rows = [rows[i] for i in keep.tolist()]
            if rows:
                cache.batch_select_indices(keep.cpu())
                mask, last = mask[keep], last[keep]
                cache, mask = _drop_padding_columns(cache, mask)
            else:
                cache = mask = last = None
    return out


def _prefill(model, cache_name: str, inputs: list[Sequence[int]], pad_token_id: int, device: torch.device,
             shared: SharedPrefix | None = None):
    """Left-padded prompts run once: (their cache, attention mask, first generated token per row). With a
    ``shared`` opening, the rows start from its cache and their own tokens are left-padded after it (padding in the
    middle: masked out, and the positions count real tokens only)."""
    opening = len(shared) if shared is not None else 0
    rests = [list(ids[opening:]) for ids in inputs]
    batch = collate([Encoded(ids, [-100] * len(ids), len(ids)) for ids in rests], pad_token_id, "left")
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    cached = {}
    if opening:
        mask = torch.cat([mask.new_ones((len(inputs), opening)), mask], dim=1)
        cached = {cache_name: shared.cache_for(len(inputs))}
    positions = (mask.cumsum(dim=1) - 1).masked_fill(mask == 0, 1)[:, opening:]
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                   **cached)
    return output[cache_name], mask, output.logits[:, -1].float().argmax(dim=-1)


def _append(cache, mask: torch.Tensor, new_cache, new_mask: torch.Tensor):
    """The running cache with the new rows' cache below it, the shorter of the two left-padded to the other's
    length (zero keys and values under a zero mask)."""
    width = max(mask.shape[1], new_mask.shape[1])
    for layer, new_layer in zip(cache.layers, new_cache.layers):
        layer.keys = torch.cat([_left_pad(layer.keys, width), _left_pad(new_layer.keys, width)])
        layer.values = torch.cat([_left_pad(layer.values, width), _left_pad(new_layer.values, width)])
    mask = torch.cat([F.pad(mask, (width - mask.shape[1], 0)), F.pad(new_mask, (width - new_mask.shape[1], 0))])
    return cache, mask


def _left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """``[batch, heads, length, dim]`` key or value states with zeros before them, to ``width`` positions."""
    return F.pad(states, (0, 0, width - states.shape[-2], 0))


def _drop_padding_columns(cache, mask: torch.Tensor):
    """Drop the leading cache positions that are padding in every remaining row."""
    first = int(mask.any(dim=0).long().argmax())
    if first > 0:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        mask = mask[:, first:]
    return cache, mask
