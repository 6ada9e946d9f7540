"""Unlearning methods: one module per method, each registering its class with ``@register`` (see :mod:`.registry`,
which imports every module of this package, so none is listed here).

Iterative losses: ``ga``, ``graddiff``, ``npo``, ``simnpo``, ``idknll``, ``idkdpo``, ``rmu``.
"""

__all__ = ["UnlearningMethod", "available", "get_method", "register"]


def __getattr__(name: str):
    """The package's names, imported when first asked for: importing ``unlearnkit.methods.params`` (the typed
    parameters, read by the torch-free catalogue, :mod:`unlearnkit.catalogue`) must not import torch."""
    if name == "UnlearningMethod":
        from unlearnkit.methods.base import UnlearningMethod

        return UnlearningMethod
    if name in ("available", "get_method", "register"):
        from unlearnkit.methods import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
