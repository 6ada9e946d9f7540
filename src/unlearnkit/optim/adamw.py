"""AdamW, torch's implementation: the default optimizer of ``train:``."""

from __future__ import annotations

from pydantic import Field

import torch

from unlearnkit.optim.base import OptimizerParams, Registered
from unlearnkit.optim.registry import register


@register
class AdamW(torch.optim.AdamW, Registered):
    """AdamW (Loshchilov and Hutter, Decoupled Weight Decay Regularization, ICLR 2019, arXiv:1711.05101).

    Update, per parameter, at step t (torch's :class:`torch.optim.AdamW`, which this class only renames):
    ``θ ← θ − lr·wd·θ``; ``m ← β1·m + (1−β1)·g``; ``v ← β2·v + (1−β2)·g²``;
    ``θ ← θ − lr·(m/(1−β1^t)) / (√(v/(1−β2^t)) + ε)``. Weight decay is decoupled (applied to θ, not added to g).
    With the default parameters it is exactly ``torch.optim.AdamW(parameters, lr=learning_rate,
    weight_decay=weight_decay)``, the optimizer the loop used before optimizers were selectable.
    """

    name = "adamw"
    summary = "m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; θ ← θ − lr·(m̂/(√v̂ + ε) + wd·θ) (torch's AdamW)"
    citation = "Loshchilov and Hutter, Decoupled Weight Decay Regularization, ICLR 2019, arXiv:1711.05101"

    class Params(OptimizerParams):
        beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first-moment (momentum) average")
        beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second-moment (squared gradient) average")
        eps: float = Field(1e-8, gt=0, description="added to √v̂ in the denominator")

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 1e-2, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
