"""SalUn (Fan, Liu, Zhang, Wong, Wei, Liu: "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency in Both Image Classification and Generation", ICLR 2024, arXiv 2310.12508; code
OPTML-Group/Unlearn-Saliency ``Classification/generate_mask.py``, ``unlearn/RL.py``).

1. Saliency mask: g = ∇_θ ℓ_f(θ_o), the gradient of the forget loss at the original weights; m = 1(|g| ≥ γ), γ
   the threshold that keeps the top ``fraction`` of each member's coordinates (one threshold across all its
   parameters, biases included, as the repository ranks every parameter together). Default fraction 0.5 (the paper's
   choice, γ = the median of |g|).
2. Random-label unlearning (``random_labels``: forget examples relabelled at random, one shuffled pass over forget ∪
   retain per epoch) restricted to the mask, a hard one: coordinates outside it get no gradient, momentum or weight
   decay and keep their original value (``_restore_masked_params`` in ``RL.py``).

Defaults: 10 epochs, lr 0.1 (the README's SalUn command), SGD momentum 0.9, weight decay 5e-4, batch 64 (as the
other classifier methods here).

[choices] ℓ_f is the mean cross-entropy over the whole forget set at θ_o (the paper's definition). The repository's
``save_gradient_ratio`` instead sums the per-batch gradients of −CE while taking SGD steps between batches, and
ranks |g| with an ascending ``argsort`` and keeps ``rank < fraction·n``, which selects the *smallest* entries
despite its comment ("top 10%") (both versions read: commits ac880a2, 2b0a8a1); we follow the paper (largest |g|). Ties at the threshold are broken by position.
Cost: one forward and backward over the forget set for the mask, then random labels' cost.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import vmap

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble, call
from unlearnkit.classifier.steps import (
    Mask,
    RandomLabelsParams,
    descend,
    random_label_steps,
)


class SalUnParams(RandomLabelsParams):
    lr: float = Field(0.1, gt=0, description="SGD learning rate (constant)")
    fraction: float = Field(0.5, gt=0, le=1, description="share of each member's weights in the saliency mask")


def saliency_mask(original: Ensemble, x: np.ndarray, y: np.ndarray, fraction: float) -> Mask:
    """Per member, 1 on the ``fraction`` of its coordinates with the largest |∇ mean CE(forget)| at its weights."""
    device = next(iter(original.params.values())).device
    params = {k: v.detach().clone().requires_grad_(True) for k, v in original.params.items()}
    logits = vmap(call(original.template, False), in_dims=(0, 0, None))(
        params, original.buffers, torch.as_tensor(x, device=device))
    target = torch.as_tensor(y, device=device).repeat(logits.shape[0])
    # sum over members of each member's mean forget loss: each member's gradient is its own
    loss = F.cross_entropy(logits.flatten(0, 1), target, reduction="sum") / logits.shape[1]
    grads = torch.autograd.grad(loss, list(params.values()))
    members = logits.shape[0]
    flat = torch.cat([g.abs().reshape(members, -1) for g in grads], dim=1)
    count = round(fraction * flat.shape[1])
    keep = torch.zeros_like(flat)
    keep.scatter_(1, torch.argsort(flat, dim=1, descending=True, stable=True)[:, :count], 1.0)
    mask, offset = {}, 0
    for (name, p) in params.items():
        size = p[0].numel()
        mask[name] = keep[:, offset:offset + size].reshape(p.shape)
        offset += size
    return mask


def salun(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
          opts: SalUnParams) -> Ensemble:
    mask = saliency_mask(original, task.train.x[forget], task.train.y[forget], opts.fraction)
    steps = random_label_steps(opts, original.seeds, forget, retain, task.train.y, task.num_classes)
    return descend(original, task.train.x, steps, opts, mask=mask)
