"""Gradient ascent (GA): raise the loss of the forget set.

Paper: "Knowledge Unlearning for Mitigating Privacy Risks in Language Models", Jang et al., 2022, arXiv:2210.01504;
the TOFU baseline "grad_ascent" ("TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al., 2024,
arXiv:2401.06121). Reference: OpenUnlearning ``GradAscent``, the NPO TOFU code ``grad_ascent``.

    L_GA = -meanNLL(D_f)

with ``meanNLL`` the Hugging Face ``outputs.loss`` (mean over every answer token of the batch). Unbounded below:
the model collapses if trained long enough. No retain data, no reference model. Cost: 1 forward+backward.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import forward_logits, mean_nll
from unlearnkit.methods.registry import register


@register
class GradientAscent(UnlearningMethod):
    """L = -meanNLL(forget batch). No parameters."""

    name = "ga"
    summary = "Gradient ascent on the forget set (negated mean NLL); simple, unbounded, collapses if run long."
    citation = "Jang et al., Knowledge Unlearning for Mitigating Privacy Risks in Language Models, 2022, arXiv:2210.01504"

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        forget_nll = mean_nll(forward_logits(model, forget_batch), forget_batch["labels"])
        loss = -forget_nll
        return loss, {"forget_loss": loss.item(), "forget_nll": forget_nll.item()}
