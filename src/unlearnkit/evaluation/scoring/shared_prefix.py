"""The leading tokens every prompt of an evaluation starts with, run once and their KV cache reused by every batch.

With a chat template every prompt opens with the same tokens (a system prompt and the user-turn header). :mod:`~unlearnkit.evaluation.scoring.prompt_sharing` runs each prompt once per batch
and continuous-batching generation (:mod:`~unlearnkit.evaluation.scoring.greedy`) prefills each question once, but both
would run that opening once per prompt. Here it runs once, in a batch of one, and each batch starts from a copy of its cache, one row per sequence.

Exactness: the opening's keys and values depend only on its own tokens and positions (causal attention), so a row
that starts from the copied cache computes what it would from the start, in exact arithmetic; in floating point the
opening's matrix products have another shape (one row instead of many), which may round some values differently,
as prompt sharing already does (see there). The opening is a function of all the sequences of a request, never of
one process's share, so sharded, resumed and repeated evaluations compute the same bits.
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch

# a matrix product of fewer than 4 rows takes another kernel on the CPU (a matrix-vector path), which rounds
# differently from a larger one; in a forward pass the attention's products have one row per position of the pass.
# The opening, and every pass a scoring batch plans (prompt_sharing), thus run at least this many positions, so that
# their values are a full pass's to the bit (checked for SmolLM2-135M's and the tiny models' layer and attention
# shapes: products of 1 to 3 rows differ, of 4 to 69 do not)
MIN_PASS_POSITIONS = 4

def shared_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def common_prefix(sequences: Iterable[Sequence[int]], keep: int = 1) -> tuple[int, ...]:
    """The longest run of tokens every sequence starts with, short enough that each sequence keeps at least
    ``keep`` tokens after it (the token whose logits a prompt pass needs). Empty for no sequences."""
    prefix: tuple[int, ...] | None = None
    shortest = None
    for seq in sequences:
        seq = tuple(seq)
        shortest = len(seq) if shortest is None else min(shortest, len(seq))
        if prefix is None:
            prefix = seq
        else:
            prefix = prefix[: shared_length(prefix, seq)]
    if prefix is None:
        return ()
    return prefix[: max(0, shortest - keep)]


class SharedPrefix:
    """The KV cache of ``ids`` (the tokens every sequence starts with), computed on first use by one forward pass
    of ``model`` (``cache_name``: its forward's cache argument) and copied for each batch. Call under
    ``torch.inference_mode()`` with the model in eval mode."""

    def __init__(self, model, cache_name: str, ids: Sequence[int], device: torch.device):
        self.model, self.cache_name, self.ids, self.device = model, cache_name, list(ids), device
        self._cache = None

    def __len__(self) -> int:
        return len(self.ids)

    def cache_for(self, rows: int):
        """A new cache holding the prefix's keys and values for ``rows`` rows (the caller may extend it)."""
        if self._cache is None:
            self._cache = self._run()
        cache = copy.deepcopy(self._cache)
        cache.batch_select_indices(torch.zeros(rows, dtype=torch.long))  # CPU indices index a cache on any device
        return cache

    def _run(self):
        """The prefix's cache: one forward pass of one row."""
        ids = torch.tensor([self.ids], dtype=torch.long, device=self.device)
        output = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
        return output[self.cache_name]


def shared_prefix(model, cache_name: str | None, sequences: Iterable[Sequence[int]], device: torch.device,
                  keep: int = 1) -> SharedPrefix | None:
    """The :class:`SharedPrefix` of ``sequences`` (see :func:`common_prefix`), or None when the model takes no
    cache (``cache_name`` None) or the sequences share fewer than :data:`MIN_PASS_POSITIONS` leading tokens."""
    if cache_name is None:
        return None
    ids = common_prefix(sequences, keep)
    return SharedPrefix(model, cache_name, ids, device) if len(ids) >= MIN_PASS_POSITIONS else None
