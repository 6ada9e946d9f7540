"""ℓ1-sparse unlearning under any method: ``train.l1: {weight, schedule, no_l1_steps}`` adds a decaying ℓ1 penalty on
the trainable weights to the method's loss.

Source: Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023, arXiv:2304.04934 (reference code
OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py``: ``FT_l1``, with ``l1_regularization`` the 1-norm of all the
parameters concatenated; research/methods.md §14). The paper fine-tunes on the retain set with
``L = CE + α_t·‖θ‖₁``, ``α_t = α·(1 − e/(E − E_no_l1))`` for epoch ``e < E − E_no_l1`` and 0 after. Here:

    loss_t = L_method + α_t·Σ_{p trainable} ‖p‖₁
    linear:   α_t = α·(1 − t/(T − T_off))  for 0-based optimizer step t < T − T_off, else 0
    constant: α_t = α                      for t < T − T_off, else 0

with ``T`` the run's optimizer steps and ``T_off`` = ``no_l1_steps``.

Choices (and why):

- **Under any method, as a wrapper of the method** (:class:`L1Penalised`, built by the loop when ``train.l1`` is
  set) rather than a method of its own: the paper's point is that sparsity helps *whichever* unlearner runs (FT, GA,
  ...), so the penalty is a training setting beside the optimizer, and the method's own loss, preparation,
  parameters and state are those of the method it wraps (every attribute is delegated). The penalty is part of the
  loss, so first-order optimizers get its subgradient ``α_t·sign(θ)`` and the closure optimizers (zeroth-order, ES,
  SAM) evaluate it with every loss. It is added to every micro-batch's loss; their weights sum to one per step over
  all processes, so a step's loss carries it exactly once whatever the accumulation or process count.
- **Steps, not epochs**: the schedule decays per optimizer step (the paper's per-epoch decay, in finer steps; with
  ``max_steps`` runs an epoch is not the natural unit).
- **Which weights**: the method's trainable parameters (all of them for a full fine-tune, the adapters with LoRA,
  RMU's chosen layers), as the reference code sums over every parameter it trains. Biases and norms included, as
  there.
- SAM (``perturb: forget``) sees the penalty as part of the retain term, evaluated at the unperturbed weights: it is
  a regulariser of the weights, not of the forget objective.

Cost: one pass over the trainable weights per micro-batch (O(|θ|)), negligible next to the forward passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unlearnkit.errors import ConfigError


def l1_weight(step: int, total_steps: int, weight: float, schedule: str, no_l1_steps: int = 0) -> float:
    """``α_t`` of the module docstring for 0-based optimizer step ``step`` of ``total_steps``."""
    active = total_steps - no_l1_steps
    if step >= active:
        return 0.0
    if schedule == "constant":
        return weight
    if schedule == "linear":
        return weight * (1 - step / active)
    raise ValueError(f"unknown l1 schedule {schedule!r}")


def l1_norm(parameters) -> torch.Tensor:
    """``Σ_p ‖p‖₁`` over ``parameters`` (a differentiable scalar, in float32 at least)."""
    return sum(p.abs().sum(dtype=torch.float32 if p.dtype != torch.float64 else torch.float64)
               for p in parameters)


class L1Penalised:
    """``method`` with ``α_t·‖θ_trainable‖₁`` added to its loss; everything else is ``method``'s. The loop calls
    :meth:`begin_step` before each optimizer step."""

    def __init__(self, method, settings, total_steps: int):
        if settings.no_l1_steps >= total_steps:
            raise ConfigError(f"train.l1.no_l1_steps is {settings.no_l1_steps} but the run has {total_steps} "
                              "optimizer steps, so the ℓ1 penalty would never apply: lower no_l1_steps")
        self.method, self.settings, self.total_steps = method, settings, total_steps
        self.step = 0

    def __getattr__(self, name: str) -> Any:  # only reached for what the wrapper does not define itself
        if name == "method":
            raise AttributeError(name)
        return getattr(self.method, name)

    def begin_step(self, step: int) -> None:
        self.step = step

    def weight(self) -> float:
        s = self.settings
        return l1_weight(self.step, self.total_steps, s.weight, s.schedule, s.no_l1_steps)

    def penalty(self, model: nn.Module) -> tuple[torch.Tensor | None, dict[str, float]]:
        alpha = self.weight()
        if alpha == 0.0:
            return None, {"l1_weight": 0.0}
        norm = l1_norm(self.method.trainable_parameters(model))
        return alpha * norm, {"l1_weight": alpha, "l1_norm": float(norm.detach())}

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None):
        loss, logs = self.method.loss(model, forget_batch, retain_batch)
        penalty, penalty_logs = self.penalty(model)
        return (loss if penalty is None else loss + penalty), {**logs, **penalty_logs}

    @property
    def loss_parts(self):
        """The method's ``loss_parts`` with the penalty in the retain term (absent when the method has none)."""
        inner = self.method.loss_parts  # AttributeError (so hasattr is False) for a method without it

        def parts(model: nn.Module, forget_batch: dict, retain_batch: dict | None, parts=("forget", "retain")):
            terms, logs = inner(model, forget_batch, retain_batch, parts=parts)
            if "retain" in parts:
                penalty, penalty_logs = self.penalty(model)
                if penalty is not None:
                    terms = {**terms, "retain": terms["retain"] + penalty if "retain" in terms else penalty}
                logs = {**logs, **penalty_logs}
            return terms, logs

        return parts


def l1_penalised(method, settings, total_steps: int):
    """``method`` wrapped with the penalty of ``settings`` (a ``train.l1`` block), or ``method`` itself when None."""
    return method if settings is None else L1Penalised(method, settings, total_steps)
