"""Sign-Adam: Adam's moments, one bit of direction per coordinate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import torch

from unlearnkit.optim.base import OptimizerParams, Registered, SignStepOptimizer
from unlearnkit.optim.registry import register


@register
class SignAdam(SignStepOptimizer, Registered):
    """The sign of Adam's update: the "intra-order downgrade" of Adam (Downgrade to Upgrade: Optimizer
    Simplification Enhances Robustness in LLM Unlearning, ICLR 2026, arXiv:2510.00761, ``θ ← θ − η·Q(u; 1)``),
    with the per-tensor scale of 1-bit Adam's compressor as an option (Tang et al., 1-bit Adam, ICML 2021,
    arXiv:2102.02888).

    Per parameter, at step t, with ``m = v = 0`` before the first step:
    ``m ← β1·m + (1−β1)·g``; ``v ← β2·v + (1−β2)·g²``; ``u = (m/(1−β1^t)) / (√(v/(1−β2^t)) + ε)``, Adam's update;
    ``θ ← θ − lr·(s·sign(u) + wd·θ)`` with ``s = 1`` (``scale: none``) or ``s = mean(|u|)`` over the tensor
    (``scale: mean``). Weight decay is decoupled, on ``θ`` before the step, as in AdamW.

    Which form, and why: the plain sign of Adam's update (the default) is the paper's 1-bit quantiser applied to
    the Adam direction, so every coordinate moves by exactly lr. Because the bias corrections and √v̂ + ε are
    positive, ``sign(u) = sign(m)``: with ``scale: none`` the second moment does not change the step, and the rule
    equals Signum (``signsgd`` with ``momentum: β1``); ``v`` is still tracked so that ``scale: mean`` (Adam's
    per-tensor step size, one bit of direction per coordinate) can use it. Neither form has 1-bit Adam's
    variance freeze or error feedback.
    """

    name = "sign_adam"
    summary = "u = m̂/(√v̂ + ε) (Adam's update); θ ← θ − lr·(s·sign(u) + wd·θ), s = 1 or mean|u| per tensor"
    citation = ("Downgrade to Upgrade: Optimizer Simplification Enhances Robustness in LLM Unlearning, ICLR 2026, "
                "arXiv:2510.00761; scale: Tang et al., 1-bit Adam, ICML 2021, arXiv:2102.02888")

    class Params(OptimizerParams):
        beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first-moment (momentum) average")
        beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second-moment (squared gradient) average")
        eps: float = Field(1e-8, gt=0, description="added to √v̂ in the denominator")
        scale: Literal["none", "mean"] = Field("none", description=(
            "none: step lr·sign(u) per coordinate; mean: lr·mean(|u|)·sign(u), Adam's per-tensor step size"))

    def __init__(self, params, lr: float = 1e-4, weight_decay: float = 0.0, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, scale: str = "none"):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2, eps=eps,
                                      scale=scale))

    def direction(self, p, grad, group, state):
        beta1, beta2 = group["beta1"], group["beta2"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt_().add_(group["eps"]))
        direction = torch.sign(update)
        if group["scale"] == "mean":
            direction.mul_(update.abs().mean())
        return direction
