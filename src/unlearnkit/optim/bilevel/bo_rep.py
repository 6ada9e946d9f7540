"""BO-REP: normalized momentum on the upper level, initialization refinement and periodic lower-level updates.

Paper: Hao, Gong and Liu, "Bilevel Optimization under Unbounded Smoothness: A New Algorithm and Convergence
Analysis", ICLR 2024 (openreview LqRGsGWOTX); research/methods.md §22. Reference code:
MingruiLiu-ML-Lab/Bilevel-Optimization-under-Unbounded-Smoothness (hyperparam_opt/main.py for the defaults).

Iteration t (x_t upper, y_t lower, m_{-1} = 0):

1. lower level: at t = 0, ``init_steps`` SGD steps on g(x_0, .) (initialization refinement); at every later t with
   t mod I = 0, N (``lower_steps``) SGD steps on g(x_t, .) with step ``lower_lr``; at the other t, y is not touched;
2. hypergradient: h_t = grad_x f - grad^2_xy g v, v = Neumann series of Q terms for (grad^2_yy g + lambda I)^-1
   grad_y f (optim/bilevel/neumann.py; every product a Hessian-vector product by double backward);
3. upper level: m_t = beta m_{t-1} + (1 - beta) h_t;  x_{t+1} = x_t - eta m_t / ||m_t|| (||.|| over all of x).

Defaults: beta = 0.9, I = 3, N = 3, eta = 1e-4, lower_lr = 2e-3 from the reference code's hyper-parameter
optimisation script (``--beta``, ``--interval``, ``--y_warm_start``, ``--outer_update_lr``, ``--inner_update_lr``).
That code solves the linear system for v by SGD on an auxiliary variable (``--nu`` 1e-2) rather than a Neumann
series; this toolkit uses the Neumann series the issue asks for, with neumann_lr = 1e-2 (= nu) and Q = 10 (this
toolkit's choice). init_steps = 10 (the paper's refinement length is not in the script; this toolkit's choice).
damping lambda = 0 (the paper's estimator, g strongly convex); for a non-convex lower level (an LLM) set lambda > 0.
The Neumann step is checked once, at the first hypergradient: ``norm_check_iterations`` power iterations estimate
||grad^2_yy g + lambda I|| and neumann_lr times it >= 1 is refused (0 turns the check off; the series still stops
with an error when its terms grow).

Cost per iteration: Q - 1 Hessian-vector products and one mixed product (each about one backward through the graph
of grad_y g: 1 F + 1 B for that graph, ~1 B per product), one gradient of f, and N (or init_steps) gradients of g on
the iterations that update y.
"""

from __future__ import annotations

from pydantic import Field

from unlearnkit.optim.bilevel.base import BilevelSolver
from unlearnkit.optim.bilevel.neumann import (
    check_contraction,
    damped,
    neumann_inverse_hvp,
)
from unlearnkit.optim.bilevel.params import SolverParams
from unlearnkit.optim.bilevel.problem import (
    BilevelProblem,
    LowerCurvature,
    Tensors,
    gradient,
    lower_sgd,
    norm,
    subtract,
)


class BOREP(BilevelSolver):
    name = "bo_rep"
    summary = ("normalized momentum x <- x - eta m/||m|| on Neumann-series hypergradients; y refined at t = 0, then "
               "N SGD steps every I iterations")
    citation = ("Hao, Gong and Liu, Bilevel Optimization under Unbounded Smoothness: A New Algorithm and Convergence "
                "Analysis, ICLR 2024")

    class Params(SolverParams):
        upper_lr: float = Field(1e-4, gt=0, description="eta: the length of every upper step (normalized momentum)")
        momentum: float = Field(0.9, ge=0, lt=1, description="beta: m_t = beta m_{t-1} + (1 - beta) h_t")
        period: int = Field(3, ge=1, description="I: y is updated at the iterations t with t mod I = 0")
        lower_steps: int = Field(3, ge=0, description="N: SGD steps on g at each periodic lower update")
        lower_lr: float = Field(2e-3, gt=0, description="step size of the SGD steps on g")
        init_steps: int = Field(10, ge=0, description="SGD steps on g(x_0, .) before the first upper step")
        neumann_terms: int = Field(10, ge=1, description="Q: terms of the Neumann series (Q - 1 Hessian products)")
        neumann_lr: float = Field(1e-2, gt=0, description="eta_N of the Neumann series; needs eta_N ||H + lambda I|| < 1")
        damping: float = Field(0.0, ge=0, description="lambda: the series inverts grad^2_yy g + lambda I")
        norm_check_iterations: int = Field(10, ge=0, description="power iterations checking eta_N ||H|| < 1 once")

    def __init__(self, **values):
        super().__init__(**values)
        self.momentum_buffer: Tensors | None = None
        self._checked = False

    def state_dict(self) -> dict:
        buffer = None if self.momentum_buffer is None else [t.detach().clone() for t in self.momentum_buffer]
        return {**super().state_dict(), "momentum_buffer": buffer, "checked": self._checked}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        buffer = state["momentum_buffer"]
        self.momentum_buffer = None if buffer is None else [t.clone() for t in buffer]
        self._checked = bool(state["checked"])

    def update_lower(self, problem: BilevelProblem) -> int:
        """The SGD steps on g this iteration takes (init_steps at t = 0, N when t mod I = 0, else none)."""
        steps = self.init_steps if self.iteration == 0 else self.lower_steps if self.iteration % self.period == 0 else 0
        lower_sgd(problem, steps, self.lower_lr)
        return steps

    def hypergradient(self, problem: BilevelProblem) -> Tensors:
        """grad_x f - grad^2_xy g v at the current (x, y), v from the Neumann series; y is not moved."""
        grads = gradient(problem.f(problem.f_batch()), problem.upper + problem.lower)
        grad_x, grad_y = grads[:len(problem.upper)], grads[len(problem.upper):]
        curvature = LowerCurvature(problem, problem.g_batch())
        hvp = damped(curvature.yy, self.damping)
        if not self._checked and self.norm_check_iterations:
            check_contraction(hvp, grad_y, self.neumann_lr, self.norm_check_iterations)
            self._checked = True
        v = neumann_inverse_hvp(hvp, grad_y, self.neumann_lr, self.neumann_terms)
        return [gx - m for gx, m in zip(grad_x, curvature.xy(v))]

    def step(self, problem: BilevelProblem) -> dict[str, float]:
        lower = self.update_lower(problem)
        h = [t.detach() for t in self.hypergradient(problem)]
        if self.momentum_buffer is None:
            self.momentum_buffer = [(1 - self.momentum) * t for t in h]
        else:
            self.momentum_buffer = [self.momentum * m + (1 - self.momentum) * t for m, t in zip(self.momentum_buffer, h)]
        size = norm(self.momentum_buffer)
        if size > 0:
            subtract(problem.upper, self.momentum_buffer, self.upper_lr / size)
        self.iteration += 1
        return {"hypergradient_norm": norm(h), "momentum_norm": size, "lower_steps": float(lower)}
