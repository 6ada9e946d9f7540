"""Methods registered by the names users say (``npo``, ``simnpo``, ``rmu``)."""

from __future__ import annotations

from typing import Any

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod

_REGISTRY: dict[str, type[UnlearningMethod]] = {}


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type[UnlearningMethod]]:
    import unlearnkit.methods  # noqa: F401  (registers the built-in methods)

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
