"""SimNPO: reference-free NPO with a length-normalised likelihood and a margin.

Paper: "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning", Fan, Liu, Lin, Jia,
Zhang, Mei and Liu, 2024, arXiv:2410.07163. Reference code: OPTML-Group/Unlearn-Simple (TOFU ``simnpo``) and
OpenUnlearning ``SimNPO``.

Paper form:

    L = -(2/beta) * E_{D_f} log sigmoid(-(beta/|y|) * log pi_theta(y|x) - gamma)

Code form, implemented here (both reference codes):

    l = sequence_nll / |y| - delta,     L = -(2/beta) * E_{D_f} log sigmoid(beta * l)

i.e. log sigmoid(-(beta/|y|) log pi_theta - beta*delta): the code's margin is ``beta * delta``, the paper's is
``gamma``. They coincide at the default margin 0 (research/methods.md §1). ``|y|`` is the number of answer tokens
scored (label positions after the shift; equal to the reference's count of non-ignored labels since the prompt
always comes first).

The full loss is ``forget_weight * L + retain_weight * R`` with R None, "nll" (meanNLL on D_r) or "kl".
Defaults are OpenUnlearning's TOFU ones: beta=4.5, delta=0, forget weight (its ``gamma``) 0.125, retain weight
(its ``alpha``) 1, retain NLL. (The Unlearn-Simple TOFU config uses beta=2.5, forget weight 0.1375.)
No reference model. Cost: 1 forward+backward on each of the forget and retain batches.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import (
    answer_lengths,
    check_retain_loss,
    forward_logits,
    require_reference,
    retain_term,
    sequence_nll,
)
from unlearnkit.methods.registry import register


def simnpo_loss(nll: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(beta * (nll/|y| - delta)) over the batch (the reference code's form)."""
    return -(2.0 / beta) * F.logsigmoid(beta * (nll / lengths - delta)).mean()


@register
class SimNPO(UnlearningMethod):
    """forget_weight * L_SimNPO(beta, delta) + retain_weight * retain term."""

    name = "simnpo"
    summary = "Reference-free NPO on the length-normalised likelihood, with a margin."
    citation = ("Fan, Liu, Lin, Jia, Zhang, Mei and Liu, Simplicity Prevails: Rethinking Negative Preference "
                "Optimization for LLM Unlearning, 2024, arXiv:2410.07163")
    uses_retain = True

    def __init__(self, beta: float = 4.5, delta: float = 0.0, forget_weight: float = 0.125,
                 retain_weight: float = 1.0, retain_loss: str | None = "nll"):
        self.beta = beta
        self.delta = delta
        self.forget_weight = forget_weight
        self.retain_weight = retain_weight
        self.retain_loss = check_retain_loss(retain_loss, (None, "nll", "kl"), self.name)
        if retain_loss is None:
            self.uses_retain = False
        self._reference_model: nn.Module | None = None

    @property
    def needs_reference_model(self) -> bool:
        return self.retain_loss == "kl"

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        self._reference_model = require_reference(self.needs_reference_model, reference_model, self.name)

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        labels = forget_batch["labels"]
        nll = sequence_nll(forward_logits(model, forget_batch), labels)
        forget_loss = simnpo_loss(nll, answer_lengths(labels), self.beta, self.delta)
        loss = self.forget_weight * forget_loss
        logs = {"forget_loss": forget_loss.item()}
        if self.retain_loss is not None:
            retain_loss = retain_term(self.retain_loss, model, retain_batch, self._reference_model)
            loss = loss + self.retain_weight * retain_loss
            logs["retain_loss"] = retain_loss.item()
        return loss, logs
