"""The Rolling Ball Optimizer: roll a ball of radius ρ along the loss's graph, so that minima sharper than the ball
cannot be reached."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from unlearnkit.optim.base import OptimizerParams, Registered
from unlearnkit.optim.closure import ClosureOptimizer, global_norm
from unlearnkit.optim.registry import register


class RollingBallParams(OptimizerParams):
    rho: float = Field(1.0, gt=0, description="ρ: the ball's radius (the code's 'macroscopic' regime: 1 to 5)")
    projection_steps: int = Field(10, ge=1, description="n_proj: gradient steps that find the new contact point "
                                                        "(code examples: 10 to 20)")
    gamma: float = Field(0.05, gt=0, description="γ: step size of the contact-point search (code examples: 0.01 to "
                                                 "0.05)")


@register
class RollingBall(ClosureOptimizer, Registered):
    """Rolling Ball Optimizer (RBO; "Rolling Ball Optimizer: Learning by Ironing Out Loss Landscape Wrinkles", ICLR
    2026 submission, not accepted; authors' code ``rbouadjenek/milestone-d1.2-followup``, ``utilities/optim.py``;
    rule as summarised in our methods.md §20).

    On the graph ``{(θ, f(θ))}`` of the whole step's loss ``f``, with ``g = ∇f(θ)`` and ``η`` the scheduled learning
    rate: the ball's centre is ``c = (θ, f(θ)) + ρ·n`` with the unit normal ``n = (−g, 1)/√(‖g‖² + 1)``; it moves
    along the tangent ``τ = (g, ‖g‖²)`` to ``c̃ = c − η·τ``; the new contact point is
    ``argmin_θ' ‖θ' − c̃_θ‖² + (f(θ') − c̃_y)²``, approached by ``n_proj`` steps
    ``θ' ← θ' − γ·[(θ' − c̃_θ) + (f(θ') − c̃_y)·∇f(θ')]`` from ``θ' = θ``. Weight decay (ours: the paper has none) is
    decoupled, on the centre: ``c̃_θ −= η·wd·θ``. A point whose Hessian has spectral norm σ > 1/ρ cannot be a contact
    point, so sharp minima are avoided. Defaults: ρ = 1, n_proj = 10, γ = 0.05 (within the code examples' ranges;
    with γ = 0.05 ten steps cover about 40% of the way to the centre's foot). Cost: 1 + n_proj forward-backward
    passes; memory: one parameter-sized buffer (c̃_θ) beside the gradients.
    """

    name = "rolling_ball"
    summary = ("c̃ = (θ, f) + ρ·(−g, 1)/√(‖g‖²+1) − lr·(g, ‖g‖²); θ ← argmin ‖θ' − c̃_θ‖² + (f(θ') − c̃_y)² "
               "by n_proj steps of γ")
    citation = ("Rolling Ball Optimizer, ICLR 2026 submission (OpenReview), code rbouadjenek/milestone-d1.2-followup")
    Params = RollingBallParams

    def __init__(self, params, lr: float = 1.0, weight_decay: float = 0.0, rho: float = 1.0,
                 projection_steps: int = 10, gamma: float = 0.05):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, rho=rho, projection_steps=projection_steps,
                                      gamma=gamma))

    @torch.no_grad()
    def step(self, closure):
        group = self.param_groups[0]
        parameters, pairs = self.parameter_list(), self.parameters_with_groups()
        with torch.enable_grad():
            loss = closure(grad=True)
        grads = [p.grad for p in parameters]
        squared = global_norm(grads) ** 2
        length = math.sqrt(squared + 1)
        rho, eta = group["rho"], group["lr"]
        centre = []  # c̃_θ = θ − ρ·g/√(‖g‖²+1) − η·g − η·wd·θ
        for (p, g), grad in zip(pairs, grads):
            c = p.detach().clone().mul_(1 - g["lr"] * g["weight_decay"])
            if grad is not None:
                c.add_(grad, alpha=-(rho / length + g["lr"]))
            centre.append(c)
        height = loss + rho / length - eta * squared  # c̃_y
        for _ in range(group["projection_steps"]):
            with torch.enable_grad():
                value = closure(grad=True)
            for (p, g), c in zip(pairs, centre):
                direction = p - c
                if p.grad is not None:
                    direction.add_(p.grad, alpha=value - height)
                p.add_(direction, alpha=-g["gamma"])
        return loss
