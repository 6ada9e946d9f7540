"""Negative Preference Optimization (NPO): DPO with the forget answer as the only, dispreferred, response.

Paper: "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning", Zhang, Lin, Bai and
Mei, 2024, arXiv:2404.05868. Reference code: licong-lin/negative-preference-optimization ``TOFU/dataloader.py``
(``npo``, ``npo_grad_diff``, ``npo_KL``) and OpenUnlearning ``NPO``.

    L_NPO = -(2/beta) * E_{D_f} log sigmoid(-beta * log(pi_theta(y|x) / pi_ref(y|x)))
          =  (2/beta) * E_{D_f} log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta)

with ``log pi(y|x) = -sequence_nll`` (answer tokens SUMMED, the reference ``get_batch_loss``). The reference code
writes it ``neg_log_ratio = nll_theta - nll_ref``; ``loss = -logsigmoid(beta * neg_log_ratio).mean() * 2 / beta``,
the same thing. At theta = theta_ref the loss is (2/beta)·log 2; its gradient is GA's reweighted by
2·pi_theta^beta / (pi_theta^beta + pi_ref^beta), and it tends to GA's (with summed NLL) as beta -> 0.

The full loss is ``forget_weight * L_NPO + retain_weight * R`` with R the retain term: None (plain NPO), "nll"
(meanNLL on D_r: NPO+GD, the paper's ``npo_grad_diff``) or "kl" (KL(pi_ref || pi_theta) on D_r: ``npo_KL``).
Defaults are OpenUnlearning's NPO, which subclasses its GradDiff: beta=0.1, retain NLL, gamma = alpha = 1
(the NPO repo's TOFU config: npo_coeff = grad_diff_coeff = 1).

Unlike the reference, pi_ref(y|x) of every forget example is computed once in :meth:`NPO.prepare` on the initial
model and looked up by ``forget_batch["index"]``: no second model is held unless retain_loss="kl".
Cost: 1 forward+backward on the forget batch (+1 on the retain batch, +1 reference forward for "kl").
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.retain_regularised import ForgetWeight, RetainLoss, RetainRegularised, RetainWeight
from unlearnkit.methods.losses import forward_logits, sequence_nll
from unlearnkit.methods.reference_logprobs import compute_reference_logprobs, lookup_reference
from unlearnkit.methods.registry import register


def npo_loss(logprob: torch.Tensor, reference_logprob: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(-beta * (log pi_theta - log pi_ref)) over the batch."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logprob - reference_logprob)).mean()


@register
class NPO(RetainRegularised):
    """forget_weight * L_NPO(beta) + retain_weight * retain term (None, "nll" or "kl")."""

    name = "npo"
    summary = "Negative preference optimization: a bounded, reweighted gradient ascent against the original model."
    citation = ("Zhang, Lin, Bai and Mei, Negative Preference Optimization: From Catastrophic Collapse to "
                "Effective Unlearning, 2024, arXiv:2404.05868")

    class Params(MethodParams):
        beta: float = Field(0.1, gt=0, description="inverse temperature: how soon the loss saturates once pi_theta(y|x) "
                                                   "falls below pi_ref(y|x); NPO tends to gradient ascent as beta -> 0")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    def __init__(self, **values):
        super().__init__(**values)
        self._reference_logprobs: torch.Tensor | None = None

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Store log pi_ref(y|x) of every forget example (the untouched ``model``), and the reference for "kl"."""
        self._reference_logprobs = compute_reference_logprobs(model, forget_batches)[""]
        super().prepare(model, forget_batches, reference_model)

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logprob = -sequence_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        reference = lookup_reference(self._reference_logprobs, forget_batch["index"], logprob.device)
        return npo_loss(logprob, reference, self.beta), {"log_ratio": (logprob - reference).mean().item()}
