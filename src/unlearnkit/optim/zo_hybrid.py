"""The hybrid of Downgrade to Upgrade: phases of first-order Adam steps alternating with AdaZO steps, ending on ZO."""

from __future__ import annotations

import torch
from pydantic import Field

from unlearnkit.optim.adazo import AdaZOParams, apply_adazo
from unlearnkit.optim.base import Registered
from unlearnkit.optim.closure import ClosureOptimizer
from unlearnkit.optim.registry import register
from unlearnkit.optim.zo_estimate import estimate


class HybridParams(AdaZOParams):
    fo_steps: int = Field(20, ge=1, description="length of each first-order (AdamW) phase, in steps")
    zo_steps: int = Field(20, ge=1, description="length of each zeroth-order (AdaZO) phase, in steps")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="β1 of the first-order phases' AdamW")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="β2 of the first-order phases' AdamW")
    adam_eps: float = Field(1e-8, gt=0, description="ε of the first-order phases' AdamW")


def is_zeroth_order_step(step: int, total_steps: int, fo_steps: int, zo_steps: int) -> bool:
    """Whether step ``step`` (0-based) of ``total_steps`` is in a ZO phase: phases are laid out from the end of the
    run, the last ``zo_steps`` steps ZO, the ``fo_steps`` before them FO, and so on back to the first step."""
    return (total_steps - 1 - step) % (fo_steps + zo_steps) < zo_steps


@register
class HybridZO(ClosureOptimizer, Registered):
    """Hybrid first-/zeroth-order optimization (Downgrade to Upgrade: Optimizer Simplification Enhances Robustness
    in LLM Unlearning, ICLR 2026, arXiv:2510.00761, "FO-ZO hybrid"): ``fo_steps`` Adam steps and ``zo_steps`` AdaZO
    steps alternate and the run ends on a ZO phase; the paper finds FO:ZO = 1:1 best (e.g. 20:20) and the result
    insensitive to the phase length, hence the defaults.

    FO step (closure with gradient): AdamW as torch computes it, ``m ← β1·m + (1−β1)·g``; ``v ← β2·v + (1−β2)·g²``;
    ``θ ← θ·(1 − lr·wd) − lr·(m/(1−β1^t))/(√(v/(1−β2^t)) + ε)``, ``t`` counting FO steps only.
    ZO step (closure under no_grad): R-AdaZO on the estimate ĝ (:mod:`unlearnkit.optim.adazo`). Each phase keeps its
    own moments (the paper does not say whether they are shared); both phases use the scheduled learning rate.
    Phases are laid out from the end of the run (the closure carries the step and the total), so the last phase is
    ZO whatever the number of steps. Cost: 1 forward-backward per FO step, ``2q`` forwards per ZO step.
    """

    name = "zo_hybrid"
    summary = "alternate fo_steps AdamW steps and zo_steps AdaZO steps, ending on a ZO phase"
    citation = "Downgrade to Upgrade, ICLR 2026, arXiv:2510.00761 (FO-ZO hybrid)"
    Params = HybridParams

    def __init__(self, params, lr: float = 1e-5, weight_decay: float = 0.0, mu: float = 1e-3, directions: int = 1,
                 distribution: str = "sphere", beta1: float = 0.9, beta2: float = 0.999, zeta: float = 1e-8,
                 fo_steps: int = 20, zo_steps: int = 20, adam_beta1: float = 0.9, adam_beta2: float = 0.999,
                 adam_eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, mu=mu, directions=directions,
                                      distribution=distribution, beta1=beta1, beta2=beta2, zeta=zeta,
                                      fo_steps=fo_steps, zo_steps=zo_steps, adam_beta1=adam_beta1,
                                      adam_beta2=adam_beta2, adam_eps=adam_eps))

    @torch.no_grad()
    def step(self, closure):
        group = self.param_groups[0]
        if is_zeroth_order_step(closure.step, closure.total_steps, group["fo_steps"], group["zo_steps"]):
            directions, coefficients, loss = estimate(self.parameter_list(), closure, group["mu"],
                                                      group["directions"], group["distribution"])
            apply_adazo(self, directions, coefficients)
            return loss
        with torch.enable_grad():
            loss = closure(grad=True)
        for p, g in self.parameters_with_groups():
            if p.grad is not None:
                self._adamw(p, p.grad, g, self.state[p])
        return loss

    @staticmethod
    def _adamw(p, grad, group, state) -> None:
        beta1, beta2 = group["adam_beta1"], group["adam_beta2"]
        if "fo_m" not in state:
            state["fo_step"] = 0
            state["fo_m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["fo_v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["fo_step"] += 1
        t, m, v = state["fo_step"], state["fo_m"], state["fo_v"]
        p.mul_(1 - group["lr"] * group["weight_decay"])
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denominator = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(group["adam_eps"])
        p.addcdiv_(m, denominator, value=-group["lr"] / (1 - beta1 ** t))
