"""Unlearning methods. Importing this package registers the built-in ones (see :mod:`.registry`).

Iterative losses: ``ga``, ``graddiff``, ``npo``, ``simnpo``, ``idknll``, ``idkdpo``, ``rmu``.
"""

from unlearnkit.methods import ga, graddiff, idk, npo, rmu, simnpo  # noqa: F401  (each module registers its methods)
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.registry import available, get_method, register

__all__ = ["UnlearningMethod", "available", "get_method", "register"]
