"""Unlearn on a part of the forget set, evaluate on all of it: the coreset effect (research/methods.md §16).

"LLM Unlearning Reveals a Stronger-Than-Expected Coreset Effect" (Pal et al., 2025; OPTML-Group/MU-Coreset) reports
that unlearning on a small random subset (5%) of the forget set removes about as much as the whole set. A run with
``task.forget_subset: {fraction, strategy, seed}`` trains on ``k = max(1, round(fraction * n))`` of the ``n`` forget
training items (rounding half up) and is evaluated, like every run, on the task's whole forget split.

Strategies:

- ``random``: ``k`` items drawn without replacement by a ``torch.Generator`` seeded with ``seed`` (the same items for
  the same seed, on every machine and in every process).
- ``hardest`` / ``easiest``: by the target model's **per-example forget loss**, defined here as the mean negative
  log-likelihood of the item's label tokens under the target model before unlearning (``-(1/|y|) sum_t log p(y_t)``,
  the quantity gradient ascent raises). *Hardest* = the ``k`` items with the LOWEST loss: the best-remembered ones,
  which unlearning has most to undo (the coreset paper's Min-K% Prob selector likewise keeps the most memorised);
  *easiest* = the ``k`` with the highest loss. Ties go to the lower index; ``seed`` is not used.

The chosen indices are returned in increasing order, so the kept items keep their order in the forget list.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX, Encoded, collate

Strategy = Literal["random", "hardest", "easiest"]


def subset_size(n: int, fraction: float) -> int:
    """``max(1, round(fraction * n))``, rounding half up (never more than ``n``)."""
    return min(n, max(1, math.floor(fraction * n + 0.5)))


def select_subset(n: int, fraction: float, strategy: Strategy, seed: int = 0,
                  losses: Sequence[float] | None = None) -> list[int]:
    """The indices (increasing) of the forget items to train on; ``losses`` (one per item) for hardest/easiest."""
    if n <= 0:
        raise ValueError("cannot choose a subset of an empty forget set")
    k = subset_size(n, fraction)
    if strategy == "random":
        generator = torch.Generator().manual_seed(seed)
        return sorted(torch.randperm(n, generator=generator)[:k].tolist())
    if losses is None or len(losses) != n:
        raise ValueError(f"strategy {strategy!r} needs one forget loss per item ({n})")
    order = sorted(range(n), key=lambda i: (losses[i], i))  # lowest loss (best remembered) first
    if strategy == "easiest":
        order = sorted(range(n), key=lambda i: (-losses[i], i))
    elif strategy != "hardest":
        raise ValueError(f"unknown subset strategy {strategy!r}: use random, hardest or easiest")
    return sorted(order[:k])


@torch.no_grad()
def forget_losses(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, batch_size: int = 16) -> list[float]:
    """Per item, the mean NLL of its label tokens under ``model`` (eval mode, float32 log-softmax)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    try:
        for start in range(0, len(items), batch_size):
            batch = {k: v.to(device) for k, v in collate(items[start : start + batch_size], pad_token_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
            labels = batch["labels"][:, 1:]
            nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                  reduction="none")
            counts = (labels != IGNORE_INDEX).sum(dim=-1).clamp(min=1)
            out += (nll.sum(dim=-1) / counts).tolist()
    finally:
        model.train(was_training)
    return out


def choose_forget_subset(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, fraction: float,
                         strategy: Strategy, seed: int, batch_size: int = 16) -> list[int]:
    """:func:`select_subset` of the forget training ``items``, scoring them with ``model`` when the strategy needs it."""
    losses = None if strategy == "random" else forget_losses(model, items, pad_token_id, batch_size)
    return select_subset(len(items), fraction, strategy, seed, losses)
