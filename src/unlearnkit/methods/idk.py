"""Unlearning by teaching a refusal: IdkNLL (fine-tune on "I don't know") and IdkDPO (prefer it to the answer).

Both use the refusal string assigned to each forget example (:func:`unlearnkit.data.idk.assign_idk`), given in the
forget batch as ``idk_input_ids`` / ``idk_attention_mask`` / ``idk_labels``: the same question, refusal answer.

**IdkNLL** — the TOFU "idk" baseline ("TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al., 2024,
arXiv:2401.06121; reference: licong-lin/negative-preference-optimization ``TOFU/dataloader.py``, ``idk``):

    L = forget_weight * meanNLL(x_f, y_idk) + retain_weight * R(D_r)

The reference concatenates the refusal and retain batches and takes ONE token mean over both; here the two means
are taken separately and weighted (equal to the reference when both batches hold the same number of answer
tokens). A reconstruction, chosen so that the weights mean what they say.

**IdkDPO** — DPO ("Direct Preference Optimization: Your Language Model is Secretly a Reward Model", Rafailov et
al., 2023, arXiv:2305.18290) with y_w = the refusal and y_l = the true forget answer, as in the NPO repo's TOFU
``dpo`` / ``dpo_grad_diff`` / ``dpo_KL`` and OpenUnlearning ``DPO`` (IdkDPO):

    L_DPO = -(2/beta) * E log sigmoid(beta * [(log pi_theta(y_w|x) - log pi_ref(y_w|x))
                                              - (log pi_theta(y_l|x) - log pi_ref(y_l|x))])
    L = forget_weight * L_DPO + retain_weight * R(D_r)

with sequence-SUMMED log-probabilities and the 2/beta scale of the reference (vanilla DPO has none). Defaults as
OpenUnlearning's IdkDPO: beta=0.1, retain NLL, weights 1. The reference log-probabilities of both answers are
computed once in :meth:`IdkDPO.prepare` on the initial model, so no second model is held unless retain_loss="kl".
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.retain_regularised import ForgetWeight, RetainLoss, RetainRegularised, RetainWeight
from unlearnkit.methods.losses import (
    forward_logits,
    mean_nll,
    sequence_nll,
)
from unlearnkit.methods.reference_logprobs import compute_reference_logprobs, lookup_reference
from unlearnkit.methods.registry import register

TOFU_CITATION = "Maini, Feng, Schwarzschild, Lipton and Kolter, TOFU: A Task of Fictitious Unlearning for LLMs, 2024, arXiv:2401.06121"


def dpo_loss(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(beta * (chosen_ratio - rejected_ratio)); ratios are log pi_theta - log pi_ref."""
    return -(2.0 / beta) * F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()


@register
class IdkNLL(RetainRegularised):
    """forget_weight * meanNLL(question, refusal) + retain_weight * retain term."""

    name = "idknll"
    summary = "Fine-tune the forget questions toward a refusal (\"I don't know\") while keeping the retain set."
    citation = TOFU_CITATION
    uses_idk = True

    class Params(MethodParams):
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return mean_nll(forward_logits(model, forget_batch, "idk_"), forget_batch["idk_labels"]), {}


@register
class IdkDPO(RetainRegularised):
    """forget_weight * L_DPO(y_w = refusal, y_l = answer; beta) + retain_weight * retain term."""

    name = "idkdpo"
    summary = "DPO that prefers a refusal to the true forget answer, against the original model."
    citation = ("Rafailov et al., Direct Preference Optimization: Your Language Model is Secretly a Reward Model, "
                "2023, arXiv:2305.18290; as an unlearning baseline: " + TOFU_CITATION)
    uses_idk = True

    class Params(MethodParams):
        beta: float = Field(0.1, gt=0, description="DPO inverse temperature: how strongly the refusal is preferred to "
                                                   "the answer, relative to the original model")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    def __init__(self, **values):
        super().__init__(**values)
        self._reference_answer: torch.Tensor | None = None
        self._reference_refusal: torch.Tensor | None = None

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Store log pi_ref of the true answer and of the refusal of every forget example (the untouched ``model``)."""
        tables = compute_reference_logprobs(model, forget_batches, prefixes=("", "idk_"))
        self._reference_answer, self._reference_refusal = tables[""], tables["idk_"]
        super().prepare(model, forget_batches, reference_model)

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        answer = -sequence_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        refusal = -sequence_nll(forward_logits(model, forget_batch, "idk_"), forget_batch["idk_labels"])
        index = forget_batch["index"]
        answer_ratio = answer - lookup_reference(self._reference_answer, index, answer.device)
        refusal_ratio = refusal - lookup_reference(self._reference_refusal, index, refusal.device)
        return dpo_loss(refusal_ratio, answer_ratio, self.beta), {
            "refusal_log_ratio": refusal_ratio.mean().item(), "answer_log_ratio": answer_ratio.mean().item()}
