"""What every registered optimizer has: typed parameters checked at config load, a name, a rule and a citation."""

from __future__ import annotations

from typing import ClassVar

import torch

from unlearnkit.optim.params import OptimizerParams  # declared torch-free, for the catalogue (issue #20)


class Registered:
    """Mixin of the class attributes the registry and ``unlearnkit optimizers`` read."""

    name: ClassVar[str]
    summary: ClassVar[str]  # the update rule on one line
    citation: ClassVar[str]
    Params: ClassVar[type[OptimizerParams]]


class SignStepOptimizer(torch.optim.Optimizer):
    """The step every sign-based optimizer here shares: run the closure if given, then, for each parameter with a
    gradient, ``θ ← θ·(1 − lr·wd) − lr·direction`` with ``direction`` from :meth:`direction` (decoupled weight
    decay, applied before the step)."""

    def direction(self, p: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
        """The step's direction for one parameter (updating its ``state``)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = self.direction(p, p.grad, group, self.state[p])
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(direction, alpha=-group["lr"])
        return loss
