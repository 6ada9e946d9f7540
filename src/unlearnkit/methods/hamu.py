"""HAMU: hardness-aware multi-objective unlearning, one step as the solution of a small constrained problem.

Paper: "How Hard Can It Be? Hardness-Aware Multi-Objective Unlearning", Chen, Niu, Sim, Liu, Chen and Low, ICML 2026,
arXiv:2606.02119; reference code aoi3142/HAMU
(``hamu/methods/core.py: compute_hamu_update``, ``hamu/methods/hamu.py: HAMUOptimizer``), research/methods.md §6.

With ``g_r = grad meanNLL(retain batch)`` and ``g_f = grad meanNLL(forget batch)`` (plain NLLs, no reference model),
**HAMU-Q** chooses the parameter update delta that helps the retain loss most while raising the forget loss by at
least B, within a trust region of radius R:

    min_delta g_r . delta   s.t.   g_f . delta >= B,   ||delta|| <= R

The hardness is kappa = g_r . g_f: it picks the branch of the closed form (the code's, carried here):

- ``||g_f|| ~ 0``: delta = 0 (nothing to push; with B > 0 the problem is infeasible);
- infeasible (R^2 < B^2/||g_f||^2) or ``g_r`` colinear with ``g_f``: delta = (B/||g_f||^2) g_f;
- easy (kappa <= -B ||g_r|| / R: the retain descent step already raises the forget loss by B): delta = -R g_r/||g_r||;
- otherwise ("rectified"): delta = (B/||g_f||^2) g_f - sqrt(R^2 - B^2/||g_f||^2) g_r_perp/||g_r_perp||, with
  g_r_perp = g_r - (kappa/||g_f||^2) g_f.

**HAMU-U** (``variant="u"``) swaps the roles, (g_r, g_f) -> (-g_f, -g_r): the largest forget-loss increase subject
to a retain improvement of at least B. As in the reference (``--use_lr_radius``) R = lr ||g_r|| and B = lr * ratio
(``constraint_ratio``, default 0.5, the code's LLM setting). The code hands its optimizer ``grad = -delta/lr`` with
plain SGD (no momentum), so that the update is exactly delta.

**How it runs here.** Inside :meth:`loss` the two gradients are taken with ``torch.autograd.grad`` over the trainable
parameters; delta/lr is always ``c_f g_f + c_r g_r`` with scalars that do not depend on lr (R and B are both
proportional to lr), so the method returns ``-(c_f L_f + c_r L_r)`` with DETACHED coefficients: the training loop's
backward then yields exactly ``-delta/lr``, and ``optimizer: sgd`` (momentum 0) takes HAMU's step. With another
optimizer (the default AdamW) the step follows the same direction through that optimizer's preconditioning, not
HAMU's exact delta: use sgd to reproduce the paper.

Choices (each a parameter):

- ``balancing``: "trust_region" (default, the paper's HAMU, above) or "mgda": the two-objective MGDA min-norm
  combination (Desideri 2012; Sener and Koltun, 2018, arXiv:1810.04650) of the descent gradients of the forget
  objective -L_f and the retain loss L_r, d = a (-g_f) + (1-a) g_r with a = clip(((g_r + g_f) . g_r) / ||g_r + g_f||^2,
  0, 1); the loss returned is a (-L_f) + (1-a) L_r with a detached.
- The problem is solved over the WHOLE model's gradient (the code's ``--full_grad``), not tensor by tensor (the
  code's default, which spreads B over tensors in proportion to ||g_r^(i)|| ||g_f^(i)||): one pair of scalars per step
  is what lets the loop's ordinary backward produce the update. Per-tensor solving is not implemented.
- The reference clips the retain gradient to norm 1 and can stop training when its stopping criterion is met; neither
  is done here (the loop owns clipping and the number of steps). The stopping margin
  ``R sqrt(||g_r||^2 ||g_f||^2 - kappa^2)/||g_r|| - B`` (in units of lr; below 0 the reference would stop) is logged.
- The coefficients are computed per micro-batch (and per process): with gradient accumulation or several processes
  the summed update is a sum of HAMU steps, not one HAMU step on the summed gradients.

Cost per step: 2 forward + 2 backward for the two gradients (graphs kept), then the loop's backward through both
graphs (2 more backward): about 2 F + 4 B, twice GradDiff's backward work. No reference model.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import forward_logits, mean_nll
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register

EPS = 1e-12
BRANCHES = ("zero_forget_grad", "infeasible", "direct", "colinear", "rectified")  # logged as their position


def flat_grad(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """The gradient of ``loss`` w.r.t. ``params`` as one float64 vector (zeros for unused parameters); graph kept."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).double() for p, g in zip(params, grads)])


