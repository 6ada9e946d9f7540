"""The gradient-penalty method (OFMU's outer problem, research/methods.md §5).

Paper: Asif and Mohammadi Amiri, "OFMU: Optimization-Driven Framework for Machine Unlearning", ICLR 2026,
arXiv:2509.22483 (no public code). The constraint "y is stationary for g" is relaxed to a penalty with an increasing
weight rho_k; this is also the penalty form analysed by Shen and Chen, "On Penalty-based Bilevel Gradient Descent
Method", ICML 2023, arXiv:2302.05185:

    F_k(x, y) = f(x, y) + rho_k ||grad_y g(x, y)||^2,        rho_k = rho + rho_increment * k

One upper iteration k:

1. warm start: ``warm_steps`` (T) SGD steps y <- y - warm_lr grad_y g (OFMU's inner ascent on Phi = -g);
2. ``penalty_steps`` (M) steps y <- y - penalty_lr grad_y F_k (0 in OFMU, whose two levels are one parameter set);
3. the gradient of F_k by double backward through the graph of grad_y g (never a Hessian):
   grad_x F_k = grad_x f + 2 rho_k grad^2_xy g grad_y g,  grad_y F_k = grad_y f + 2 rho_k grad^2_yy g grad_y g;
4. ``step``: x <- x - lr grad_x F_k and y <- y - lr grad_y F_k (joint descent on F_k, OFMU's outer step).

``hypergradient`` returns grad_x F_k after 1-2. Why it estimates grad Phi: if y minimises F_k over y (M large) and
g is quadratic in y with Hessian H and cross term -B (grad^2_xy g = -B^T), stationarity in y gives
2 rho_k (grad_y g) = -H^-1 grad_y f, so grad_x F_k = grad_x f + B^T H^-1 grad_y f: the implicit hypergradient at
y_rho, which tends to y*(x) as rho_k -> infinity (error O(1/rho_k)).

Defaults: OFMU's (methods/ofmu.py: T = 5, warm_lr = 1e-4, rho = 0.01, rho_increment = 0.01; this toolkit's choices,
the paper's LLM values being unknown); lr = 1e-4 (this toolkit's). Cost per iteration: T gradients of g, then per
penalty step and for the final gradient one F_k evaluation (a gradient of f, a gradient of g with its graph and one
backward through it: about 2 F + 3 B).
"""

from __future__ import annotations

import torch
from pydantic import Field

from unlearnkit.optim.bilevel.base import BilevelSolver
from unlearnkit.optim.bilevel.params import SolverParams
from unlearnkit.optim.bilevel.problem import (
    BilevelProblem,
    Tensors,
    dot,
    gradient,
    lower_sgd,
    subtract,
)


def penalty_weight(rho: float, rho_increment: float, k: int) -> float:
    """rho_k = rho + rho_increment * k."""
    return rho + rho_increment * k


def squared_norm(grads: Tensors) -> torch.Tensor:
    """||grad||^2 as a differentiable scalar (the penalty)."""
    return dot(grads, grads)


class PenaltySolver(BilevelSolver):
    name = "penalty"
    summary = "min over (x, y) of f + rho_k ||grad_y g||^2 by double backward, rho_k increasing, after T warm steps on g"
    citation = ("Asif and Mohammadi Amiri, OFMU, ICLR 2026, arXiv:2509.22483; Shen and Chen, Penalty-based Bilevel "
                "Gradient Descent, ICML 2023, arXiv:2302.05185")

    class Params(SolverParams):
        rho: float = Field(0.01, ge=0, description="penalty weight rho_0 of ||grad_y g||^2 at the first iteration")
        rho_increment: float = Field(0.01, ge=0, description="rho_k = rho + rho_increment * k")
        warm_steps: int = Field(5, ge=0, description="T: SGD steps on g in y before each upper iteration")
        warm_lr: float = Field(1e-4, gt=0, description="step size of the warm-start steps on g")
        penalty_steps: int = Field(0, ge=0, description="M: gradient steps on F_k in y before the upper gradient")
        penalty_lr: float = Field(1e-4, gt=0, description="step size of the M steps on F_k in y")
        lr: float = Field(1e-4, gt=0, description="step size of the joint descent step on F_k in x and y")

    def current_rho(self) -> float:
        return penalty_weight(self.rho, self.rho_increment, self.iteration)

    def objective(self, problem: BilevelProblem) -> tuple[torch.Tensor, torch.Tensor]:
        """(F_k, ||grad_y g||^2) at the current (x, y), differentiable in both."""
        grad_y = gradient(problem.g(problem.g_batch()), problem.lower, create_graph=True)
        penalty = squared_norm(grad_y)
        return problem.f(problem.f_batch()) + self.current_rho() * penalty, penalty

    def _prepare(self, problem: BilevelProblem) -> None:
        lower_sgd(problem, self.warm_steps, self.warm_lr)
        for _ in range(self.penalty_steps):
            subtract(problem.lower, gradient(self.objective(problem)[0], problem.lower), self.penalty_lr)

    def hypergradient(self, problem: BilevelProblem) -> Tensors:
        self._prepare(problem)
        return gradient(self.objective(problem)[0], problem.upper)

    def step(self, problem: BilevelProblem) -> dict[str, float]:
        self._prepare(problem)
        value, penalty = self.objective(problem)
        grads = gradient(value, problem.upper + problem.lower)
        subtract(problem.upper + problem.lower, grads, self.lr)
        rho = self.current_rho()
        self.iteration += 1
        return {"objective": float(value.detach()), "penalty": float(penalty.detach()), "rho": rho}
