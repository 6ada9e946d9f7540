"""Sharpness-aware minimization, by default of the forget term only (the relearning-resilient unlearning of
Unlearn-Smooth)."""

from __future__ import annotations

import torch
from pydantic import Field

from unlearnkit.optim.base import Registered
from unlearnkit.optim.closure import global_norm
from unlearnkit.optim.registry import register
from unlearnkit.optim.wrapped import (
    WrappedOptimizer,
    WrappedParams,
    add_retain_gradient,
)


class SAMParams(WrappedParams):
    rho: float = Field(0.1, gt=0, description="ρ: radius of the weight perturbation (NPO+SAM on WMDP: 0.1; MUSE: 0.01)")


@register
class SAM(WrappedOptimizer, Registered):
    """SAM (Foret, Kleiner, Mobahi and Neyshabur, Sharpness-Aware Minimization, ICLR 2021, arXiv:2010.01412) applied
    to the forget loss only, as in Fan et al., Towards LLM Unlearning Resilient to Relearning Attacks: A
    Sharpness-Aware Minimization Perspective and Beyond, ICML 2025, arXiv:2502.05374 (code OPTML-Group/Unlearn-Smooth,
    ``sam_iterative.py``): ``min_θ max_{‖δ‖≤ρ} ℓ_f(θ+δ) + ℓ_r(θ)``, the inner maximum taken by one ascent step.

    Per step (``ℓ_f``, ``ℓ_r``: the method's weighted forget and retain terms; the norm is global over every trained
    parameter): ``g1 = ∇ℓ_f(θ)``; ``ε = ρ·g1/‖g1‖``; ``g_f = ∇ℓ_f(θ + ε)``; ``g_r = ∇ℓ_r(θ)``; then ``base`` steps
    with ``g = g_f + g_r`` (AdamW, the papers' choice). ``perturb: all`` is Foret et al.'s SAM on the whole loss
    (``ε`` from ``∇L(θ)``, step with ``∇L(θ + ε)``). ``ρ = 0.1`` is the NPO+SAM WMDP default (MUSE uses 0.01).
    Weight decay is ``base``'s. Cost: 3 forward-backward passes (2 with ``perturb: all``); memory: ``base``'s plus one
    parameter-sized buffer.
    """

    name = "sam"
    summary = "ε = ρ·∇ℓ_f(θ)/‖∇ℓ_f(θ)‖; g = ∇ℓ_f(θ+ε) + ∇ℓ_r(θ); base step (adamw) with g"
    citation = ("Fan et al., Towards LLM Unlearning Resilient to Relearning Attacks, ICML 2025, arXiv:2502.05374; "
                "Foret et al., Sharpness-Aware Minimization, ICLR 2021, arXiv:2010.01412")
    Params = SAMParams

    def __init__(self, params, lr: float = 1e-5, weight_decay: float = 0.0, rho: float = 0.1,
                 perturb: str = "forget", base: str = "adamw"):
        super().__init__(params, lr, weight_decay, base, rho=rho, perturb=perturb)

    @torch.no_grad()
    def step(self, closure):
        parameters, group = self.parameter_list(), self.param_groups[0]
        with torch.enable_grad():
            first = closure(grad=True, part=self.forget_part())
        scale = group["rho"] / (global_norm([p.grad for p in parameters]) + 1e-12)
        shifts = [p.grad * scale if p.grad is not None else torch.zeros_like(p) for p in parameters]
        for p, e in zip(parameters, shifts):
            p.add_(e)
        with torch.enable_grad():
            closure(grad=True, part=self.forget_part())
        for p, e in zip(parameters, shifts):
            p.sub_(e)
            e.copy_(p.grad if p.grad is not None else torch.zeros_like(p))  # keep g_f in the shift's buffer
        retain = add_retain_gradient(parameters, closure, group["perturb"], shifts)
        self.base.step()
        return first + retain