def trust_region_coefficients(gr_sq: float, gf_sq: float, kappa: float, ratio: float) -> tuple[float, float, str]:
    """HAMU-Q's delta/lr = a * g_f + b * g_r with R = lr ||g_r||, B = lr * ratio: returns (a, b, branch).

    ``gr_sq``, ``gf_sq`` = ||g_r||^2, ||g_f||^2; ``kappa`` = g_r . g_f. Every quantity is divided by lr, so the result
    does not depend on it.
    """
    gr_norm = gr_sq**0.5
    if gf_sq < EPS:
        return 0.0, (-1.0 if ratio <= EPS else 0.0), "zero_forget_grad"
    ascent = ratio / gf_sq
    discriminant = gr_sq - ratio * ratio / gf_sq  # (R^2 - B^2/||g_f||^2) / lr^2
    if discriminant < 0:
        return ascent, 0.0, "infeasible"
    if kappa <= -ratio:  # kappa <= -B ||g_r|| / R with R = lr ||g_r||, B = lr ratio
        return 0.0, -1.0, "direct"  # -R g_r / ||g_r|| / lr = -g_r
    perp_sq = max(gr_sq - kappa * kappa / gf_sq, 0.0)  # ||g_r - (kappa/||g_f||^2) g_f||^2
    if perp_sq**0.5 < EPS * max(gr_norm, 1.0):
        return ascent, 0.0, "colinear"
    scale = discriminant**0.5 / perp_sq**0.5
    # delta/lr = ascent g_f - scale (g_r - kappa/||g_f||^2 g_f)
    return ascent + scale * kappa / gf_sq, -scale, "rectified"


def mgda_weight(forget_descent: torch.Tensor, retain_descent: torch.Tensor) -> float:
    """The a in [0, 1] minimising ||a u + (1-a) v|| (u = forget descent gradient, v = retain gradient)."""
    diff = forget_descent - retain_descent
    denominator = float(diff @ diff)
    if denominator < EPS:
        return 0.5
    return min(max(float((retain_descent - forget_descent) @ retain_descent) / denominator, 0.0), 1.0)


@register
class HAMU(UnlearningMethod):
    """Each step: the trust-region HAMU update (or the MGDA min-norm combination) of the forget and retain gradients."""

    name = "hamu"
    summary = ("Hardness-aware multi-objective unlearning: each step raises the forget NLL by a set amount while "
               "helping the retain NLL most, in a trust region (2F+4B per step; exact with optimizer sgd)")
    citation = ("Chen, Niu, Sim, Liu, Chen and Low, How Hard Can It Be? Hardness-Aware Multi-Objective Unlearning, "
                "ICML 2026, arXiv:2606.02119")
    uses_retain = True

    class Params(MethodParams):
        balancing: Literal["trust_region", "mgda"] = Field(
            "trust_region", description="'trust_region': the paper's HAMU step; 'mgda': the min-norm combination of "
                                        "the forget-ascent and retain-descent gradients")
        variant: Literal["q", "u"] = Field("q", description="trust region only: 'q' helps retain subject to a forget "
                                                            "increase >= B; 'u' swaps the roles (HAMU-U)")
        constraint_ratio: float = Field(0.5, ge=0, description="trust region only: B = lr * ratio, the required "
                                                               "forget-loss increase per step (code default 0.5)")

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        if retain_batch is None:
            raise ValueError("hamu needs a retain batch, but the training loop passed None")
        params = [p for p in model.parameters() if p.requires_grad]
        forget_loss = mean_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        retain_loss = mean_nll(forward_logits(model, retain_batch), retain_batch["labels"])
        g_f, g_r = flat_grad(forget_loss, params), flat_grad(retain_loss, params)
        kappa, gf_sq, gr_sq = float(g_r @ g_f), float(g_f @ g_f), float(g_r @ g_r)
        logs = {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item(), "gradient_dot_product": kappa,
                "gradient_cosine": kappa / max((gf_sq * gr_sq) ** 0.5, EPS)}
        if self.balancing == "mgda":
            a = mgda_weight(-g_f, g_r)
            return a * -forget_loss + (1 - a) * retain_loss, {**logs, "mgda_forget_weight": a}
        if self.variant == "q":
            coef_f, coef_r, branch = trust_region_coefficients(gr_sq, gf_sq, kappa, self.constraint_ratio)
        else:  # (g_r, g_f) -> (-g_f, -g_r): delta/lr = a (-g_r) + b (-g_f)
            a, b, branch = trust_region_coefficients(gf_sq, gr_sq, kappa, self.constraint_ratio)
            coef_f, coef_r = -b, -a
        # the loop's backward of -(coef_f L_f + coef_r L_r) is -delta/lr
        loss = -(coef_f * forget_loss + coef_r * retain_loss)
        # the reference's stopping criterion R sqrt(||g_r||^2 ||g_f||^2 - kappa^2)/||g_r|| < B, in units of lr
        margin = max(gf_sq * gr_sq - kappa * kappa, 0.0) ** 0.5 - self.constraint_ratio
        return loss, {**logs, "forget_coefficient": coef_f, "retain_coefficient": coef_r,
                      "branch": float(BRANCHES.index(branch)), "stopping_margin": margin}
