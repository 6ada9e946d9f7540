"""PDU (primal-dual unlearning): flatten the forget logits under a hard constraint on the retain loss, solved with
a dual variable that grows while the constraint is violated.

Paper: "Constrained Entropic Unlearning: A Primal-Dual Framework for Large Language Models", Entesari, Hatami,
Khaziev, Ramakrishna and Fazlyab, 2025, arXiv:2506.05314. Reference implementation: OpenUnlearning
``src/trainer/unlearn/pdu.py`` and ``configs/trainer/PDU.yaml`` (which extends ``GradDiff.yaml``).

The problem is  min_theta L_f(theta)  subject to  L_r(theta) <= eps,  with

    L_f = (1/N) * sum_{answer positions t} (max_v z_t(v) - mean_v z_t(v))^2

the logit-margin flattening loss on the forget batch (z_t: the logits at position t; zero exactly when the
distribution there is uniform; N: the number of those positions in the batch) and L_r the retain term (mean NLL on
the retain batch, or KL). As in the reference (masked since its PR #147, "not exactly what was introduced in the
paper and lacked proper masking" before; the earlier code averaged over every position of the padded batch), the
positions are those whose label is an answer token with the label mask taken *unshifted*: the distributions computed
at each answer token (which predict the token after it; at the EOS, what would follow it), not the ones that predict
the answer tokens. The two sets differ by one position per answer; this keeps OpenUnlearning's numbers.

Each micro-batch minimises the Lagrangian with the current dual variable lambda, then takes a dual ascent step:

    loss   = forget_weight * L_f + lambda * (L_r - eps)
    lambda <- max(0, lambda + dual_step_size * (L_r - eps))       (after the loss is formed)

so lambda rises while the retain loss is above eps and falls back once it is below. lambda starts at
``retain_weight``. With ``primal_dual: false`` lambda stays fixed (GradDiff with the flattening loss).

Defaults are OpenUnlearning's ``PDU.yaml`` over ``GradDiff.yaml``: primal_dual on, dual_step_size 1, dual updates
each step, dual_warmup_epochs 5 (lambda is not updated before 5 epochs of the forget set are done), gamma
(forget_weight) 1, alpha (initial lambda) 1, retain NLL. ``retain_loss_eps`` has no default there (``???``, must be
given) and none here: its README says to set it a little above the retain loss of the model before unlearning
(and suggests an initial lambda of 50 or 100, since the flattening loss is large).

How this version differs:

- The dual variable and the number of forget examples seen are the method's state
  (:meth:`state_dict`), saved with each checkpoint, so a resumed run continues with the same lambda.
- The warm-up counts epochs by the forget examples this method has trained on (an epoch visits each once), so it
  needs one process (OpenUnlearning's dual is per process too); with several processes, training stops before
  the first step with a clear error. Gradient accumulation in one process is exact: lambda is updated after each
  micro-batch, as the reference updates it after each ``compute_loss``.
- OpenUnlearning's alternative ``dual_update_upon: epoch`` (a full pass over the retain data at each epoch end)
  needs a hook into the training loop and is not provided.

Logits are taken in float32. Cost: 1 forward+backward on each of the forget and retain batches
(+1 reference forward for retain_loss="kl").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.losses import forward_logits, retain_term
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.methods.retain_regularised import (
    ForgetWeight,
    RetainRegularised,
    RetainWeight,
)


def flattening_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of (max logit - mean logit)^2 over the positions of ``logits`` ``[B, T, V]`` whose label (``[B, T]``,
    unshifted, as in the reference) is an answer token."""
    logits = logits.float()
    margins = (logits.max(dim=-1).values - logits.mean(dim=-1)) ** 2
    return margins[labels != IGNORE_INDEX].mean()


def dual_step(dual: float, retain_loss: float, eps: float, step_size: float) -> float:
    """Projected dual ascent: ``max(0, dual + step_size * (retain_loss - eps))``."""
    return max(0.0, dual + step_size * (retain_loss - eps))


@register
class PDU(RetainRegularised):
    """forget_weight * L_flatten + lambda * (retain term - eps), lambda updated by dual ascent."""

    name = "pdu"
    summary = "Flatten the forget logits subject to retain loss <= eps, with a dual variable (primal-dual)."
    citation = ("Entesari, Hatami, Khaziev, Ramakrishna and Fazlyab, Constrained Entropic Unlearning: A Primal-Dual "
                "Framework for Large Language Models, 2025, arXiv:2506.05314")

    class Params(MethodParams):
        retain_loss_eps: float | None = Field(None, validate_default=True, description=(
            "the bound eps on the retain loss (no default: a little above the retain loss before unlearning)"))
        primal_dual: bool = Field(True, description="update the dual variable lambda (false: lambda stays at "
                                                    "retain_weight)")
        dual_step_size: float = Field(1.0, ge=0, description="step size of the dual ascent on lambda")
        dual_warmup_epochs: int = Field(5, ge=0, description="epochs of the forget set before lambda is first "
                                                             "updated")
        forget_weight: ForgetWeight = 1.0
        retain_weight: RetainWeight = Field(1.0, description="initial dual variable lambda (alpha in OpenUnlearning)")
        retain_loss: Annotated[Literal["nll", "kl"], Field(
            description="the constrained retain term: 'nll' (mean NLL on the retain set) or 'kl' (KL(pi_ref || "
                        "pi_theta) on the retain set; holds a frozen copy of the model)")] = "nll"

        @field_validator("retain_loss_eps")
        @classmethod
        def _eps_given(cls, value: float | None) -> float | None:
            if value is None:
                raise ValueError("must be given (it has no default: set it a little above the retain loss of the "
                                 "model before unlearning)")
            return value

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._dual = float(self.retain_weight)
        self._examples_seen = 0
        self._forget_size: int | None = None

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Count the forget examples (for the warm-up in epochs); refuse several processes when lambda is updated."""
        if self.primal_dual and torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise UnlearnkitError("method 'pdu' with primal_dual updates its dual variable in one process: run it "
                                  "in one process (gradient_accumulation_steps instead of more processes)")
        indices = {int(i) for batch in forget_batches for i in batch["index"].tolist()}
        self._forget_size = len(indices)
        super().prepare(model, [], reference_model)

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return flattening_loss(forward_logits(model, forget_batch), forget_batch["labels"]), {}

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        if self._forget_size is None:
            raise RuntimeError("call method.prepare(model, forget_batches) before training: PDU counts the forget "
                               "examples for its warm-up")
        forget_loss, _ = self.forget_loss(model, forget_batch)
        retain_loss = retain_term(self.retain_loss, model, retain_batch, self._reference_model)
        violation = retain_loss - self.retain_loss_eps
        loss = self.forget_weight * forget_loss + self._dual * violation
        logs = {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item(), "dual": self._dual}
        warmed_up = self._examples_seen >= self.dual_warmup_epochs * self._forget_size
        if self.primal_dual and warmed_up:
            self._dual = dual_step(self._dual, retain_loss.item(), self.retain_loss_eps, self.dual_step_size)
        self._examples_seen += int(forget_batch["input_ids"].shape[0])
        return loss, logs

    def state_dict(self) -> dict[str, Any]:
        return {"dual": self._dual, "examples_seen": self._examples_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._dual = float(state["dual"])
        self._examples_seen = int(state["examples_seen"])
