"""Gradient difference (GradDiff): gradient ascent on the forget set, descent on the retain set.

Paper: "Continual Learning and Private Unlearning", Liu, Liu and Stone, 2022, arXiv:2203.12817; the TOFU
baselines "grad_diff" and "KL" ("TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al., 2024,
arXiv:2401.06121). Reference: OpenUnlearning ``GradDiff`` (gamma = alpha = 1, retain_loss_type NLL or KL).

    L = gamma * (-meanNLL(D_f)) + alpha * R(D_r),
    R = meanNLL(D_r)                       (retain_loss="nll")
    R = KL(pi_ref || pi_theta) on D_r      (retain_loss="kl", see :func:`unlearnkit.methods.losses.retain_kl`)

``gamma`` is ``forget_weight`` and ``alpha`` is ``retain_weight``. Cost: 2 forward+backward (+1 reference forward
for "kl").
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.retain_regularised import ForgetWeight, RetainRegularised, RetainWeight
from unlearnkit.methods.losses import forward_logits, mean_nll
from unlearnkit.methods.registry import register


@register
class GradDiff(RetainRegularised):
    """L = forget_weight * (-meanNLL(forget)) + retain_weight * (meanNLL or KL on retain)."""

    name = "graddiff"
    summary = "Gradient ascent on the forget set plus NLL (or KL to the original model) on the retain set."
    citation = "Liu, Liu and Stone, Continual Learning and Private Unlearning, 2022, arXiv:2203.12817"

    class Params(MethodParams):
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: Literal["nll", "kl"] = Field(
            "nll", description="retain term: 'nll' (mean NLL on the retain set) or 'kl' (KL(pi_ref || pi_theta) on the "
                               "retain set; holds a frozen copy of the model)")

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return -mean_nll(forward_logits(model, forget_batch), forget_batch["labels"]), {}
