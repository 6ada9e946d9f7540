"""Optimizers registered by the names users say (``adamw``, ``lion``, ``signsgd``).

Every module of :mod:`unlearnkit.optim` is imported the first time the registry is asked, so adding an optimizer is
one new file whose class carries ``@register``: nothing else lists the optimizers.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

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


def build_optimizer(parameters: Iterable[torch.nn.Parameter], name: str, params: dict[str, Any],
                    learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``parameters`` with ``learning_rate``, ``weight_decay`` and its own ``params``."""
    cls = optimizer_class(name)
    checked = cls.Params.check(params, cls.name)
    return cls(parameters, lr=learning_rate, weight_decay=weight_decay, **checked.model_dump())
