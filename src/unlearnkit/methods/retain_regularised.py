"""The shape most unlearning losses share: ``forget_weight × forget objective + retain_weight × retain term``.

The retain term is ``"nll"`` (the retain batch's mean NLL, as GradDiff) or ``"kl"`` (KL(π_ref ‖ π_θ) on the retain
batch, :func:`unlearnkit.methods.losses.retain_kl`, which needs the frozen reference model), or ``None`` for the
forget objective alone where the method allows it. Subclasses define ``forget_loss`` and may extend ``prepare``.

The three settings are typed once here (:data:`ForgetWeight`, :data:`RetainWeight`, :data:`RetainLoss`) and each
method's ``Params`` lists them with its own defaults, in the order of its formula.
"""

from __future__ import annotations

from typing import Annotated, Any, Iterable, Literal

import torch
from pydantic import Field
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import require_reference, retain_term

ForgetWeight = Annotated[float, Field(ge=0, description="weight of the forget objective (gamma in OpenUnlearning)")]
RetainWeight = Annotated[float, Field(ge=0, description="weight of the retain term (alpha in OpenUnlearning)")]
RetainLoss = Annotated[Literal["nll", "kl"] | None, Field(
    description="retain term: 'nll' (mean NLL on the retain set), 'kl' (KL(pi_ref || pi_theta) on the retain set; "
                "holds a frozen copy of the model) or null (the forget objective alone)")]


class RetainRegularised(UnlearningMethod):
    uses_retain = True

    def __init__(self, **values: Any):
        super().__init__(**values)
        if self.retain_loss is None:
            self.uses_retain = False
        self._reference_model: nn.Module | None = None

    @property
    def needs_reference_model(self) -> bool:
        return self.retain_loss == "kl"

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        self._reference_model = require_reference(self.needs_reference_model, reference_model, self.name)

    def forget_loss(self, model: nn.Module, forget_batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The method's own objective on the forget batch, and extra values to log."""
        raise NotImplementedError

    def loss_parts(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None,
                   parts: tuple[str, ...] = ("forget", "retain")) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The loss's two terms apart, those of ``parts`` that the method has: ``{"forget": forget_weight × forget
        objective, "retain": retain_weight × retain term}``, and the values to log. The optimizers that evaluate the
        terms at different weights (SAM on the forget term only, :mod:`unlearnkit.optim.sam`) call this."""
        terms, logs = {}, {}
        if "forget" in parts:
            forget_loss, logs = self.forget_loss(model, forget_batch)
            terms["forget"] = self.forget_weight * forget_loss
            logs = {"forget_loss": forget_loss.item(), **logs}
        if "retain" in parts and self.retain_loss is not None:
            retain_loss = retain_term(self.retain_loss, model, retain_batch, self._reference_model)
            terms["retain"] = self.retain_weight * retain_loss
            logs["retain_loss"] = retain_loss.item()
        return terms, logs

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        terms, logs = self.loss_parts(model, forget_batch, retain_batch)
        loss = terms["forget"]
        if "retain" in terms:
            loss = loss + terms["retain"]
        return loss, logs
