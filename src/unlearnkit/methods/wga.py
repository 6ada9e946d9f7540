"""Weighted Gradient Ascent (WGA): gradient ascent on each answer token, weighted by the model's own probability of
that token raised to a power.

Paper: "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond", Q. Wang, J. P. Zhou, Z. Zhou,
Shin, Han and Weinberger, ICLR 2025, arXiv:2502.19301. Reference implementation: OpenUnlearning
``src/trainer/unlearn/wga.py`` (``compute_wga_loss``) and ``configs/trainer/WGA.yaml``.

For every answer token t of the forget batch, with p_t = pi_theta(y_t | x, y_<t):

    w_t    = sg(p_t)^beta                       (sg: stop-gradient; the weight carries no gradient)
    L_WGA  = (1/N) * sum_t w_t * log p_t        (N: the number of answer tokens of the whole batch)

i.e. OpenUnlearning's ``-(w * CE).mean()`` over the flattened non-ignored tokens: minimising it raises the NLL of
the forget tokens, each token's gradient being GA's scaled by p_t^beta, so tokens already forgotten (small p_t)
stop pulling and the ascent does not run away. beta = 0 is token-mean gradient ascent.

The full loss is ``forget_weight * L_WGA + retain_weight * R`` with R the retain term (None, "nll" = mean NLL on
D_r, or "kl"). Defaults are OpenUnlearning's ``WGA.yaml``: beta=1, gamma (forget_weight)=1, alpha
(retain_weight)=1, retain NLL (its trainer ran 5 epochs at learning rate 1e-5).

Differences from the reference: it loads a frozen reference model whatever the retain loss and runs a second,
unused forward pass on the forget batch (for its logs); here the reference model is held only for
retain_loss="kl" and the forget batch runs once. The losses are the same. Log-softmax in float32.
Cost: 1 forward+backward on the forget batch (+1 on the retain batch; +1 reference forward for "kl").
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


def wga_loss(logprobs: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over the answer tokens (``mask``) of ``sg(p)^beta * log p``, from per-token log-probs ``[B, T-1]``."""
    weights = logprobs.detach().exp() ** beta
    return (weights * logprobs)[mask].mean()


@register
class WGA(RetainRegularised):
    """forget_weight * L_WGA(beta) + retain_weight * retain term."""

    name = "wga"
    summary = "Gradient ascent on each forget token, weighted by the model's own token probability to the power beta."
    citation = ("Wang, Zhou, Zhou, Shin, Han and Weinberger, Rethinking LLM Unlearning Objectives: A Gradient "
                "Perspective and Go Beyond, ICLR 2025, arXiv:2502.19301")

    class Params(MethodParams):
        beta: float = Field(1.0, ge=0, description="power of the token probability in each token's weight "
                                                   "(0: plain token-mean gradient ascent)")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 1.0
        retain_loss: RetainLoss = "nll"

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        labels = forget_batch["labels"]
        logprobs = token_logprobs(forward_logits(model, forget_batch), labels)
        mask = answer_mask(labels)
        return wga_loss(logprobs, mask, self.beta), {"token_prob": logprobs.detach()[mask].exp().mean().item()}
