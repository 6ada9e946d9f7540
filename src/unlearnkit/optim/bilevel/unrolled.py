"""Unrolled differentiation: the hypergradient of f(x, y_k(x)) through k steps of the lower optimizer.

Sources: Maclaurin, Duvenaud and Adams, "Gradient-based Hyperparameter Optimization through Reversible Learning",
ICML 2015; Franceschi et al., "Forward and Reverse Gradient-Based Hyperparameter Optimization", ICML 2017 (reverse
mode); Liu, Simonyan and Yang, "DARTS", ICLR 2019 (k = 1, and k = 0 as the first-order approximation). Used by
Flexora (research/methods.md §23) with a one-step unroll.

The lower optimizer is plain SGD from the current y: y_0 = y, y_{j+1} = y_j - alpha grad_y g(x, y_j) (j < k). The
hypergradient is d f(x, y_k(x)) / dx, by reverse mode over the unrolled steps with Hessian-vector products only
(no graph of the whole unroll is kept, only the k iterates y_j):

    v = grad_y f(x, y_k),  h = grad_x f(x, y_k)
    for j = k-1 .. 0:   h <- h - alpha grad^2_xy g(x, y_j) v;   v <- v - alpha grad^2_yy g(x, y_j) v

k = 0 gives h = grad_x f(x, y): the first-order approximation (y treated as independent of x). For g strongly convex
and alpha < 2/L the hypergradient tends to the implicit one as k grows (y_k -> y*, dy_k/dx -> dy*/dx).

``hypergradient`` leaves y at y_k (the unroll doubles as the lower-level progress); ``step`` is
x <- x - lr h. Defaults: k = 1 and alpha = 1e-2 (DARTS's one-step unroll, with its step size the lower learning
rate), lr = 1e-3 (this toolkit's choice). Cost per iteration: k gradients of g forward, then per unrolled step one
graph of grad_y g and two backward products through it, plus one gradient of f; memory: k copies of y.
"""

from __future__ import annotations

import torch
from pydantic import Field

from unlearnkit.optim.bilevel.base import BilevelSolver
from unlearnkit.optim.bilevel.params import SolverParams
from unlearnkit.optim.bilevel.problem import (
    BilevelProblem,
    LowerCurvature,
    Tensors,
    gradient,
    norm,
    subtract,
)


class Unrolled(BilevelSolver):
    name = "unrolled"
    summary = "reverse-mode differentiation of f(x, y_k) through k SGD steps on g by Hessian-vector products (k = 0: first order)"
    citation = ("Franceschi et al., Forward and Reverse Gradient-Based Hyperparameter Optimization, ICML 2017; "
                "Liu, Simonyan and Yang, DARTS, ICLR 2019")

    class Params(SolverParams):
        unroll_steps: int = Field(1, ge=0, description="k: SGD steps on g differentiated through (0: first order)")
        lower_lr: float = Field(1e-2, gt=0, description="alpha: step size of the unrolled SGD steps on g")
        lr: float = Field(1e-3, gt=0, description="step size of the upper step x <- x - lr h")

    def hypergradient(self, problem: BilevelProblem) -> Tensors:
        iterates, batches = [], []
        for _ in range(self.unroll_steps):
            batch = problem.g_batch()
            iterates.append([y.detach().clone() for y in problem.lower])
            batches.append(batch)
            subtract(problem.lower, gradient(problem.g(batch), problem.lower), self.lower_lr)
        grads = gradient(problem.f(problem.f_batch()), problem.upper + problem.lower)
        h, v = grads[:len(problem.upper)], grads[len(problem.upper):]
        final = [y.detach().clone() for y in problem.lower]
        for point, batch in zip(reversed(iterates), reversed(batches)):
            with torch.no_grad():
                for y, value in zip(problem.lower, point):
                    y.copy_(value)
            curvature = LowerCurvature(problem, batch)
            h = [a - self.lower_lr * b for a, b in zip(h, curvature.xy(v))]
            v = [a - self.lower_lr * b for a, b in zip(v, curvature.yy(v))]
        with torch.no_grad():
            for y, value in zip(problem.lower, final):
                y.copy_(value)
        return h

    def step(self, problem: BilevelProblem) -> dict[str, float]:
        h = [t.detach() for t in self.hypergradient(problem)]
        subtract(problem.upper, h, self.lr)
        self.iteration += 1
        return {"hypergradient_norm": norm(h)}
