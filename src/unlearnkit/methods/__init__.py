"""Unlearning methods: one module per method, each registering its class with ``@register`` (see :mod:`.registry`,
which imports every module of this package, so none is listed here).

Iterative losses: ``ga``, ``graddiff``, ``npo``, ``simnpo``, ``idknll``, ``idkdpo``, ``rmu``.
"""

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.registry import available, get_method, register

__all__ = ["UnlearningMethod", "available", "get_method", "register"]
