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

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.retain_regularised import ForgetWeight, RetainLoss, RetainRegularised, RetainWeight
from unlearnkit.methods.losses import (
    answer_lengths,
    forward_logits,
    sequence_nll,
)
from unlearnkit.methods.registry import register


def simnpo_loss(nll: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(beta * (nll/|y| - delta)) over the batch (the reference code's form)."""
    return -(2.0 / beta) * F.logsigmoid(beta * (nll / lengths - delta)).mean()


@register
class SimNPO(RetainRegularised):
    """forget_weight * L_SimNPO(beta, delta) + retain_weight * retain term."""

    name = "simnpo"
    summary = "Reference-free NPO on the length-normalised likelihood, with a margin."
    citation = ("Fan, Liu, Lin, Jia, Zhang, Mei and Liu, Simplicity Prevails: Rethinking Negative Preference "
                "Optimization for LLM Unlearning, 2024, arXiv:2410.07163")

    class Params(MethodParams):
        beta: float = Field(4.5, gt=0, description="inverse temperature applied to the length-normalised NLL; "
                                                   "also scales the margin (beta * delta)")
        delta: float = Field(0.0, description="margin subtracted from the length-normalised NLL (the paper's "
                                              "gamma = beta * delta)")
        forget_weight: ForgetWeight = 0.125
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        labels = forget_batch["labels"]
        nll = sequence_nll(forward_logits(model, forget_batch), labels)
        return simnpo_loss(nll, answer_lengths(labels), self.beta, self.delta), {}
