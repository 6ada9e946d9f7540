"""signSGD, and Signum when momentum is set: step along the sign of the gradient (or of its momentum)."""

from __future__ import annotations

from pydantic import Field

import torch

from unlearnkit.optim.base import OptimizerParams, Registered, SignStepOptimizer
from unlearnkit.optim.registry import register


@register
class SignSGD(SignStepOptimizer, Registered):
    """signSGD and Signum (Bernstein, Wang, Azizzadenesheli and Anandkumar, signSGD: Compressed Optimisation for
    Non-Convex Problems, ICML 2018, arXiv:1802.04434).

    ``momentum: 0`` (signSGD): ``θ ← θ − lr·(sign(g) + wd·θ)``.
    ``momentum: β > 0`` (Signum, the paper's Algorithm 2): ``m ← β·m + (1−β)·g``; ``θ ← θ − lr·(sign(m) + wd·θ)``,
    with ``m = 0`` before the first step.

    Weight decay is decoupled (``wd·θ`` beside the sign, as in Lion and AdamW), not the L2 form: added to ``g``
    before the sign, the decay would vanish into ``sign(g + wd·θ)`` wherever ``|g| > wd·|θ|``, i.e. almost
    everywhere. ``θ`` in the decay term is the value before the step. ``sign(0) = 0``.
    """

    name = "signsgd"
    summary = "θ ← θ − lr·(sign(g) + wd·θ); with momentum β (Signum): m ← β·m + (1−β)·g, θ ← θ − lr·(sign(m) + wd·θ)"
    citation = ("Bernstein, Wang, Azizzadenesheli and Anandkumar, signSGD: Compressed Optimisation for Non-Convex "
                "Problems, ICML 2018, arXiv:1802.04434")

    class Params(OptimizerParams):
        momentum: float = Field(0.0, ge=0, lt=1, description=(
            "β of the momentum m ← β·m + (1−β)·g whose sign is taken (Signum); 0 takes the sign of the gradient"))

    def __init__(self, params, lr: float = 1e-4, weight_decay: float = 0.0, momentum: float = 0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))

    def direction(self, p, grad, group, state):
        direction = grad
        if group["momentum"] > 0:
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            direction = state["momentum_buffer"].mul_(group["momentum"]).add_(grad, alpha=1 - group["momentum"])
        return torch.sign(direction)
