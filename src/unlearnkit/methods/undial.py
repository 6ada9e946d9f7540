"""UNDIAL: self-distillation towards the original model's next-token distribution with the true token's logit
lowered.

Paper: "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models", Dong, Lin,
Belkin, Huerta and Vulić, NAACL 2025, arXiv:2402.10052. Reference implementation: OpenUnlearning
``src/trainer/unlearn/undial.py`` with ``compute_undial_loss`` (``src/trainer/utils.py``) and
``configs/trainer/UNDIAL.yaml``.

For every answer token t of the forget batch, with z_ref the logits of the original (frozen) model at the position
that predicts y_t and e_y the one-hot vector of the true token:

    q_t      = softmax(z_ref - beta * e_{y_t})           (only the true token's logit is lowered, by beta)
    L_UNDIAL = (1/N) * sum_t  -sum_v q_t(v) * log pi_theta(v | x, y_<t)     (N: answer tokens of the batch)

i.e. the cross-entropy of the trained model against the adjusted teacher distribution, averaged over the batch's
answer tokens. The target never changes during training (the teacher is the initial model), so the loss is
bounded below by the target's entropy and, unlike gradient ascent, cannot run away: the model moves to the
original distribution with the memorised token made exp(beta) times less likely relative to every other token.

The full loss is ``forget_weight * L_UNDIAL + retain_weight * R``. Defaults are OpenUnlearning's ``UNDIAL.yaml``:
beta=10 ("the strength of penalty for memorized tokens"; the README suggests searching 3, 10, 30), gamma
(forget_weight)=1, alpha (retain_weight)=0: the paper uses no retain set. OpenUnlearning still computes an NLL
retain term and multiplies it by 0; here the default is retain_loss=None (the same loss without the wasted forward
pass of the retain batch). To add a retain term set retain_loss ("nll" or "kl") and a positive retain_weight.
(Its trainer ran lr 1e-4, 10 epochs, effective batch 16.)

Which positions: the answer tokens only. OpenUnlearning's ``compute_undial_loss`` averages the cross-entropy over
every position of the padded batch; at prompt and padding positions its label is -100, which, used as an index
into the vocabulary, wraps around to token V-100, so there the student is distilled towards the teacher with that
arbitrary token lowered by beta. That is an indexing accident, not the method (whose target lowers the token to be
forgotten), and it makes the loss depend on prompt length and padding; it is not reproduced, so unlearnkit's
UNDIAL loss differs in value from OpenUnlearning's by those extra positions. (Some later copies of that code score
the answer tokens only, as here.)

The teacher needs the initial model's full next-token distribution at every answer position, which is too large to
precompute for a real vocabulary, so unlike NPO this method holds a frozen copy of the model
(``needs_reference_model``) and runs it on each forget batch, as the reference does. Logits are taken in float32.
Cost: 1 forward+backward on the forget batch + 1 reference forward on it (+ the retain term if set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.methods.losses import answer_mask, forward_logits
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.methods.retain_regularised import (
    ForgetWeight,
    RetainLoss,
    RetainRegularised,
    RetainWeight,
)


def undial_targets(reference_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """``[N, V]``: softmax of the reference logits ``[N, V]`` with each row's true token ``labels[n]`` lowered by beta."""
    adjusted = reference_logits.float().scatter_add(
        -1, labels[:, None], torch.full_like(labels[:, None], -beta, dtype=torch.float32))
    return F.softmax(adjusted, dim=-1)


def undial_loss(logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor,
                beta: float) -> torch.Tensor:
    """Mean over the answer tokens of the cross-entropy of ``logits`` against the adjusted reference distribution."""
    mask = answer_mask(labels)
    if not mask.any():
        raise ValueError("UNDIAL needs at least one answer token in the forget batch")
    tokens = labels[:, 1:][mask]
    targets = undial_targets(reference_logits[:, :-1][mask], tokens, beta)
    log_probs = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    return -(targets * log_probs).sum(dim=-1).mean()


@register
class UNDIAL(RetainRegularised):
    """forget_weight * L_UNDIAL(beta) + retain_weight * retain term (default: none)."""

    name = "undial"
    summary = "Self-distillation towards the original model's distribution with the true token's logit lowered by beta."
    citation = ("Dong, Lin, Belkin, Huerta and Vulić, UNDIAL: Self-Distillation with Adjusted Logits for Robust "
                "Unlearning in Large Language Models, NAACL 2025, arXiv:2402.10052")

    class Params(MethodParams):
        beta: float = Field(10.0, ge=0, description="how much the true token's logit is lowered in the teacher's "
                                                    "distribution (the penalty on memorised tokens)")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = 0.0
        retain_loss: RetainLoss = None

    @property
    def needs_reference_model(self) -> bool:
        return True

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if self._reference_model is None:
            raise RuntimeError("UNDIAL needs the frozen reference model: call method.prepare(model, batches, "
                               "reference_model) before training")
        with torch.no_grad():
            reference_logits = forward_logits(self._reference_model, forget_batch)
        logits = forward_logits(model, forget_batch)
        return undial_loss(logits, reference_logits, forget_batch["labels"], self.beta), {}
