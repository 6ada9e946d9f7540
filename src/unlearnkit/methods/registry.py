"""Methods registered by the names users say (``npo``, ``simnpo``, ``rmu``)."""

from __future__ import annotations

import inspect

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


def get_method(name: str, **params) -> UnlearningMethod:
    """Instantiate a registered method; unknown names and parameters are user errors."""
    methods = available()
    if name not in methods:
        raise UnlearnkitError(f"unknown method {name!r}: choose one of {', '.join(methods)} (see `unlearnkit methods`)")
    cls = methods[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise UnlearnkitError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}: its parameters are {', '.join(sorted(accepted)) or 'none'}"
        )
    return cls(**params)
