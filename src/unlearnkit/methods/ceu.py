"""CE-U (Cross Entropy Unlearning): cross-entropy against the model's own next-token distribution with the true
token removed.

Paper: "CE-U: Cross Entropy Unlearning", Bo Yang, 2025, arXiv:2503.01224. Reference implementation:
OpenUnlearning ``src/trainer/unlearn/ceu.py`` (``cross_entropy_unlearning_loss``, ``compute_batch_ceu``) and
``configs/trainer/CEU.yaml``.

For every scored answer token t of the forget batch, with z_t the current logits at the position that predicts
y_t and sg the stop-gradient:

    q_t   = softmax(sg(z_t) with z_t[y_t] set to -inf)       (the model's own distribution, renormalised
                                                              without the true token: q_t(y_t) = 0)
    L_CEU = (1/N) * sum_t  -sum_v q_t(v) * log softmax(z_t)(v)      (N: scored answer tokens of the batch)

Its gradient with respect to the logits is ``softmax(z_t) - q_t``: the true token's logit is pushed down by
p_t(y_t), every other token up in proportion to its probability; it vanishes once p_t(y_t) = 0. Unlike gradient
ascent the loss is bounded below (by the entropy of q_t).

Scored tokens: the first ``ignore_first_n_answer_tokens`` tokens of each answer are left out (the footnote in the
paper's training settings; OpenUnlearning's default 1). A micro-batch whose answers are all that short has no
scored token; its loss is 0 (the reference would return NaN).

No retain term (as the reference: forget loss only) and no reference model. Default from OpenUnlearning's
``CEU.yaml``: ignore_first_n_answer_tokens=1 (with the ``finetune`` trainer settings: lr 1e-5, 10 epochs).
Logits are taken in float32. Cost: 1 forward+backward on the forget batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import forward_logits
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register


def without_first_answer_tokens(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``labels`` with the first ``n`` answer tokens of each row set to -100 (not scored)."""
    answer = labels != IGNORE_INDEX
    return labels.masked_fill(answer & (answer.cumsum(dim=-1) <= n), IGNORE_INDEX)


def ceu_targets(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[N, V]``: softmax of the detached logits ``[N, V]`` with each row's true token ``labels[n]`` at -inf."""
    removed = logits.detach().float().scatter(-1, labels[:, None], float("-inf"))
    return F.softmax(removed, dim=-1)


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the scored tokens of the cross-entropy of ``logits`` ``[B, T, V]`` against :func:`ceu_targets`;
    ``labels`` ``[B, T]`` unshifted with -100 where nothing is scored."""
    mask = labels[:, 1:] != IGNORE_INDEX
    if not mask.any():
        return logits.sum() * 0.0
    scored = logits[:, :-1][mask].float()
    tokens = labels[:, 1:][mask]
    return -(ceu_targets(scored, tokens) * F.log_softmax(scored, dim=-1)).sum(dim=-1).mean()


@register
class CEU(UnlearningMethod):
    """L_CEU on the forget batch, without its first answer tokens."""

    name = "ceu"
    summary = "Cross-entropy against the model's own next-token distribution with the true token removed."
    citation = "Yang, CE-U: Cross Entropy Unlearning, 2025, arXiv:2503.01224"

    class Params(MethodParams):
        ignore_first_n_answer_tokens: int = Field(1, ge=0, description="how many tokens at the start of each "
                                                                       "answer are not trained on")

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        labels = without_first_answer_tokens(forget_batch["labels"], self.ignore_first_n_answer_tokens)
        loss = ceu_loss(forward_logits(model, forget_batch), labels)
        return loss, {"forget_loss": loss.item()}
