"""The engine of the iterative classifier unlearners: SGD on every member at once over a stream of batches.

A method is a plan, a generator of steps ``(index, labels, weights[, l1])``, each (members, batch): member m's loss
is Σ_b weights[m, b] · CE(f_m(x[index[m, b]]), labels[m, b]) (+ l1 · ‖θ_m‖₁). :func:`descend` runs the steps with
SGD (momentum, weight decay, constant learning rate, as OPTML's ``iterative_unlearn``), optionally under a hard
mask: only the coordinates where the mask is 1 move (their gradient, momentum and weight decay are masked and the
others are put back to their starting value after each step: research/anchors.md, "gradient masks must be hard").

The plans of the four basic methods (their papers and defaults: ``unlearn.py``) live here so that the methods
built on them (prune-then-unlearn, SalUn) reuse them: ``PLANS[name] = (Params, plan)``. Each member's data order
and random labels come from its seed (``member_generator(seed, epoch, stream)``, streams 1 to 3), so member i is
what the method gives on model i alone.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import vmap

from unlearnkit.classifier.ensemble import Ensemble, batch_order, call, member_generator
from unlearnkit.classifier.options import Options

UNLEARN_STREAM = 1  # the random stream of unlearning (0 is training): orders and labels unlike the training ones


class IterativeParams(Options):
    epochs: int = Field(10, ge=1, description="passes over the method's data")
    lr: float = Field(0.01, gt=0, description="SGD learning rate (constant)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay")
    batch_size: int = Field(64, ge=1, description="examples per step and member (per set for neggrad_plus)")


class FinetuneParams(IterativeParams):
    pass


class GAParams(IterativeParams):
    epochs: int = Field(5, ge=1, description="passes over the forget set")
    lr: float = Field(1e-4, gt=0, description="SGD learning rate (constant)")


class RandomLabelsParams(IterativeParams):
    pass


class NegGradPlusParams(IterativeParams):
    epochs: int = Field(5, ge=1, description="passes over the retain set")
    beta: float = Field(0.999, gt=0, lt=1, description="weight of the retain loss; the forget loss gets 1 - beta")


Mask = dict[str, torch.Tensor]  # parameter name -> 0/1 tensor shaped like the stacked parameter (members first)


def sgd(opts: IterativeParams, params: list[torch.Tensor]) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)


def descend(original: Ensemble, x: np.ndarray, steps: Iterator[tuple[torch.Tensor, ...]], opts: IterativeParams,
            mask: Mask | None = None) -> Ensemble:
    """A copy of ``original`` after one SGD step per item of ``steps`` (the module docstring); with ``mask``, only
    the coordinates at 1 move, the others keep their value in ``original``."""
    device = next(iter(original.params.values())).device
    result = copy.copy(original)
    start = {k: v.detach().clone() for k, v in original.params.items()}
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    optimizer = sgd(opts, list(params.values()))
    x = torch.as_tensor(x, device=device)
    run = vmap(call(original.template, False))
    for index, labels, weights, *l1 in steps:
        index, labels, weights = index.to(device), labels.to(device), weights.to(device)
        logits = run(params, original.buffers, x[index])
        per_example = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        loss = (per_example * weights.flatten()).sum()
        if l1 and l1[0]:  # Σ_m l1·‖θ_m‖₁: each member's penalty on its own weights
            loss = loss + l1[0] * sum(p.abs().sum() for p in params.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        masked_step(optimizer, params, mask, start)
    result.params = {k: v.detach() for k, v in params.items()}
    return result


def masked_step(optimizer: torch.optim.SGD, params: dict[str, torch.Tensor], mask: Mask | None,
                start: dict[str, torch.Tensor]) -> None:
    """``optimizer.step()``; with ``mask``, a hard one: gradients masked before, and after it the masked-out
    coordinates put back to ``start`` and their momentum cleared (weight decay and momentum would move them)."""
    if mask is None:
        optimizer.step()
        return
    for name, p in params.items():
        if p.grad is not None:
            p.grad.mul_(mask[name])
    optimizer.step()
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.where(mask[name].bool(), p, start[name]))
            state = optimizer.state.get(p, {})
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"].mul_(mask[name])


# --- each method's steps: (index into task.train, labels, weights), each (members, batch) -------------------------

def batches(order: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [order[:, i:i + size] for i in range(0, order.shape[1], size)]


def orders(seeds: list[int], epoch: int, subset: np.ndarray, stream: int = UNLEARN_STREAM) -> torch.Tensor:
    """Each member's order of ``subset`` (indices into the training split) in ``epoch``: (members, len(subset))."""
    subset = torch.as_tensor(subset)
    return torch.stack([subset[batch_order(s, epoch, len(subset), stream)] for s in seeds])


def finetune_steps(opts, seeds, forget, retain, y, num_classes):
    y = torch.as_tensor(y)
    for epoch in range(opts.epochs):
        for index in batches(orders(seeds, epoch, retain), opts.batch_size):
            yield index, y[index], torch.full(index.shape, 1.0 / index.shape[1])


def ga_steps(opts, seeds, forget, retain, y, num_classes):
    y = torch.as_tensor(y)
    for epoch in range(opts.epochs):
        for index in batches(orders(seeds, epoch, forget), opts.batch_size):
            yield index, y[index], torch.full(index.shape, -1.0 / index.shape[1])


def random_labels(seed: int, epoch: int, n: int, num_classes: int) -> torch.Tensor:
    """The labels member ``seed`` gives the ``n`` forget examples (in index order) in epoch ``epoch``."""
    return torch.randint(0, num_classes, (n,), generator=member_generator(seed, epoch, UNLEARN_STREAM + 1))


def random_label_steps(opts, seeds, forget, retain, y, num_classes):
    both = np.concatenate([forget, retain])
    for epoch in range(opts.epochs):
        labels = torch.as_tensor(y).repeat(len(seeds), 1)  # (members, train size): each member's labels
        for m, seed in enumerate(seeds):
            labels[m, forget] = random_labels(seed, epoch, len(forget), num_classes)
        for index in batches(orders(seeds, epoch, both), opts.batch_size):
            yield index, torch.gather(labels, 1, index), torch.full(index.shape, 1.0 / index.shape[1])


def neggrad_plus_steps(opts, seeds, forget, retain, y, num_classes):
    y = torch.as_tensor(y)
    forget_batches: list[torch.Tensor] = []
    forget_epoch = 0
    for epoch in range(opts.epochs):
        for retain_index in batches(orders(seeds, epoch, retain), opts.batch_size):
            if not forget_batches:  # each member's next pass over the forget set
                forget_batches = batches(orders(seeds, forget_epoch, forget, UNLEARN_STREAM + 2), opts.batch_size)
                forget_epoch += 1
            forget_index = forget_batches.pop(0)
            index = torch.cat([retain_index, forget_index], dim=1)
            weights = torch.cat([torch.full(retain_index.shape, opts.beta / retain_index.shape[1]),
                                 torch.full(forget_index.shape, -(1 - opts.beta) / forget_index.shape[1])], dim=1)
            yield index, y[index], weights


PLANS = {"finetune": (FinetuneParams, finetune_steps), "ga": (GAParams, ga_steps),
         "random_labels": (RandomLabelsParams, random_label_steps),
         "neggrad_plus": (NegGradPlusParams, neggrad_plus_steps)}
