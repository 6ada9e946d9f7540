"""Lion: the sign of an interpolation between the momentum and the gradient."""

from __future__ import annotations

from pydantic import Field

import torch

from unlearnkit.optim.base import OptimizerParams, Registered, SignStepOptimizer
from unlearnkit.optim.registry import register


@register
class Lion(SignStepOptimizer, Registered):
    """Lion, EvoLved Sign Momentum (Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu and Le, Symbolic
    Discovery of Optimization Algorithms, NeurIPS 2023, arXiv:2302.06675).

    Per parameter, with ``m = 0`` before the first step:
    ``c = β1·m + (1−β1)·g``; ``θ ← θ − lr·(sign(c) + wd·θ)``; ``m ← β2·m + (1−β2)·g``.
    Weight decay is decoupled, on ``θ`` before the step (the paper's form). The state is one momentum buffer.
    The paper advises a learning rate 3–10× smaller than AdamW's and a weight decay 3–10× larger.
    """

    name = "lion"
    summary = "c = β1·m + (1−β1)·g; θ ← θ − lr·(sign(c) + wd·θ); m ← β2·m + (1−β2)·g"
    citation = ("Chen et al., Symbolic Discovery of Optimization Algorithms, NeurIPS 2023, arXiv:2302.06675")

    class Params(OptimizerParams):
        beta1: float = Field(0.9, ge=0, le=1, description="weight of the momentum in the sign's argument c")
        beta2: float = Field(0.99, ge=0, le=1, description="decay of the momentum m")

    def __init__(self, params, lr: float = 1e-4, weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.99):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2))

    def direction(self, p, grad, group, state):
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        momentum = state["exp_avg"]
        update = momentum.mul(group["beta1"]).add_(grad, alpha=1 - group["beta1"]).sign_()
        momentum.mul_(group["beta2"]).add_(grad, alpha=1 - group["beta2"])
        return update
