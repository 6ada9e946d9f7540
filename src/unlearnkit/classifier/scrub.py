"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou: "Towards Unbounded Machine Unlearning", NeurIPS 2023,
arXiv 2302.09880; code meghdadk/SCRUB ``helper/loops.py: train_distill``, ``helper/KD.py``, the small-scale notebook's
settings).

A student, initialised as the original (the teacher, frozen), alternates per epoch:

- max-steps (the first ``max_epochs`` epochs): one pass over the forget set minimising −KL_T(teacher ‖ student),
  i.e. moving away from the teacher on the forget examples;
- min-steps (every epoch, after the max-steps): one pass over the retain set minimising
  γ·CE(student, y) + α·KL_T(teacher ‖ student),

where KL_T(t ‖ s) = T² · mean over the batch of Σ_c softmax(t/T)_c (log softmax(t/T)_c − log softmax(s/T)_c)
(``DistillKL``, RepDistiller). One SGD optimizer serves both kinds of steps. Each member runs with its own data
orders (streams 1 and 3 of its seed).

Defaults (the repository's small-scale notebook): γ = 0.99, α = 0.001, T = 4, 3 epochs, max-steps in the first 2
(``msteps = 2`` with epochs counted from 1 and ``epoch <= msteps``), SGD lr 5e-4, momentum 0.9, weight decay 5e-4,
retain batch 128, forget batch 32. [choices] Its step decay (×0.1 after epochs 3, 5, 9) never acts within 3 epochs
and is left out (constant lr); its optional SWA smoothing is off there (``smoothing = 0``) and not implemented.
Cost per epoch: a forward of teacher and student and a backward of the student over the forget set (max epochs) and
the retain set.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch.func import vmap

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble, call
from unlearnkit.classifier.options import Options
from unlearnkit.classifier.steps import UNLEARN_STREAM, batches, orders


class SCRUBParams(Options):
    epochs: int = Field(3, ge=1, description="epochs (each: max-steps if among the first max_epochs, min-steps)")
    max_epochs: int = Field(2, ge=0, description="the first epochs that run max-steps on the forget set")
    gamma: float = Field(0.99, ge=0, description="weight of the retain cross-entropy in min-steps")
    alpha: float = Field(0.001, ge=0, description="weight of the retain KL to the teacher in min-steps")
    temperature: float = Field(4.0, gt=0, description="distillation temperature T")
    lr: float = Field(5e-4, gt=0, description="SGD learning rate (constant)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay")
    retain_batch_size: int = Field(128, ge=1, description="retain examples per min-step and member")
    forget_batch_size: int = Field(32, ge=1, description="forget examples per max-step and member")

    @model_validator(mode="after")
    def _max_within_epochs(self) -> SCRUBParams:
        if self.max_epochs > self.epochs:
            raise ValueError(f"max_epochs must be <= epochs ({self.epochs}), got {self.max_epochs}")
        return self


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL_T(teacher ‖ student) of each member, (members, batch, classes) -> (members,): T² · batch mean."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean(-1) * temperature ** 2


def scrub(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
          opts: SCRUBParams) -> Ensemble:
    device = next(iter(original.params.values())).device
    result = copy.copy(original)
    teacher = {k: v.detach() for k, v in original.params.items()}
    params = {k: v.detach().clone().requires_grad_(True) for k, v in original.params.items()}
    optimizer = torch.optim.SGD(list(params.values()), lr=opts.lr, momentum=opts.momentum,
                                weight_decay=opts.weight_decay)
    x, y = torch.as_tensor(task.train.x, device=device), torch.as_tensor(task.train.y, device=device)
    run = vmap(call(original.template, False))

    def step(index: torch.Tensor, maximise: bool) -> None:
        index = index.to(device)
        student = run(params, original.buffers, x[index])
        with torch.no_grad():
            taught = run(teacher, original.buffers, x[index])
        kl = distill_kl(student, taught, opts.temperature)
        if maximise:
            loss = -kl.sum()
        else:
            ce = F.cross_entropy(student.flatten(0, 1), y[index].flatten(), reduction="none").view(index.shape)
            loss = (opts.gamma * ce.mean(1) + opts.alpha * kl).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for epoch in range(opts.epochs):
        if epoch < opts.max_epochs:
            for index in batches(orders(original.seeds, epoch, forget, UNLEARN_STREAM + 2), opts.forget_batch_size):
                step(index, maximise=True)
        for index in batches(orders(original.seeds, epoch, retain), opts.retain_batch_size):
            step(index, maximise=False)
    result.params = {k: v.detach() for k, v in params.items()}
    return result
