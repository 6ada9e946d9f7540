"""The bilevel problem every solver takes, and the second-order products they build it from.

    min_x  Phi(x) = f(x, y*(x))    with    y*(x) = argmin_y g(x, y)

``upper`` (x) and ``lower`` (y) are lists of tensors that require grad (leaf tensors or ``nn.Parameter``s; disjoint);
``f(batch)`` and ``g(batch)`` are closures returning the scalar losses at the current values of x and y, on a batch
drawn by ``f_batch()`` / ``g_batch()`` (``None`` for deterministic problems). The solvers move x and y in place.

The exact hypergradient (implicit function theorem, g twice differentiable, grad^2_yy g invertible at y*):

    grad Phi(x) = grad_x f - grad^2_xy g [grad^2_yy g]^-1 grad_y f        (all at (x, y*(x)))

Every second-order quantity here is a Hessian-vector product by double backward: :class:`LowerCurvature` keeps the
graph of grad_y g and returns grad^2_xy g v and grad^2_yy g v as gradients of <grad_y g, v>. No Hessian is ever
formed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Tensors = list[torch.Tensor]


def _none() -> None:
    return None


@dataclass
class BilevelProblem:
    upper: Tensors
    lower: Tensors
    f: Callable[[Any], torch.Tensor]
    g: Callable[[Any], torch.Tensor]
    f_batch: Callable[[], Any] = field(default=_none)
    g_batch: Callable[[], Any] = field(default=_none)

    def __post_init__(self):
        self.upper, self.lower = list(self.upper), list(self.lower)
        if not self.upper or not self.lower:
            raise ValueError("a bilevel problem needs at least one upper and one lower tensor")
        if {id(t) for t in self.upper} & {id(t) for t in self.lower}:
            raise ValueError("the upper and lower variables must be distinct tensors (a problem whose two levels "
                             "share parameters, like OFMU's, is not a bilevel problem in x and y)")


def gradient(loss: torch.Tensor, tensors: Sequence[torch.Tensor], create_graph: bool = False) -> Tensors:
    """d loss / d tensors, zeros for tensors the loss does not use."""
    return list(torch.autograd.grad(loss, list(tensors), create_graph=create_graph, materialize_grads=True))


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def norm(a: Sequence[torch.Tensor]) -> float:
    return float(sum(float(t.detach().double().pow(2).sum()) for t in a) ** 0.5)


class LowerCurvature:
    """The second derivatives of g at the current (x, y) on one batch, as products with a vector v (in y's shape).

    grad_y g is built once with its graph; each product is one backward through it:
    ``yy(v)`` = grad^2_yy g v = grad_y <grad_y g, v> and ``xy(v)`` = grad^2_xy g v = grad_x <grad_y g, v>.
    """

    def __init__(self, problem: BilevelProblem, batch: Any):
        self.problem = problem
        self.grad_y = gradient(problem.g(batch), problem.lower, create_graph=True)

    def _product(self, v: Sequence[torch.Tensor], wrt: Tensors) -> Tensors:
        inner = dot(self.grad_y, [t.detach() for t in v])
        return [d.detach() for d in torch.autograd.grad(inner, wrt, retain_graph=True, materialize_grads=True)]

    def yy(self, v: Sequence[torch.Tensor]) -> Tensors:
        return self._product(v, self.problem.lower)

    def xy(self, v: Sequence[torch.Tensor]) -> Tensors:
        return self._product(v, self.problem.upper)


def lower_sgd(problem: BilevelProblem, steps: int, lr: float) -> None:
    """``steps`` plain gradient steps y <- y - lr grad_y g(x, y), each on a fresh g batch."""
    for _ in range(steps):
        grads = gradient(problem.g(problem.g_batch()), problem.lower)
        with torch.no_grad():
            for y, d in zip(problem.lower, grads):
                y.sub_(d, alpha=lr)


def subtract(tensors: Sequence[torch.Tensor], directions: Sequence[torch.Tensor], lr: float) -> None:
    """tensors <- tensors - lr * directions, in place."""
    with torch.no_grad():
        for t, d in zip(tensors, directions):
            t.sub_(d, alpha=lr)
