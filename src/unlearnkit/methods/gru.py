"""GRU (Gradient Rectified Unlearning): follow the forget gradient, minus its component that opposes a running
average of the retain gradient.

Paper: "GRU: Mitigating the Trade-off between Unlearning and Retention for Large Language Models", Wang, Wang,
Liu, Huang, Du, Du and Han, 2025, arXiv:2503.09117. Reference implementation: OpenUnlearning
``src/trainer/unlearn/gru.py`` and ``configs/trainer/GRU.yaml`` (community/methods/GRU).

With g_f the gradient of the forget objective and g_r that of the retain NLL at the current weights:

    m      = gamma_gru * g_r + (1 - gamma_gru) * m_prev         (m_prev: the previous update's m, 0 at the start)
    g      = g_f - (<g_f, m> / <m, m>) * m    if <g_f, m> < 0    (remove the part of g_f that opposes m)
    g      = g_f                              otherwise

and the weights move along -g (through the configured optimizer). Since <g, m> >= 0 always (= 0 when rectified), a
plain gradient step never raises the retain loss to first order, as estimated by m. The retain gradient only steers;
it is not itself descended (as in the reference, whose update is the rectified forget gradient alone). gamma_gru = 1
uses the current retain gradient alone (no averaging; the README searches gamma in {0.8, 0.9, 0.95, N/A}).

The forget objective is gradient ascent, ``-meanNLL`` of the forget batch (OpenUnlearning's default
``forget_loss_type: GradAscent``), or NPO (``forget_loss: npo``; the reference fixes its beta at 0.1, here the
``beta`` parameter, default 0.1). The retain objective is the mean NLL of the retain batch (the reference's GRU
allows nothing else). Defaults: gamma_gru 0.8, GradAscent (``GRU.yaml``).

How this version is built, and how it differs:

- :meth:`GRU.loss` computes g_f and g_r with ``torch.autograd.grad``, rectifies, and returns a surrogate whose value
  is the forget loss and whose gradient is exactly g (``sum_p <p, sg(g_p)>`` shifted to the forget loss's value),
  so the training loop, optimizers, clipping and checkpoints are unchanged. The inner products are summed over
  every trainable parameter in float64.
- The rectification is applied to each micro-batch's gradient and m advances once per micro-batch.
  OpenUnlearning rectifies the gradient accumulated over a whole optimizer step and advances m once per step; the
  two agree when a step is one micro-batch (``gradient_accumulation_steps: 1``, one process). Its GRU supports one
  GPU only; this one refuses several processes (each would keep its own m) before the first step.
- m is the method's state (:meth:`state_dict`, one tensor per trainable parameter), saved with each checkpoint so
  a resumed run continues the same average.
- NPO's reference log-probabilities are computed once in :meth:`prepare` (as for :mod:`unlearnkit.methods.npo`)
  instead of by a second model.

Cost per micro-batch: 1 forward+backward on each of the forget and retain batches (the backward of the returned
surrogate is one multiply per weight), and memory for three extra gradient-sized buffers (g_f, g_r, m).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import forward_logits, mean_nll, sequence_nll
from unlearnkit.methods.npo import npo_loss
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.reference_logprobs import (
    compute_reference_logprobs,
    lookup_reference,
)
from unlearnkit.methods.registry import register

EMA_PREFIX = "retain_gradient_average."


def gradients(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """d loss / d p for each of ``params`` (zeros for a parameter the loss does not reach)."""
    found = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]


def inner(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The inner product of two gradients given as lists of tensors, summed in float64."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def rectify(forget: list[torch.Tensor], direction: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    """``forget`` without its component along ``direction`` when they conflict (negative inner product); and
    that inner product."""
    dot = inner(forget, direction)
    if dot >= 0:
        return forget, dot
    scale = dot / inner(direction, direction)
    return [g - scale * d for g, d in zip(forget, direction)], dot


@register
class GRU(UnlearningMethod):
    """The forget gradient, rectified against a running average of the retain gradient."""

    name = "gru"
    summary = "Forget gradient with the part that opposes a running average of the retain gradient removed."
    citation = ("Wang, Wang, Liu, Huang, Du, Du and Han, GRU: Mitigating the Trade-off between Unlearning and "
                "Retention for Large Language Models, 2025, arXiv:2503.09117")
    uses_retain = True

    class Params(MethodParams):
        gamma_gru: float = Field(0.8, ge=0, le=1, description="weight of the current retain gradient in its running "
                                                              "average (1: no averaging)")
        forget_loss: Literal["ga", "npo"] = Field("ga", description="forget objective: 'ga' (gradient ascent on "
                                                                     "the mean NLL) or 'npo'")
        beta: float = Field(0.1, gt=0, description="NPO's inverse temperature (used with forget_loss='npo')")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._average: dict[str, torch.Tensor] = {}
        self._updates = 0
        self._reference_logprobs: torch.Tensor | None = None

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise UnlearnkitError("method 'gru' rectifies the gradient in one process: run it in one process "
                                  "(gradient_accumulation_steps instead of more processes)")
        if self.forget_loss == "npo":
            self._reference_logprobs = compute_reference_logprobs(model, forget_batches)[""]

    def forget_objective(self, model: nn.Module, forget_batch: dict) -> torch.Tensor:
        logits = forward_logits(model, forget_batch)
        if self.forget_loss == "ga":
            return -mean_nll(logits, forget_batch["labels"])
        logprob = -sequence_nll(logits, forget_batch["labels"])
        reference = lookup_reference(self._reference_logprobs, forget_batch["index"], logprob.device)
        return npo_loss(logprob, reference, self.beta)

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        if retain_batch is None:
            raise ValueError("GRU needs a retain batch, but the training loop passed None")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        forget_loss = self.forget_objective(model, forget_batch)
        forget_grad = gradients(forget_loss, params)
        retain_loss = mean_nll(forward_logits(model, retain_batch), retain_batch["labels"])
        retain_grad = gradients(retain_loss, params)
        average = [self.gamma_gru * g + (1 - self.gamma_gru) * self._previous(n, g) for (n, _), g in
                   zip(named, retain_grad)]
        self._average = {n: a.detach() for (n, _), a in zip(named, average)}
        self._updates += 1
        update, dot = rectify(forget_grad, average)
        surrogate = sum((p * g.detach()).sum() for p, g in zip(params, update))
        loss = surrogate - surrogate.detach() + forget_loss.detach()
        logs = {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item(), "rectified": float(dot < 0)}
        return loss, logs

    def _previous(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The running average's previous value for parameter ``name`` (zeros before the first update)."""
        previous = self._average.get(name)
        return torch.zeros_like(like) if previous is None else previous.to(like.device, like.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self._updates, **{EMA_PREFIX + n: a for n, a in self._average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._updates = int(state["updates"])
        self._average = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
