"""HAMU, hardness-aware multi-objective unlearning, for classifiers (Chen, Niu, Sim, Liu, Chen, Low: "How Hard Can It
Be? Hardness-Aware Multi-Objective Unlearning", ICML 2026; code aoi3142/HAMU ``hamu/methods/core.py:
compute_hamu_update``, ``hamu/methods/hamu.py: HAMUOptimizer``, ``scripts/experiments/cifar/hamu_unlearn.sh``;
unlearnkit research notes: methods.md §6).

Each step pairs a retain batch and a forget batch and, per parameter tensor, solves a linearised trust-region
problem in closed form. With g_r = ∇ mean CE(retain batch), g_f = ∇ mean CE(forget batch) (plain cross-entropy, no
reference model), HAMU-Q moves by

    δ = argmin_δ g_r·δ  subject to  g_f·δ ≥ B (the forget loss rises by at least B)  and  ‖δ‖ ≤ R.

The "hardness" of a step is κ = g_r·g_f: when the two objectives agree little (κ ≤ −B‖g_r‖/R, easy) δ is a plain
retain descent step −R g_r/‖g_r‖; otherwise δ = (B/‖g_f‖²) g_f − √(R² − B²/‖g_f‖²) · g_r⊥/‖g_r⊥‖ with
g_r⊥ = g_r − (κ/‖g_f‖²) g_f (the retain direction with its forget component removed). Degenerate cases, as the
code: ‖g_f‖² < ε → −R g_r/‖g_r‖ if B ≤ ε, else 0; R² < B²/‖g_f‖² (infeasible) → (B/‖g_f‖²) g_f; ‖g_r⊥‖ < ε →
(B/‖g_f‖²) g_f; B ≤ ε in the last case → R instead of the square root; ε = 1e-12, norms clamped at ε as there.
HAMU-U (``variant: u``) substitutes (g_r, g_f) → (−g_f, −g_r): it maximises the forget-loss increase subject to the
retain loss falling by at least B.

Settings of the repository's CIFAR script (``--use_lr_radius --distribute_constraint_grad_norm --max_grad_norm 1``),
which are the behaviour here:

- R = lr · ‖g_r^(i)‖ per tensor i, and B = lr · ``constraint_ratio`` (ratio 0.5) shared between the tensors in
  proportion to ‖g_r^(i)‖ ‖g_f^(i)‖: B_i = B · ‖g_r^(i)‖‖g_f^(i)‖ / Σ_j ‖g_r^(j)‖‖g_f^(j)‖;
- each gradient clipped to global norm ``max_grad_norm`` first (the Trainer clips before the optimizer's step);
- the update is exactly δ (the inner optimizer is SGD without momentum or weight decay, given the gradient −δ/lr).

Defaults: lr 1e-4, ratio 0.5 (the script's); batch 256 and 25 epochs [choice: the script uses batch 5000 with 25
epochs of a 25-times repeated dataset on CIFAR-10; here an epoch is one pass over the retain set, its forget
batches following each member's own order of the forget set, restarted when it runs out, as NegGrad+].

[choices] A constant learning rate (the Trainer's schedule, which would scale δ, is not reproduced). The paper's
optional stopping criterion (stop when Σ_i R_i √(‖g_r^(i)‖²‖g_f^(i)‖² − κ_i²)/‖g_r^(i)‖ < B) is off in the script and
not implemented; nor is the ``--full_grad`` ablation (one problem over all tensors) or the split-GPU pairing.

Every quantity is per member (norms, dot products, branches, clipping), so member i is HAMU run on model i alone.
Cost per step: one forward and backward of each member on a retain batch and on a forget batch, and per tensor a
few dot products. There are no per-example weights in ``compute_hamu_update``: the hardness is the per-step,
per-tensor κ above.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import vmap

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble, call
from unlearnkit.classifier.options import Options
from unlearnkit.classifier.steps import UNLEARN_STREAM, batches, orders

EPS = 1e-12  # compute_hamu_update's eps


class HAMUParams(Options):
    variant: Literal["q", "u"] = Field("q", description="q: least retain loss s.t. forget loss rises ≥ B; u: swapped")
    lr: float = Field(1e-4, gt=0, description="the radius is lr · ‖g_r‖ per tensor")
    constraint_ratio: float = Field(0.5, ge=0, description="B = lr · constraint_ratio, shared between tensors")
    epochs: int = Field(25, ge=1, description="passes over the retain set")
    batch_size: int = Field(256, ge=1, description="examples per retain batch and per forget batch, per member")
    max_grad_norm: float | None = Field(1.0, gt=0, description="each gradient clipped to this global norm (None: not)")


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per member (the leading axis), the dot product of a and b."""
    return (a.flatten(1) * b.flatten(1)).sum(1)


