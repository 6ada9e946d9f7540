"""What every registered optimizer has: typed parameters checked at config load, a name, a rule and a citation."""

from __future__ import annotations

from typing import ClassVar

import torch

from unlearnkit.methods.params import MethodParams


class OptimizerParams(MethodParams):
    """The hyper-parameters of an optimizer beyond ``learning_rate`` and ``weight_decay`` (which come from ``train:``).

    Same typing as method parameters (type, default, range, ``description`` per field); the error messages name the
    optimizer and point to ``unlearnkit optimizers NAME``.
    """

    @classmethod
    def _unknown_message(cls, optimizer: str, names: str, valid: str) -> str:
        return (f"optimizer {optimizer!r} has no parameter {names}: {valid} (learning_rate and weight_decay are set "
                f"in train:; see `unlearnkit optimizers {optimizer}`)")

    @classmethod
    def _label(cls, optimizer: str, name: str, where: str | None) -> str:
        return f"{where + ': ' if where else ''}optimizer {optimizer!r} parameter {name}"


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
