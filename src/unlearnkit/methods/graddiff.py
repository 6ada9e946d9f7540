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

from typing import Iterable

import torch
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import check_retain_loss, forward_logits, mean_nll, require_reference, retain_term
from unlearnkit.methods.registry import register


@register
class GradDiff(UnlearningMethod):
    """L = forget_weight * (-meanNLL(forget)) + retain_weight * (meanNLL or KL on retain)."""

    name = "graddiff"
    summary = "Gradient ascent on the forget set plus NLL (or KL to the original model) on the retain set."
    citation = "Liu, Liu and Stone, Continual Learning and Private Unlearning, 2022, arXiv:2203.12817"
    uses_retain = True

    def __init__(self, forget_weight: float = 1.0, retain_weight: float = 1.0, retain_loss: str = "nll"):
        self.forget_weight = forget_weight
        self.retain_weight = retain_weight
        self.retain_loss = check_retain_loss(retain_loss, ("nll", "kl"), self.name)
        self._reference_model: nn.Module | None = None

    @property
    def needs_reference_model(self) -> bool:
        return self.retain_loss == "kl"

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        self._reference_model = require_reference(self.needs_reference_model, reference_model, self.name)

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        forget_loss = -mean_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        retain_loss = retain_term(self.retain_loss, model, retain_batch, self._reference_model)
        loss = self.forget_weight * forget_loss + self.retain_weight * retain_loss
        return loss, {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}
