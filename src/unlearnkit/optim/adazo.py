"""R-AdaZO: Adam-like moments of the zeroth-order estimate, the second moment driven by the first."""

from __future__ import annotations

import torch
from pydantic import Field

from unlearnkit.optim.base import Registered
from unlearnkit.optim.closure import ClosureOptimizer
from unlearnkit.optim.registry import register
from unlearnkit.optim.zo import ZerothOrderParams
from unlearnkit.optim.zo_estimate import estimate


class AdaZOParams(ZerothOrderParams):
    beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first moment m of the estimate")
    beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second moment v, driven by m² (not ĝ²)")
    zeta: float = Field(1e-8, gt=0, description="ζ in θ ← θ − lr·m/√(v + ζ)")


def adazo_update(p: torch.Tensor, state: dict, group: dict, estimate_of_p) -> None:
    """One R-AdaZO update of ``p`` whose estimate is ``Σ_i coefficient_i·u_i`` (given as (coefficient, u) pairs,
    already divided by q): ``m ← β1·m + (1−β1)·ĝ``; ``v ← β2·v + (1−β2)·m²``; ``θ ← θ·(1 − lr·wd) − lr·m/√(v + ζ)``."""
    if "zo_m" not in state:
        state["zo_m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["zo_v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    m, v = state["zo_m"], state["zo_v"]
    m.mul_(group["beta1"])
    for coefficient, u in estimate_of_p:
        m.add_(u, alpha=(1 - group["beta1"]) * coefficient)
    v.mul_(group["beta2"]).addcmul_(m, m, value=1 - group["beta2"])
    p.mul_(1 - group["lr"] * group["weight_decay"])
    p.addcdiv_(m, (v + group["zeta"]).sqrt_(), value=-group["lr"])


def apply_adazo(optimizer: ClosureOptimizer, directions, coefficients) -> None:
    """The R-AdaZO update of every parameter of ``optimizer`` from the estimate's directions and coefficients."""
    parameters = optimizer.parameter_list()
    q = len(directions)
    per_direction = [list(u.tensors(parameters)) for u in directions]  # one parameter-sized draw per direction
    for j, (p, group) in enumerate(optimizer.parameters_with_groups()):
        adazo_update(p, optimizer.state[p], group, [(c / q, drawn[j]) for c, drawn in zip(coefficients,
                                                                                        per_direction)])


@register
class AdaZO(ClosureOptimizer, Registered):
    """R-AdaZO (Shu, Zhang, He and Dai, Refining Adaptive Zeroth-Order Optimization at Ease, ICML 2025,
    arXiv:2502.01014), the adaptive zeroth-order optimizer the Downgrade to Upgrade paper (arXiv:2510.00761) uses.

    Per step, with the estimate ``ĝ`` of :mod:`unlearnkit.optim.zo_estimate` and ``m = v = 0`` before the first step:
    ``m ← β1·m + (1−β1)·ĝ``; ``v ← β2·v + (1−β2)·m²`` (the refinement: the variance-reduced first moment drives the
    second, where ZO-AdaMM uses ĝ²); ``θ ← θ·(1 − lr·wd) − lr·m/√(v + ζ)`` (no bias correction, as in the paper's
    update; decoupled weight decay, applied first). Without bias correction the first step moves each coordinate
    by ``lr/√(1−β2)`` (about 32·lr with β2 = 0.999): choose the learning rate with that in mind. State: m and v (two
    parameter-sized tensors, so unlike ``zo`` this is not inference-sized). Defaults β1, β2 and ζ are Adam's (the paper's exact values are not in our notes).
    Cost: ``2q`` forward passes; the q directions are regenerated once each to update the moments.
    """

    name = "adazo"
    summary = "m ← β1·m + (1−β1)·ĝ; v ← β2·v + (1−β2)·m²; θ ← θ − lr·(m/√(v + ζ) + wd·θ), ĝ the ZO estimate"
    citation = ("Shu, Zhang, He and Dai, Refining Adaptive Zeroth-Order Optimization at Ease, ICML 2025, "
                "arXiv:2502.01014")
    first_order = False
    Params = AdaZOParams

    def __init__(self, params, lr: float = 1e-6, weight_decay: float = 0.0, mu: float = 1e-3, directions: int = 1,
                 distribution: str = "sphere", beta1: float = 0.9, beta2: float = 0.999, zeta: float = 1e-8):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, mu=mu, directions=directions,
                                      distribution=distribution, beta1=beta1, beta2=beta2, zeta=zeta))

    @torch.no_grad()
    def step(self, closure):
        group = self.param_groups[0]
        directions, coefficients, loss = estimate(self.parameter_list(), closure, group["mu"], group["directions"],
                                                  group["distribution"])
        apply_adazo(self, directions, coefficients)
        return loss
