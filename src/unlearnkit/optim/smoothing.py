"""Randomized smoothing of the forget term: its gradient averaged over Gaussian perturbations of the weights."""

from __future__ import annotations

import torch
from pydantic import Field

from unlearnkit.optim.base import Registered
from unlearnkit.optim.closure import draw
from unlearnkit.optim.registry import register
from unlearnkit.optim.wrapped import (
    WrappedOptimizer,
    WrappedParams,
    add_retain_gradient,
)


class SmoothingParams(WrappedParams):
    sigma: float = Field(0.1, gt=0, description="standard deviation of the Gaussian weight noise (reference: 0.1)")
    samples: int = Field(3, ge=1, description="n: noisy copies whose forget gradients are averaged (reference: 3)")


@register
class RandomizedSmoothing(WrappedOptimizer, Registered):
    """Randomized smoothing (RS) of the forget loss, the smoothing variant beside SAM in Fan et al., Towards LLM
    Unlearning Resilient to Relearning Attacks, ICML 2025, arXiv:2502.05374 (code OPTML-Group/Unlearn-Smooth).

    Per step: ``g = (1/n)·Σ_i ∇ℓ_f(θ + σ·z_i) + ∇ℓ_r(θ)``, ``z_i ~ N(0, I)`` regenerated from ``(seed, "smoothing",
    i)`` (added to the weights in place and taken off again), then ``base`` (AdamW) steps with ``g``. That is the
    gradient of the smoothed forget loss ``E_z ℓ_f(θ + σz)`` estimated with n samples, plus the retain term's at
    ``θ``. ``perturb: all`` smooths the whole loss. Defaults σ = 0.1, n = 3: the reference code's. Weight decay is
    ``base``'s. Cost: n + 1 forward-backward passes (n with ``perturb: all``); memory: ``base``'s plus one
    parameter-sized buffer.
    """

    name = "smoothing"
    summary = "g = (1/n)·Σ ∇ℓ_f(θ + σ·z_i) + ∇ℓ_r(θ), z_i ~ N(0, I); base step (adamw) with g"
    citation = "Fan et al., Towards LLM Unlearning Resilient to Relearning Attacks, ICML 2025, arXiv:2502.05374 (RS)"
    Params = SmoothingParams

    def __init__(self, params, lr: float = 1e-5, weight_decay: float = 0.0, sigma: float = 0.1, samples: int = 3,
                 perturb: str = "forget", base: str = "adamw"):
        super().__init__(params, lr, weight_decay, base, sigma=sigma, samples=samples, perturb=perturb)

    @torch.no_grad()
    def step(self, closure):
        parameters, group = self.parameter_list(), self.param_groups[0]
        sigma, samples = group["sigma"], group["samples"]
        total = [torch.zeros_like(p) for p in parameters]
        losses = []
        for i in range(samples):
            for p, z in zip(parameters, draw(parameters, closure.seed, "smoothing", i)):
                p.add_(z, alpha=sigma)
            with torch.enable_grad():
                losses.append(closure(grad=True, part=self.forget_part()))
            for p, z, t in zip(parameters, draw(parameters, closure.seed, "smoothing", i), total):
                p.sub_(z, alpha=sigma)
                if p.grad is not None:
                    t.add_(p.grad, alpha=1 / samples)
        retain = add_retain_gradient(parameters, closure, group["perturb"], total)
        self.base.step()
        return sum(losses) / samples + retain
