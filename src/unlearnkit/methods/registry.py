"""Methods registered by the names users say (``npo``, ``simnpo``, ``rmu``).

Every module of the :mod:`unlearnkit.methods` package is imported the first time the registry is asked (and each
time after, which is free once imported), so adding a method is one new file whose class carries ``@register``:
nothing else lists the methods.
"""

from __future__ import annotations

from typing import Any

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.registry import Registry

METHODS = Registry("method", "unlearnkit.methods", "methods")


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    return METHODS.register(cls)


def available() -> dict[str, type[UnlearningMethod]]:
    return METHODS.available()


def method_class(name: str) -> type[UnlearningMethod]:
    """The registered class called ``name``; an unknown name is a user error listing the valid ones."""
    return METHODS.get(name)


def get_method(name: str, **params: Any) -> UnlearningMethod:
    """Instantiate a registered method; unknown names, unknown parameters and bad values are user errors."""
    return method_class(name)(**params)
