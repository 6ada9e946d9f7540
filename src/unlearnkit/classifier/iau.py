"""IAU, influence approximation unlearning (Liu, Wu, Lian, Chen: "Efficient Machine Unlearning via Influence
Approximation", 2025, arXiv 2507.23257; code Lolo1222/IAU ``IAU_unlearn.py``, ``utility/parser.py``; unlearnkit
research notes: methods.md §7).

The paper reads unlearning as the incremental opposite of memorising: the influence of removing D_f, which the
influence function writes as H⁻¹ Σ_{z∈D_f} ∇ℓ(z), is approximated by incremental learning, so that no Hessian is
formed; with the gradient correction it becomes one step along

    g = ∇ mean_{z ∈ D_r} CE(f_θ(z)) − ∇ mean_{z ∈ D_f} CE(f_θ(z))

taken by Adam (lr 1e-3, β = (0.9, 0.999), ε = 1e-8, fresh state). This is what ``IAU_unlearn.py`` does: the retain
set and the forget set each as one batch (``batch_size=len(data)``), ``loss1 = CE(remain)`` and ``loss2 = −CE(forget)``
backpropagated into the same ``.grad``, then one ``optimizer.step()``. From a fresh state, Adam's first step is
θ₁ = θ₀ − lr · g / (|g| + ε) elementwise (the bias corrections make m̂ = g and v̂ = g²), i.e. about lr · sign(g).

[choices] ``steps`` > 1 repeats the step with fresh full-set gradients and Adam's running state (the paper takes
one; default 1). The paper's training-time gradient restriction (ℓ_GR = CE + α Σ_tensors ‖∇_tensor CE‖₂, α =
0.005), which makes one step suffice, changes how the *original* is trained and is not implemented here: IAU runs
on members trained by any recipe.

Each member's loss is its own (the stacked loss sums the members' losses), and Adam acts element by element, so
member i is IAU run on model i alone. The full-set gradients are accumulated over chunks of 1,024 examples, so a
large retain set never runs through every member in one pass. Cost: per step, one forward and backward of every
member over D_r and D_f.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import vmap

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble, call
from unlearnkit.classifier.options import Options


class IAUParams(Options):
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (IAU_unlearn.py's default)")
    steps: int = Field(1, ge=1, description="Adam steps on the full-set gradient (the paper: one)")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam β1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam β2")
    eps: float = Field(1e-8, gt=0, description="Adam ε")


CHUNK = 1024  # examples per forward pass: the full-set gradients are accumulated chunk by chunk (same sums)


def accumulate_correction(run, params, buffers, x: torch.Tensor, y: torch.Tensor, forget: torch.Tensor,
                          retain: torch.Tensor) -> None:
    """Adds to each stacked parameter's ``.grad`` its members' g = ∇ mean CE(D_r) − ∇ mean CE(D_f) (the stacked
    loss sums the members' losses, so each member's gradient is its own)."""
    for index, sign in ((retain, 1.0), (forget, -1.0)):
        for start in range(0, len(index), CHUNK):
            part = index[start:start + CHUNK]
            logits = vmap(run, in_dims=(0, 0, None))(params, buffers, x[part])  # (members, chunk, classes)
            loss = F.cross_entropy(logits.flatten(0, 1), y[part].repeat(logits.shape[0]), reduction="sum")
            (sign * loss / len(index)).backward()


def iau(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
        opts: IAUParams) -> Ensemble:
    device = next(iter(original.params.values())).device
    result = copy.copy(original)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in original.params.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=opts.lr, betas=(opts.beta1, opts.beta2), eps=opts.eps)
    x, y = torch.as_tensor(task.train.x, device=device), torch.as_tensor(task.train.y, device=device)
    forget_t, retain_t = torch.as_tensor(forget, device=device), torch.as_tensor(retain, device=device)
    run = call(original.template, False)
    for _ in range(opts.steps):
        optimizer.zero_grad(set_to_none=True)
        accumulate_correction(run, params, original.buffers, x, y, forget_t, retain_t)
        optimizer.step()
    result.params = {k: v.detach() for k, v in params.items()}
    return result
