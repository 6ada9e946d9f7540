"""SatImp: gradient ascent on each answer token, weighted for both saturation and importance.

Paper: "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", Yang, Wang, Huang, Liu, Zhang and Han,
ICML 2025, arXiv:2505.11953. Reference implementation: OpenUnlearning ``src/trainer/unlearn/satimp.py``
(``compute_satimp_loss``) and ``configs/trainer/SatImp.yaml``.

The paper separates two goals of reweighting forget tokens: *saturation* (emphasise what is not yet unlearned; a
token the model already gives a low probability gets a low weight: p^beta1, as WGA) and *importance* (the opposite
ordering, a higher weight for lower-likelihood tokens: (1 - p)^beta2). SatImp multiplies them. For every answer
token t of the forget batch, with p_t = pi_theta(y_t | x, y_<t) and sg the stop-gradient:

    w_t       = sg(p_t)^beta1 * (1 - sg(p_t))^beta2
    L_SatImp  = (1/N) * sum_t w_t * log p_t       (N: the number of answer tokens of the whole batch)

(OpenUnlearning's ``-(w_sat * w_imp * CE).mean()`` over the flattened non-ignored tokens). beta2 = 0 is WGA.

The full loss is ``forget_weight * L_SatImp + retain_weight * R`` (R None, "nll" or "kl"). Defaults are
OpenUnlearning's ``SatImp.yaml``: beta1=5, beta2=1, gamma (forget_weight)=0.1, alpha (retain_weight)=1, retain NLL
(learning rate 1e-5, 5 epochs). Its trainer class's own keyword defaults are the other way round (gamma=1,
alpha=0.1), but the config, which every run reads, sets gamma=0.1 and alpha=1; those are the defaults here.

Differences from the reference: as for WGA, no unused reference model and no second forward pass of the forget
batch; the losses are the same. Cost: 1 forward+backward on the forget batch (+1 on the retain batch).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from unlearnkit.methods.losses import answer_mask, forward_logits, token_logprobs
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.methods.retain_regularised import (
    ForgetWeight,
    RetainLoss,
    RetainRegularised,
    RetainWeight,
)


def satimp_weights(logprobs: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """``p^beta1 * (1 - p)^beta2`` of each token, detached (saturation times importance)."""
    p = logprobs.detach().exp()
    return p ** beta1 * (1 - p) ** beta2


def satimp_loss(logprobs: torch.Tensor, mask: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """Mean over the answer tokens (``mask``) of ``w * log p`` with the SatImp weights."""
    return (satimp_weights(logprobs, beta1, beta2) * logprobs)[mask].mean()


@register
class SatImp(RetainRegularised):
    """forget_weight * L_SatImp(beta1, beta2) + retain_weight * retain term."""

    name = "satimp"
    summary = "Token-weighted gradient ascent: weight p^beta1 (saturation) times (1-p)^beta2 (importance)."
    citation = ("Yang, Wang, Huang, Liu, Zhang and Han, Exploring Criteria of Loss Reweighting to Enhance LLM "
                "Unlearning, ICML 2025, arXiv:2505.11953")

    class Params(MethodParams):
        beta1: float = Field(5.0, ge=0, description="power of the token probability p (saturation weight p^beta1)")
        beta2: float = Field(1.0, ge=0, description="power of 1 - p (importance weight (1-p)^beta2)")
        forget_weight: ForgetWeight = 0.1
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        labels = forget_batch["labels"]
        logprobs = token_logprobs(forward_logits(model, forget_batch), labels)
        return satimp_loss(logprobs, answer_mask(labels), self.beta1, self.beta2), {}
