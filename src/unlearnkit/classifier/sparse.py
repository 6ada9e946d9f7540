"""Model sparsity for unlearning (Jia, Liu, Ram, Yao, Liu, Liu, Sharma, Liu: "Model Sparsity Can Simplify Machine
Unlearning", NeurIPS 2023, arXiv 2304.04934; code OPTML-Group/Unlearn-Sparse; research/methods.md §14).

**l1_sparse** (ℓ1-sparse MU): fine-tune on the retain set with the loss CE + α_e·‖θ‖₁, the ℓ1 norm over every
parameter (biases included, as ``l1_regularization`` in ``unlearn/FT.py``), where in epoch e (0-based)
α_e = α·(1 − e/(E − E_no_l1)) for e < E − E_no_l1 and 0 after (``FT_iter``). The penalty is per member, on its own
weights. Defaults: 10 epochs, lr 0.01, SGD momentum 0.9, weight decay 5e-4, ``no_l1_epochs`` 0 (the repository's
README command and arg-parser defaults). α has no default there (``--alpha ${alpha}``) and the paper's grid is not
confirmed here (methods.md §14), so it must be given. Cost per step: one forward and backward on a retain batch and
an O(|θ|) ℓ1 term.

**prune** (prune first, then unlearn): one-shot global magnitude pruning of each member to ``rate`` (the smallest
``rate`` share of its weights by |w| set to zero, one threshold across all its layers: ``prune.global_unstructured``
with L1 in the repository), then one of the basic unlearners (``method``: finetune, ga, random_labels,
neggrad_plus, with ``method_params``) with the pruning mask applied as a hard mask: pruned weights get no gradient,
no momentum, no weight decay and stay exactly 0. Default rate 0.95 (the arg-parser default). [choices] The
repository prunes convolution weights only (its ResNet's linear head stays dense); with an MLP that would prune
nothing, so here the weights of every linear and convolution layer (every parameter of ≥ 2 dimensions) are pruned,
and biases and normalisation weights are not. The repository rewinds the pruned model to an early checkpoint and
retrains it before unlearning (OMP with rewinding); that needs the training trajectory and a second training, and
is not done here: the unlearner's own steps are the only recovery, so a high rate costs accuracy (docs/benchmarks.md).
Cost: a sort of each member's weights once, then the unlearner's.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble
from unlearnkit.classifier.options import Options, explain
from unlearnkit.classifier.steps import (
    PLANS,
    FinetuneParams,
    Mask,
    descend,
    finetune_steps,
)

BASIC = Literal["finetune", "ga", "random_labels", "neggrad_plus"]


class L1SparseParams(FinetuneParams):
    alpha: float = Field(gt=0, description="ℓ1 weight α at the first epoch, decaying linearly (no default: give it)")
    no_l1_epochs: int = Field(0, ge=0, description="last epochs without the ℓ1 term")

    @model_validator(mode="after")
    def _some_l1_epoch(self) -> L1SparseParams:
        if self.no_l1_epochs >= self.epochs:
            raise ValueError(f"no_l1_epochs must be < epochs ({self.epochs}), got {self.no_l1_epochs}")
        return self


class PruneParams(Options):
    rate: float = Field(0.95, gt=0, lt=1, description="share of each member's layer weights pruned (set to 0)")
    method: BASIC = Field("finetune", description="the unlearner run on the pruned members")
    method_params: dict[str, Any] = Field(default_factory=dict, description="its options (its defaults otherwise)")

    @model_validator(mode="after")
    def _method_params_valid(self) -> PruneParams:
        model = PLANS[self.method][0]
        try:
            model.model_validate(self.method_params)
        except ValidationError as exc:  # pydantic's report, as one line naming the unlearner's option
            raise ValueError(f"method_params of {self.method!r}: {explain(exc, model)}") from None
        return self


def l1_alpha(opts: L1SparseParams, epoch: int) -> float:
    """α_e of epoch ``epoch`` (0-based): α·(1 − e/(E − E_no_l1)), then 0."""
    span = opts.epochs - opts.no_l1_epochs
    return opts.alpha * (1 - epoch / span) if epoch < span else 0.0


def l1_sparse(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
              opts: L1SparseParams) -> Ensemble:
    steps_per_epoch = -(-len(retain) // opts.batch_size)

    def steps():
        for i, step in enumerate(finetune_steps(opts, original.seeds, forget, retain, task.train.y,
                                                task.num_classes)):
            yield (*step, l1_alpha(opts, i // steps_per_epoch))
    return descend(original, task.train.x, steps(), opts)


def magnitude_mask(params: dict[str, torch.Tensor], rate: float) -> Mask:
    """Per member, 1 on the weights kept by global magnitude pruning at ``rate`` over the ≥ 2-dimensional
    parameters (0 on the ``round(rate · n)`` smallest |w|, ties broken by position), 1 on every other parameter."""
    pruned = [k for k, v in params.items() if v.dim() >= 3]  # members first: a layer's weight has ≥ 2 more dims
    members = next(iter(params.values())).shape[0]
    flat = torch.cat([params[k].detach().abs().reshape(members, -1) for k in pruned], dim=1)
    count = round(rate * flat.shape[1])
    keep = torch.ones_like(flat)
    keep.scatter_(1, torch.argsort(flat, dim=1, stable=True)[:, :count], 0.0)
    mask, offset = {k: torch.ones_like(v) for k, v in params.items()}, 0
    for k in pruned:
        size = params[k][0].numel()
        mask[k] = keep[:, offset:offset + size].reshape(params[k].shape)
        offset += size
    return mask


def prune_then_unlearn(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
                       opts: PruneParams) -> Ensemble:
    mask = magnitude_mask(original.params, opts.rate)
    pruned = Ensemble(original.template, {k: v * mask[k] for k, v in original.params.items()}, original.buffers,
                      original.seeds, original.model, original.recipe)
    params_model, plan = PLANS[opts.method]
    inner = params_model.model_validate(opts.method_params)
    steps = plan(inner, original.seeds, forget, retain, task.train.y, task.num_classes)
    return descend(pruned, task.train.x, steps, inner, mask=mask)
