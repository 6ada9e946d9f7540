"""OFMU: bilevel unlearning by a penalty method, with gradient decorrelation in the inner problem.

Paper: "OFMU: Optimization-Driven Framework for Machine Unlearning", Asif and Mohammadi Amiri, ICLR 2026,
arXiv:2509.22483; research/methods.md §5. No public code;
the formulation below is the paper note's, and every unknown is a parameter.

    inner (forget):  max_theta Phi(theta) = L_f(theta) - beta * cos(grad L_f(theta), grad L_r(theta))
    outer (retain):  min_theta L_r(theta)  s.t.  grad Phi(theta) = 0,
                     relaxed to the penalty  F_k(theta) = L_r(theta) + rho_k * ||grad Phi(theta)||^2,  rho_k increasing

L_f and L_r are the mean answer-token NLLs of the forget and retain batches (L_f maximised, as gradient ascent: the
note infers the forget CE). Each call of :meth:`loss` is one outer iteration k:

1. ``inner_steps`` (T) ascent steps on Phi, taken in place on the model's parameters inside :meth:`loss`:
   theta <- theta + inner_lr * grad Phi(theta) (plain SGD, the note's warm start);
2. it returns F_k(theta): the training loop's backward then yields grad L_r + 2 rho_k * Hess(Phi) grad Phi, the
   outer step, by autodiff (double backward through the graph of grad Phi; never a dense Hessian).

grad Phi itself needs second derivatives (the cosine of two gradients), so its graph is built with
``create_graph=True``; the outer backward through ||grad Phi||^2 differentiates that graph once more.

The solver (``solver``, the bilevel machinery of :mod:`unlearnkit.optim.bilevel`, docs/bilevel.md): ``penalty``,
the only one that fits. OFMU's two levels share every parameter (min L_r(theta) s.t. grad Phi(theta) = 0): there
are no separate lower variables y with an implicit map y*(x), which BO-REP's Neumann hypergradient and unrolled
differentiation need, so ``bo_rep`` and ``unrolled`` are refused at config load with that reason, and an unknown
name lists the solvers. The penalty parts come from the shared module (``penalty_weight`` for rho_k,
``squared_norm`` for ||grad Phi||^2); the loop stays here, because :class:`~unlearnkit.optim.bilevel.problem.
BilevelProblem` needs distinct x and y, and because the training loop takes the outer step (it backpropagates
F_k, so gradient accumulation, clipping and the configured optimizer apply). The numbers are those of the
implementation before the solver parameter existed, bit for bit.

Choices (the paper's values for LLMs are unknown; each is a parameter):

- rho_k = rho + rho_increment * k, linear in the number k of earlier :meth:`loss` calls (a penalty that grows without
  bound but slowly; a geometric schedule would make rho_k astronomically large over hundreds of steps). k is this
  method's own counter, saved by :meth:`state_dict`; with gradient accumulation it counts micro-batches.
- T = 5 (the lower end of the note's 5-10), inner_lr = 1e-4, beta = 0.1, rho = 0.01, rho_increment = 0.01.
- The inner steps move the parameters directly, outside the optimizer: they use the local micro-batch, so with
  several processes the replicas would drift apart; :meth:`loss` refuses to take inner steps in a multi-process run.
- ``eps`` = 1e-12 in the cosine's denominator, so that a zero gradient gives cos = 0.
- The forwards run with PyTorch's "math" attention (``sdpa_kernel(SDPBackend.MATH)``): the fused scaled-dot-product
  kernels (flash, memory-efficient, CPU flash) cannot be differentiated twice. It costs attention memory O(T^2).

Cost per step (one outer iteration): each inner step builds both gradients with their graphs (2 F + 2 B) and takes
grad Phi through them (about 2 B more); the outer iteration does the same once more and then backpropagates
||grad Phi||^2 through that second-order graph (about twice its cost again). Roughly (T+1)·2 forwards and
(4T+8) backward passes: 4 and 12 at T = 1, 12 and 28 at the default T = 5 (GradDiff: 2 and 2), and memory for the
graph of a gradient (about three times a forward's activations). Research-grade: use it on small models.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from pydantic import Field, field_validator
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import forward_logits, mean_nll
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.optim.bilevel import SOLVERS
from unlearnkit.optim.bilevel.penalty import penalty_weight, squared_norm

EPS = 1e-12


def _dot(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


SHARED_PARAMETERS = ("separate upper and lower variables, but ofmu's two levels share every parameter "
                     "(min L_r s.t. grad Phi = 0): use solver: penalty")


def phi_gradient(model: nn.Module, params: list[nn.Parameter], forget_batch: dict, retain_batch: dict, beta: float,
                 create_graph: bool) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """grad Phi = grad (L_f - beta * cos(grad L_f, grad L_r)) over ``params``, and L_f, L_r, cos (for the logs).

    ``create_graph=True`` keeps the graph of grad Phi so that a function of it can be differentiated again.
    """
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no double backward
        forget_loss = mean_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        retain_loss = mean_nll(forward_logits(model, retain_batch), retain_batch["labels"])
    g_f = torch.autograd.grad(forget_loss, params, create_graph=True, materialize_grads=True)
    g_r = torch.autograd.grad(retain_loss, params, create_graph=True, materialize_grads=True)
    cosine = _dot(g_f, g_r) / (_dot(g_f, g_f).sqrt() * _dot(g_r, g_r).sqrt() + EPS)
    phi = forget_loss - beta * cosine
    grad_phi = torch.autograd.grad(phi, params, create_graph=create_graph, materialize_grads=True)
    return grad_phi, {"forget_loss": forget_loss, "retain_loss": retain_loss, "cosine": cosine}


@register
class OFMU(UnlearningMethod):
    """Inner ascent on L_f - beta cos(grad L_f, grad L_r); outer descent on L_r + rho_k ||grad Phi||^2."""

    name = "ofmu"
    summary = ("Bilevel penalty unlearning: T inner ascent steps on forget loss minus gradient cosine, then descent on "
               "retain loss + rho_k ||grad Phi||^2 by double backward; costly: about (T+1)*2 F + (4T+8) B per step")
    citation = ("Asif and Mohammadi Amiri, OFMU: Optimization-Driven Framework for Machine Unlearning, ICLR 2026, "
                "arXiv:2509.22483")
    uses_retain = True

    class Params(MethodParams):
        beta: float = Field(0.1, ge=0, description="weight of the gradient-cosine penalty in the inner objective Phi")
        rho: float = Field(0.01, ge=0, description="penalty weight rho_0 of ||grad Phi||^2 at the first step")
        rho_increment: float = Field(0.01, ge=0, description="rho_k = rho + rho_increment * k (k = earlier loss calls)")
        inner_steps: int = Field(5, ge=0, description="T: SGD ascent steps on Phi before each outer step")
        inner_lr: float = Field(1e-4, gt=0, description="step size of the inner ascent (plain SGD)")
        solver: str = Field("penalty", description="bilevel solver (optim/bilevel): penalty, the one that fits ofmu")

        @field_validator("solver")
        @classmethod
        def _fits(cls, value: str) -> str:
            if value not in SOLVERS:
                raise ValueError(f"unknown bilevel solver {value!r}: choose one of {', '.join(SOLVERS)}")
            if value != "penalty":
                raise ValueError(f"bilevel solver {value!r} needs {SHARED_PARAMETERS}")
            return value

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._calls = 0

    def state_dict(self) -> dict:
        return {"calls": self._calls}

    def load_state_dict(self, state: dict) -> None:
        self._calls = int(state["calls"])

    def current_rho(self) -> float:
        return penalty_weight(self.rho, self.rho_increment, self._calls)

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        if retain_batch is None:
            raise ValueError("ofmu needs a retain batch, but the training loop passed None")
        if self.inner_steps and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise RuntimeError("ofmu's inner steps move the parameters of each process separately: run it in one "
                               "process, or set inner_steps: 0")
        params = [p for p in model.parameters() if p.requires_grad]
        for _ in range(self.inner_steps):
            grad_phi, _ = phi_gradient(model, params, forget_batch, retain_batch, self.beta, create_graph=False)
            with torch.no_grad():
                for p, g in zip(params, grad_phi):
                    p.add_(g, alpha=self.inner_lr)
        grad_phi, parts = phi_gradient(model, params, forget_batch, retain_batch, self.beta, create_graph=True)
        penalty = squared_norm(grad_phi)
        rho = self.current_rho()
        self._calls += 1
        loss = parts["retain_loss"] + rho * penalty
        return loss, {"forget_loss": parts["forget_loss"].item(), "retain_loss": parts["retain_loss"].item(),
                      "gradient_cosine": parts["cosine"].item(), "penalty": penalty.item(), "rho": rho}
