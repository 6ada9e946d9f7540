"""What every registered optimizer has: typed parameters checked at config load, a name, a rule and a citation."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import ValidationError

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.params import _PROBLEMS, MethodParams, bound_problem, describe, show, type_text


class OptimizerParams(MethodParams):
    """The hyper-parameters of an optimizer beyond ``learning_rate`` and ``weight_decay`` (which come from ``train:``).

    Same typing as method parameters (type, default, range, ``description`` per field); the error messages name the
    optimizer and point to ``unlearnkit optimizers NAME``.
    """

    @classmethod
    def check(cls, values: dict[str, Any], method: str, where: str | None = None) -> "OptimizerParams":
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise UnlearnkitError(cls._explain(exc, method, where)) from None

    @classmethod
    def _explain(cls, exc: ValidationError, optimizer: str, where: str | None) -> str:
        prefix = f"{where}: " if where else ""
        errors = exc.errors()
        unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
        if unknown:
            valid = f"its parameters are {', '.join(cls.model_fields)}" if cls.model_fields else "it has none"
            return (f"{prefix}optimizer {optimizer!r} has no parameter {', '.join(map(repr, unknown))}: {valid} "
                    f"(learning_rate and weight_decay are set in train:; see `unlearnkit optimizers {optimizer}`)")
        err = errors[0]
        name = str(err["loc"][0])
        field = cls.model_fields[name]
        if err["type"] == "literal_error":
            problem = f"must be {type_text(field)}"
        elif err["type"] in _PROBLEMS:
            problem = _PROBLEMS[err["type"]]
        else:
            problem = bound_problem(err) or err["msg"].replace("Value error, ", "").replace("Input should be",
                                                                                             "must be")
        return (f"{prefix}optimizer {optimizer!r} parameter {name}: {problem}, got {show(err.get('input'))} "
                f"({describe(name, field)})")


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
