"""The shape SAM and randomized smoothing share: compute a gradient their own way through the closure, then let a
registered first-order optimizer (``base``, AdamW by default) take the step with it."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from unlearnkit.optim.base import OptimizerParams
from unlearnkit.optim.closure import ClosureOptimizer


class WrappedParams(OptimizerParams):
    perturb: Literal["forget", "all"] = Field("forget", description=(
        "forget: only the forget term is evaluated at perturbed weights, the retain term's gradient is taken at θ "
        "(the Unlearn-Smooth papers' form); all: the whole loss"))
    base: str = Field("adamw", description="the first-order optimizer (with its default parameters) that steps "
                                           "with the gradient")

    @field_validator("base")
    @classmethod
    def _first_order(cls, value: str) -> str:
        from unlearnkit.optim.registry import available

        first_order = [name for name, c in available().items() if not getattr(c, "uses_closure", False)]
        if value not in first_order:
            raise ValueError(f"base must be a first-order optimizer: one of {', '.join(first_order)}, got {value!r}")
        return value


class WrappedOptimizer(ClosureOptimizer):
    """Holds ``base`` over the same parameter groups and state (so the schedule's learning rate, the checkpointed
    state and a resume all go through this object), and refuses ``perturb: forget`` for a method whose retain term
    it cannot separate."""

    def __init__(self, params, lr: float, weight_decay: float, base: str, **defaults):
        from unlearnkit.optim.registry import optimizer_class

        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, base=base, **defaults))
        self.base = optimizer_class(base)(self.param_groups, lr=lr, weight_decay=weight_decay)
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self.base.param_groups, self.base.state = self.param_groups, self.state

    @classmethod
    def refusal(cls, params, method) -> str | None:
        if params.perturb == "forget" and method.uses_retain and not hasattr(method, "loss_parts"):
            return ("perturb: forget needs the loss's forget and retain terms apart, and the method gives only their "
                    "sum; set perturb: all")
        return super().refusal(params, method)

    def forget_part(self) -> str:
        return "forget" if self.param_groups[0]["perturb"] == "forget" else "all"


def add_retain_gradient(parameters, closure, perturb: str, kept: list[torch.Tensor]) -> float:
    """``p.grad ← kept + ∇(retain term)(θ)`` (with ``perturb: forget``; else ``p.grad ← kept``); returns the retain
    term's value (0 without one)."""
    retain = 0.0
    if perturb == "forget":
        with torch.enable_grad():
            retain = closure(grad=True, part="retain")
    for p, k in zip(parameters, kept):
        p.grad = k if p.grad is None or perturb != "forget" else p.grad.add_(k)
    return retain
