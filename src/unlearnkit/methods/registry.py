"""Methods registered by the names users say (``npo``, ``simnpo``, ``rmu``).

Every module of the :mod:`unlearnkit.methods` package is imported the first time the registry is asked (and each
time after, which is free once imported), so adding a method is one new file whose class carries ``@register``:
nothing else lists the methods.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod

_REGISTRY: dict[str, type[UnlearningMethod]] = {}


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _import_method_modules() -> None:
    import unlearnkit.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def available() -> dict[str, type[UnlearningMethod]]:
    _import_method_modules()
    return dict(sorted(_REGISTRY.items()))


def method_class(name: str) -> type[UnlearningMethod]:
    """The registered class called ``name``; an unknown name is a user error listing the valid ones."""
    methods = available()
    if name not in methods:
        raise UnlearnkitError(f"unknown method {name!r}: choose one of {', '.join(methods)} (see `unlearnkit methods`)")
    return methods[name]


def get_method(name: str, **params: Any) -> UnlearningMethod:
    """Instantiate a registered method; unknown names, unknown parameters and bad values are user errors."""
    return method_class(name)(**params)
