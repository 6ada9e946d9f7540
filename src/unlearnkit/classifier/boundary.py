"""Boundary shrink (Chen, Gao, Wang, Wang, Lu, Wang: "Boundary Unlearning: Rapid Forgetting of Deep Networks via
Shifting the Decision Space", CVPR 2023, arXiv 2303.11570; as OPTML-Group/Unlearn-Saliency
``Classification/unlearn/boundary_sh.py``).

Each forget example x is pushed across the original model's nearest decision boundary by one FGSM step on the
original (frozen) model f_o: x' = clamp(x + ε·sign(∇_x CE(f_o(x), y))), discretised to multiples of 1/255 as 8-bit
images; its new label is f_o's prediction there, y' = argmax f_o(x'). The model is then fine-tuned on the forget
set with those labels: CE(f(x), y'), one pass over the forget set per epoch.

Defaults: ε = 0.1 (hard-coded in the repository: "hard coding in the paper"), clamp to [0, 1] and 1/255 steps (its
images are in [0, 1], normalised inside the model), 10 epochs, lr 4e-5 (the SalUn repository's CIFAR-10 script for
``boundary_shrink``; the Unlearn-Sparse scripts use 1e-6 to 5e-6), SGD momentum 0.9, weight decay 5e-4, batch 64.

[choice, exact] y' depends only on f_o and on x (the per-example gradient of a batch mean has the sign of the
example's own), so the labels are computed once for the whole forget set before training, not per batch: the same
labels, one FGSM pass instead of one per epoch. Inputs outside [clamp_min, clamp_max] (e.g. standardised signals)
are refused: set the bounds to the data's range (``clamp_min``/``clamp_max``) and ``discretize`` off.
Cost: one forward and backward through f_o and one forward for the labels, then one forward and backward of each
forget batch per step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch.func import vmap

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble, call
from unlearnkit.classifier.steps import IterativeParams, batches, descend, orders
from unlearnkit.errors import UnlearnkitError


class BoundaryShrinkParams(IterativeParams):
    lr: float = Field(4e-5, gt=0, description="SGD learning rate (constant)")
    bound: float = Field(0.1, gt=0, description="FGSM step ε on the inputs")
    clamp_min: float = Field(0.0, description="adversarial inputs are clamped to [clamp_min, clamp_max]")
    clamp_max: float = Field(1.0, description="upper clamp of adversarial inputs")
    discretize: bool = Field(True, description="round adversarial inputs to multiples of 1/255 (8-bit images)")

    @model_validator(mode="after")
    def _clamp_order(self) -> BoundaryShrinkParams:
        if self.clamp_max <= self.clamp_min:
            raise ValueError(f"clamp_max must be > clamp_min ({self.clamp_min}), got {self.clamp_max}")
        return self


def neighbour_labels(original: Ensemble, x: np.ndarray, y: np.ndarray, opts: BoundaryShrinkParams) -> torch.Tensor:
    """Each member's label y' for each example: its prediction after one FGSM step on it, (members, n)."""
    device = next(iter(original.params.values())).device
    members = len(original)
    inputs = torch.as_tensor(x, device=device).expand(members, *x.shape).clone().requires_grad_(True)
    run = vmap(call(original.template, False))
    params = {k: v.detach() for k, v in original.params.items()}
    logits = run(params, original.buffers, inputs)
    target = torch.as_tensor(y, device=device).repeat(members)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits.flatten(0, 1), target, reduction="sum"), inputs)
    adversarial = torch.clamp(inputs.detach() + opts.bound * grad.sign(), opts.clamp_min, opts.clamp_max)
    if opts.discretize:
        adversarial = torch.round(adversarial * 255) / 255
    with torch.no_grad():
        return run(params, original.buffers, adversarial).argmax(-1).cpu()


def boundary_shrink(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
                    opts: BoundaryShrinkParams) -> Ensemble:
    x = task.train.x[forget]
    if x.min() < opts.clamp_min or x.max() > opts.clamp_max:
        raise UnlearnkitError(f"boundary_shrink clamps adversarial inputs to [{opts.clamp_min}, {opts.clamp_max}] "
                              f"but the forget inputs span [{x.min():.3g}, {x.max():.3g}]: set clamp_min/clamp_max "
                              "to the data's range and discretize to false")
    labels = torch.zeros((len(original), len(task.train)), dtype=torch.int64)
    labels[:, forget] = neighbour_labels(original, x, task.train.y[forget], opts)

    def steps():
        for epoch in range(opts.epochs):
            for index in batches(orders(original.seeds, epoch, forget), opts.batch_size):
                yield index, torch.gather(labels, 1, index), torch.full(index.shape, 1.0 / index.shape[1])
    return descend(original, task.train.x, steps(), opts)
