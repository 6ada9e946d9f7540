"""CATNIP: token-level negative preference against the model's own reverse policy.

Paper: "CATNIP: Calibrated and Tokenized Negative Preference Alignment" (arXiv:2602.02824; ICLR 2026 submission).
No code is public; the loss below is a RECONSTRUCTION from the abstract and the public reviews
(research/methods.md §4): an NPO-style loss whose reference policy is the "reverse policy" ``1 - pi_theta``,
taken per token and averaged over tokens (no length bias), with no retain data and no reference model.

With ``p_t = pi_theta(y_t | x, y_<t)`` for every answer token of the forget batch (N tokens in all):

    L = -(2/beta) * (1/N) * sum_t log sigmoid(-beta * [log p_t - log(1 - p_t)])
      =  (2/beta) * (1/N) * sum_t log(1 + (p_t / (1 - p_t))^beta)

That is NPO (``methods/npo.py``) applied to each token with ``pi_ref = 1 - p_t``. Choices (typed parameters):

- ``stop_gradient``: whether the reverse-policy reference ``log(1 - p_t)`` is a constant ("reference", default) or
  differentiated too ("none"). With "reference" the gradient is the per-token gradient ascent reweighted by
  ``w_t = 2 p_t^beta / (p_t^beta + (1 - p_t)^beta)`` (the paper's Eq. 9 is described as a token-wise gradient
  reweighting): confident tokens are pushed hardest and the weight vanishes once ``p_t << 0.5``, which calibrates
  the loss to the model's confidence. Default "reference" because it is the form in which the reweighting is
  exactly the described one; "none" adds the reference's own gradient (a stronger push on confident tokens).
- ``beta`` = 1.0: the paper's value is unknown. At beta = 1 the weight is ``2 p_t``, the plainest calibrated form;
  as beta -> 0 every weight tends to 1 (token-averaged gradient ascent).

``log(1 - p_t)`` is computed as ``log1p(-exp(log p_t))`` in float32, with ``p_t`` clamped below ``1 - 1e-6`` so that a
token predicted with certainty gives a finite loss. Cost: 1 forward+backward on the forget batch, no reference model.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import answer_mask, forward_logits, token_logprobs
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register

_MAX_LOG_P = float(torch.log(torch.tensor(1.0 - 1e-6)))


def reverse_logprob(logprob: torch.Tensor) -> torch.Tensor:
    """``log(1 - p)`` from ``log p``, finite for ``p`` up to 1 (clamped at ``1 - 1e-6``)."""
    return torch.log1p(-logprob.clamp(max=_MAX_LOG_P).exp())


def catnip_loss(logprobs: torch.Tensor, mask: torch.Tensor, beta: float, stop_gradient: str) -> torch.Tensor:
    """-(2/beta) * mean over the masked tokens of log sigmoid(-beta * (log p_t - log(1 - p_t)))."""
    reverse = reverse_logprob(logprobs)
    if stop_gradient == "reference":
        reverse = reverse.detach()
    terms = -(2.0 / beta) * F.logsigmoid(-beta * (logprobs - reverse))
    return terms[mask].mean()


@register
class CATNIP(UnlearningMethod):
    """Token-level NPO whose reference is the reverse policy 1 - p_t (reconstruction)."""

    name = "catnip"
    summary = "Token-level negative preference against the reverse policy 1 - p: gradient ascent reweighted by confidence."
    citation = "CATNIP: Calibrated and Tokenized Negative Preference Alignment, 2026, arXiv:2602.02824"

    class Params(MethodParams):
        beta: float = Field(1.0, gt=0, description="inverse temperature; token weight 2p^beta/(p^beta+(1-p)^beta); "
                                                   "unknown in the paper (reconstruction)")
        stop_gradient: Literal["reference", "none"] = Field(
            "reference", description="'reference': log(1-p_t) is a constant (the token-wise reweighting); 'none': "
                                     "differentiate it too")

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        labels = forget_batch["labels"]
        logprobs = token_logprobs(forward_logits(model, forget_batch), labels)
        mask = answer_mask(labels)
        loss = catnip_loss(logprobs, mask, self.beta, self.stop_gradient)
        with torch.no_grad():
            p = logprobs[mask].exp()
            weight = 2 * p**self.beta / (p**self.beta + (1 - p) ** self.beta)
        return loss, {"forget_loss": loss.item(), "mean_token_weight": weight.mean().item()}
