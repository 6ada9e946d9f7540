"""Stochastic gradient descent, torch's implementation, with optional (Nesterov) momentum."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

import torch

from unlearnkit.optim.base import OptimizerParams, Registered
from unlearnkit.optim.registry import register


@register
class SGD(torch.optim.SGD, Registered):
    """SGD with momentum (Polyak 1964; Nesterov 1983, in the form of Sutskever et al., ICML 2013).

    torch's :class:`torch.optim.SGD` with zero dampening: ``g ← g + wd·θ`` (weight decay is the L2 form, added to
    the gradient); ``b ← μ·b + g`` (``b = g`` at the first step); ``d = g + μ·b`` with Nesterov, else ``d = b``;
    ``θ ← θ − lr·d``. With ``momentum: 0``, plain ``θ ← θ − lr·(g + wd·θ)``.
    """

    name = "sgd"
    summary = "b ← μ·b + (g + wd·θ); θ ← θ − lr·b (Nesterov: θ ← θ − lr·(g + wd·θ + μ·b)) (torch's SGD)"
    citation = ("Polyak 1964 (momentum); Sutskever, Martens, Dahl and Hinton, On the importance of initialization "
                "and momentum in deep learning, ICML 2013 (Nesterov form)")

    class Params(OptimizerParams):
        momentum: float = Field(0.0, ge=0, lt=1, description="momentum factor μ; 0 is plain SGD")
        nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")

        @field_validator("nesterov")
        @classmethod
        def _needs_momentum(cls, value: bool, info: ValidationInfo) -> bool:
            if value and not info.data.get("momentum"):
                raise ValueError("nesterov: true needs momentum > 0")
            return value

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
