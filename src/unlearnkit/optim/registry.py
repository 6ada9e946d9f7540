"""Optimizers registered by the names users say (``adamw``, ``lion``, ``signsgd``).

Every module of :mod:`unlearnkit.optim` is imported the first time the registry is asked, so adding an optimizer is
one new file whose class carries ``@register``: nothing else lists the optimizers.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from unlearnkit.errors import UnlearnkitError
from unlearnkit.registry import Registry

OPTIMIZERS = Registry("optimizer", "unlearnkit.optim", "optimizers")


def register(cls: type) -> type:
    return OPTIMIZERS.register(cls)


def available() -> dict[str, type]:
    return OPTIMIZERS.available()


def optimizer_class(name: str) -> type:
    """The registered class called ``name``; an unknown name is a user error listing the valid ones."""
    return OPTIMIZERS.get(name)


def check_optimizer(name: str, params: dict[str, Any], where: str | None = None):
    """The optimizer exists and ``params`` fit its ``Params``; returns the validated ``Params``."""
    cls = optimizer_class(name)
    return cls.Params.check(params, cls.name, where)


def uses_closure(name: str) -> bool:
    """Whether optimizer ``name`` evaluates the loss itself through a closure (zeroth-order, ES, SAM, ...)."""
    return getattr(optimizer_class(name), "uses_closure", False)


def check_serves(name: str, params: dict[str, Any], method) -> None:
    """Optimizer ``name`` with ``params`` can train ``method`` (an unlearning method instance); else a one-line
    :class:`UnlearnkitError` with the reason (e.g. SAM on the forget term of a method that gives only its total)."""
    cls = optimizer_class(name)
    refusal = getattr(cls, "refusal", None)
    reason = refusal(cls.Params.check(params, cls.name), method) if refusal else None
    if reason:
        raise UnlearnkitError(f"optimizer {name!r} cannot train method {method.name!r}: {reason}")


def build_optimizer(parameters: Iterable[torch.nn.Parameter], name: str, params: dict[str, Any],
                    learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``parameters`` with ``learning_rate``, ``weight_decay`` and its own ``params``."""
    cls = optimizer_class(name)
    checked = cls.Params.check(params, cls.name)
    return cls(parameters, lr=learning_rate, weight_decay=weight_decay, **checked.model_dump())
