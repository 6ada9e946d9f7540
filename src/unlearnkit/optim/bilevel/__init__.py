"""Bilevel solvers behind one interface: ``min_x f(x, y*(x))``, ``y*(x) = argmin_y g(x, y)``.

:class:`~unlearnkit.optim.bilevel.problem.BilevelProblem` holds the upper variables x, the lower variables y and f
and g as closures over batches; a solver (``get_solver(name, **params)``) estimates the hypergradient by
Hessian-vector products (double backward, never a dense Hessian) and takes upper steps:

- ``penalty`` (penalty.py): f + rho_k ||grad_y g||^2 with rho_k increasing (OFMU's outer problem);
- ``bo_rep`` (bo_rep.py): normalized momentum, initialization refinement, periodic lower updates, Neumann series;
- ``unrolled`` (unrolled.py): reverse-mode through k SGD steps on g (k = 0: the first-order approximation).

docs/bilevel.md describes each and compares their hypergradients on a problem with a closed form.
"""

from __future__ import annotations

from typing import Any

from unlearnkit.errors import UnlearnkitError
from unlearnkit.optim.bilevel.base import BilevelSolver
from unlearnkit.optim.bilevel.bo_rep import BOREP
from unlearnkit.optim.bilevel.params import SolverParams
from unlearnkit.optim.bilevel.penalty import PenaltySolver
from unlearnkit.optim.bilevel.problem import BilevelProblem
from unlearnkit.optim.bilevel.unrolled import Unrolled

SOLVERS: dict[str, type[BilevelSolver]] = {cls.name: cls for cls in sorted((BOREP, PenaltySolver, Unrolled),
                                                                          key=lambda c: c.name)}


def solver_class(name: str) -> type[BilevelSolver]:
    """The solver called ``name``; an unknown name is a one-line error listing the valid ones."""
    if name not in SOLVERS:
        raise UnlearnkitError(f"unknown bilevel solver {name!r}: choose one of {', '.join(SOLVERS)}")
    return SOLVERS[name]


def check_solver(name: str, params: dict[str, Any]) -> SolverParams:
    """The solver exists and ``params`` fit its ``Params``; returns the validated ``Params``."""
    cls = solver_class(name)
    return cls.Params.check(params, cls.name)


def get_solver(name: str, **params: Any) -> BilevelSolver:
    return solver_class(name)(**params)


__all__ = ["SOLVERS", "BilevelProblem", "BilevelSolver", "check_solver", "get_solver", "solver_class"]