def hamu_update(gr: torch.Tensor, gf: torch.Tensor, lr: float, constraint: torch.Tensor) -> torch.Tensor:
    """δ of one tensor for every member: ``gr``, ``gf`` (members, ...) the (effective) retain and forget gradients,
    ``constraint`` (members,) its B_i; the radius is lr · ‖gr‖ (the module docstring)."""
    shape = (-1,) + (1,) * (gr.dim() - 1)
    gr_norm_sq, gf_norm_sq, dot = rowdot(gr, gr), rowdot(gf, gf), rowdot(gr, gf)
    gr_norm = gr_norm_sq.sqrt()
    radius = lr * gr_norm
    safe_gf_norm_sq = gf_norm_sq.clamp(min=EPS)
    threshold = -constraint * gr_norm.clamp(min=EPS) / radius.clamp(min=EPS)
    discriminant = radius ** 2 - constraint ** 2 / safe_gf_norm_sq
    orthogonal = gr - (dot / safe_gf_norm_sq).view(shape) * gf
    orthogonal_norm = rowdot(orthogonal, orthogonal).sqrt()
    direct = -(radius / gr_norm.clamp(min=EPS)).view(shape) * gr
    ascent = (constraint / safe_gf_norm_sq).view(shape) * gf
    scale = torch.where(constraint <= EPS, radius, discriminant.clamp(min=0).sqrt())
    rectified = ascent - (scale / orthogonal_norm.clamp(min=EPS)).view(shape) * orthogonal
    # the branches in the code's order, the first that applies wins: build from the last one back
    update = rectified
    update = torch.where((orthogonal_norm < EPS).view(shape), ascent, update)
    update = torch.where((dot <= threshold).view(shape), direct, update)
    update = torch.where((discriminant < 0).view(shape), ascent, update)
    no_forget = torch.where((constraint <= EPS).view(shape), direct, torch.zeros_like(gr))
    return torch.where((gf_norm_sq < EPS).view(shape), no_forget, update)


def clip(grads: list[torch.Tensor], max_norm: float | None) -> list[torch.Tensor]:
    """Each member's gradient scaled to global norm ≤ max_norm, as ``torch.nn.utils.clip_grad_norm_``."""
    if max_norm is None:
        return grads
    total = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
    return [g * factor.view((-1,) + (1,) * (g.dim() - 1)) for g in grads]


def hamu_step(retain_grads: list[torch.Tensor], forget_grads: list[torch.Tensor], opts: HAMUParams
              ) -> list[torch.Tensor]:
    """Every tensor's δ for every member from its (clipped) retain and forget gradients."""
    if opts.variant == "u":
        retain_grads, forget_grads = [-g for g in forget_grads], [-g for g in retain_grads]
    weight = [rowdot(r, r).sqrt() * rowdot(f, f).sqrt() for r, f in zip(retain_grads, forget_grads)]
    total = torch.stack(weight).sum(0).clamp(min=EPS)
    budget = opts.lr * opts.constraint_ratio
    return [hamu_update(r, f, opts.lr, budget * w / total) for r, f, w in zip(retain_grads, forget_grads, weight)]


def hamu(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
         opts: HAMUParams) -> Ensemble:
    device = next(iter(original.params.values())).device
    result = copy.copy(original)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in original.params.items()}
    x, y = torch.as_tensor(task.train.x, device=device), torch.as_tensor(task.train.y, device=device)
    run = vmap(call(original.template, False))

    def gradients(index: torch.Tensor) -> list[torch.Tensor]:
        logits = run(params, original.buffers, x[index])
        # Σ over members of each member's mean CE: each member's gradient is its own
        loss = F.cross_entropy(logits.flatten(0, 1), y[index].flatten(), reduction="sum") / index.shape[1]
        return clip(list(torch.autograd.grad(loss, list(params.values()))), opts.max_grad_norm)

    forget_batches: list[torch.Tensor] = []
    forget_epoch = 0
    for epoch in range(opts.epochs):
        for retain_index in batches(orders(original.seeds, epoch, retain), opts.batch_size):
            if not forget_batches:  # each member's next pass over the forget set
                forget_batches = batches(orders(original.seeds, forget_epoch, forget, UNLEARN_STREAM + 2),
                                         opts.batch_size)
                forget_epoch += 1
            deltas = hamu_step(gradients(retain_index.to(device)), gradients(forget_batches.pop(0).to(device)), opts)
            with torch.no_grad():
                for p, delta in zip(params.values(), deltas):
                    p.add_(delta)
    result.params = {k: v.detach() for k, v in params.items()}
    return result
