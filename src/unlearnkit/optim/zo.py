"""Zeroth-order SGD: step along the randomized gradient estimate, two forward passes per direction, no backward."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from unlearnkit.optim.base import OptimizerParams, Registered
from unlearnkit.optim.closure import ClosureOptimizer
from unlearnkit.optim.registry import register
from unlearnkit.optim.zo_estimate import estimate


class ZerothOrderParams(OptimizerParams):
    """The estimate's settings, shared by ``zo``, ``adazo`` and ``zo_hybrid``."""

    mu: float = Field(1e-3, gt=0, description="smoothing radius μ of the central differences (MeZO's ε = 1e-3)")
    directions: int = Field(1, ge=1, description="q: random directions per step, 2 forward passes each (MeZO: 1)")
    distribution: Literal["sphere", "gaussian"] = Field("sphere", description=(
        "sphere: u uniform on the unit sphere, scaled by d (the Downgrade paper's choice, lower variance); "
        "gaussian: u ~ N(0, I)"))


@register
class ZerothOrder(ClosureOptimizer, Registered):
    """Zeroth-order SGD with the randomized gradient estimate (the ZO optimizer of Downgrade to Upgrade: Optimizer
    Simplification Enhances Robustness in LLM Unlearning, ICLR 2026, arXiv:2510.00761; in-place perturbations
    regenerated from a seed as in MeZO, Malladi et al., Fine-Tuning Language Models with Just Forward Passes,
    NeurIPS 2023, arXiv:2305.17333).

    Per step: ``ĝ = (1/q)·Σ_i c_i·u_i`` (:mod:`unlearnkit.optim.zo_estimate`: central differences of the whole step's
    loss along ``q`` Gaussian or sphere directions); ``θ ← θ·(1 − lr·wd) − lr·ĝ`` (decoupled weight decay, applied
    first). The update is applied direction by direction, regenerating ``u_i`` from its seed: no gradient, no
    optimizer state, no noise tensor is kept. Cost: ``2q`` forward passes; memory: inference plus one
    parameter-sized draw at a time. Defaults: μ = 1e-3 and q = 1 (MeZO); the paper leaves μ and q open.
    """

    name = "zo"
    summary = "ĝ = (1/q)·Σ [f(θ+μu_i) − f(θ−μu_i)]/(2μ)·s·u_i (sphere: s = d); θ ← θ − lr·(ĝ + wd·θ)"
    citation = ("Downgrade to Upgrade, ICLR 2026, arXiv:2510.00761 (ZO); MeZO, Malladi et al., NeurIPS 2023, "
                "arXiv:2305.17333 (seeded in-place perturbations)")
    first_order = False
    Params = ZerothOrderParams

    def __init__(self, params, lr: float = 1e-6, weight_decay: float = 0.0, mu: float = 1e-3, directions: int = 1,
                 distribution: str = "sphere"):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, mu=mu, directions=directions,
                                      distribution=distribution))

    @torch.no_grad()
    def step(self, closure):
        group = self.param_groups[0]
        parameters = self.parameter_list()
        directions, coefficients, loss = estimate(parameters, closure, group["mu"], group["directions"],
                                                  group["distribution"])
        pairs = self.parameters_with_groups()
        for p, g in pairs:
            p.mul_(1 - g["lr"] * g["weight_decay"])
        for u, c in zip(directions, coefficients):
            u.add_to(parameters, [-g["lr"] * c / len(directions) for _, g in pairs])
        return loss
