"""Unlearnable examples: perturb a training set within an ℓ∞ budget to maximise an estimate of its Bayes error.

Paper: "Towards Provably Unlearnable Examples via Bayes Error Optimisation" (AAAI 2026, arXiv:2511.08191);
research/methods.md §19. Reference code: cat-claws/unlearnable and cat-claws/bayes-error-local-averaging. This is
data protection, not model unlearning: a model trained on the protected set should learn little that transfers to
clean test data.

**The estimator** (local averaging with an RBF kernel), on features F = φ(x) / max|φ(x_clean)|:

    K_ij = exp(−||F_i − F_j||² / (2σ²)),  K_ii = 0;   p̂(c | x_i) = Σ_j K_ij 1[y_j = c] / Σ_j K_ij;
    BER = mean_i (1 − max_c p̂(c | x_i)),   σ = 0.3 (the reference's).

**The optimisation**: projected gradient ascent on the inputs, AdamW with ``maximize=True`` (weight decay 0) on a
perturbation δ; after every step δ is clamped to [−ε, ε] and x + δ to the clean training inputs' own range (for
digits [0, 1], as the reference's [0, 1] images). Only the training split is perturbed; test and held-out stay clean.

Choices [this toolkit's]:

- ``embedding: input`` (φ = the flattened input) is the default; ``embedding: model`` uses the penultimate features
  of a classifier trained on the clean training set (the task's default MLP, fixed during the optimisation). The
  reference embeds images with a trained network, and its ``cifar10-retrain.py`` variant retrains that network on the
  current perturbed data at every outer step (left out: a full training per step);
- the gradient is autograd's (the reference writes it by hand), over row chunks of ``chunk_size`` examples, so memory
  is O(chunk_size × n) rather than O(n²); the normaliser max|φ| is that of the clean inputs, a constant;
- ``steps`` 200 (the reference runs 2000 on a GPU), ``lr`` 0.01 (not given in methods.md), ε = 8/255 (the reference's
  CIFAR budget; digits' pixels take 17 levels in [0, 1], so larger budgets are worth measuring: docs/benchmarks.md).

Cost per step: for each chunk, φ of the whole training set (forward and backward) and a chunk × n kernel.

:func:`protection_accuracy` measures what matters: the test accuracy of models trained on the protected training
set against the same models (same seeds, recipe) trained on the clean one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.classifier.data import ClassifierTask, Split
from unlearnkit.classifier.ensemble import Recipe, train_ensemble
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.options import Options, check
from unlearnkit.errors import UnlearnkitError


class ProtectOptions(Options):
    epsilon: float = Field(8 / 255, gt=0, description="ℓ∞ budget of the perturbation, in input units")
    steps: int = Field(200, ge=1, description="projected AdamW ascent steps (the reference: 2000)")
    lr: float = Field(0.01, gt=0, description="AdamW learning rate")
    sigma: float = Field(0.3, gt=0, description="RBF bandwidth on the normalised features (the reference's 0.3)")
    embedding: Literal["model", "input"] = Field("model", description="features: the penultimate layer of an MLP "
                                                 "trained on the clean set, or the flattened input")
    chunk_size: int = Field(2048, ge=1, description="kernel rows per backward pass (memory: chunk × n)")
    seed: int = Field(0, ge=0, description="embedding model: the seed of its training")


@dataclass
class Protected:
    """The protected training inputs (same shape as ``task.train.x``) and the BER estimate before each step and
    after the last (``steps`` + 1 values)."""

    x: np.ndarray
    bayes_error: list[float]


def bayes_error(features: torch.Tensor, labels: torch.Tensor, num_classes: int, sigma: float,
                rows: slice | None = None) -> torch.Tensor:
    """Σ over ``rows`` (default all) of 1 − max_c p̂(c | x_i), divided by n: the rows' share of the BER estimate."""
    n = len(labels)
    rows = rows or slice(0, n)
    index = torch.arange(n, device=features.device)[rows]
    distances = torch.cdist(features[rows], features).pow(2)
    kernel = torch.exp(-distances / (2 * sigma ** 2))
    kernel = kernel.masked_fill(index[:, None] == torch.arange(n, device=features.device)[None, :], 0.0)
    votes = kernel @ F.one_hot(labels, num_classes).to(kernel.dtype)
    posterior = votes / kernel.sum(1, keepdim=True).clamp_min(torch.finfo(kernel.dtype).tiny)
    return (1 - posterior.max(1).values).sum() / n


def protect(task: ClassifierTask, options: ProtectOptions | dict[str, Any] | None = None,
            cache_dir: Path | None = None) -> Protected:
    """``task.train.x`` perturbed within ``epsilon`` (ℓ∞) to maximise the BER estimate (module docstring)."""
    if not isinstance(options, ProtectOptions):
        options = check(ProtectOptions, dict(options or {}), "protect")
    clean = torch.as_tensor(task.train.x)
    labels = torch.as_tensor(task.train.y)
    low, high = float(clean.min()), float(clean.max())
    embed = _embedding(task, options, cache_dir)
    with torch.no_grad():
        scale = embed(clean).abs().max().clamp_min(torch.finfo(clean.dtype).tiny)

    def features(x):
        return embed(x) / scale

    delta = torch.zeros_like(clean, requires_grad=True)
    optimizer = torch.optim.AdamW([delta], lr=options.lr, weight_decay=0.0, maximize=True)
    n, history = len(labels), []
    for _ in range(options.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, n, options.chunk_size):
            part = bayes_error(features(clean + delta), labels, task.num_classes, options.sigma,
                               slice(start, start + options.chunk_size))
            part.backward()
            total += float(part.detach())
        history.append(total)
        if len(history) == options.steps + 1:
            break
        optimizer.step()
        with torch.no_grad():
            delta.clamp_(-options.epsilon, options.epsilon)
            delta.copy_((clean + delta).clamp(low, high) - clean)
    return Protected((clean + delta).detach().numpy(), history)


def _embedding(task: ClassifierTask, options: ProtectOptions, cache_dir: Path | None) -> Callable:
    if options.embedding == "input":
        return lambda x: x.flatten(1)
    net = train_ensemble(task, ModelOptions(), Recipe(), [options.seed], cache_dir=cache_dir).member(0)
    net.requires_grad_(False)
    return lambda x: net(x, penultimate=True).flatten(1)


def protected_task(task: ClassifierTask, x: np.ndarray) -> ClassifierTask:
    """``task`` with its training inputs replaced by ``x`` (labels, test and held-out sets unchanged)."""
    if x.shape != task.train.x.shape:
        raise UnlearnkitError(f"protected inputs have shape {x.shape}, the training split {task.train.x.shape}")
    return dataclasses.replace(task, name=f"{task.name}+protected",
                               train=Split(np.asarray(x, np.float32), task.train.y, task.train.subclasses))


def protection_accuracy(task: ClassifierTask, x: np.ndarray, model: ModelOptions | dict | None = None,
                        recipe: Recipe | dict | None = None, seeds: list[int] | tuple[int, ...] = (0,),
                        cache_dir: Path | None = None) -> dict[str, float]:
    """Mean test accuracy of ``seeds`` models trained on the clean and on the protected training set."""
    model, recipe = model or ModelOptions(), recipe or Recipe()
    out = {}
    for name, which in (("clean", task), ("protected", protected_task(task, x))):
        trained = train_ensemble(which, model, recipe, list(seeds), cache_dir=cache_dir)
        out[name] = float(trained.accuracy(task.test.x, task.test.y).mean())
    return out


def save_protected(path: Path, task: ClassifierTask, x: np.ndarray) -> None:
    """An .npz the ``arrays`` source reads as this task with the protected training inputs (written atomically)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UnlearnkitError(f"protect: the output {path} must end in .npz (the arrays source reads .npz files)")
    if not path.parent.is_dir():
        raise UnlearnkitError(f"protect: the folder {path.parent} does not exist; create it or choose another output")
    arrays = {"x": np.asarray(x, np.float32), "y": task.train.y, "x_test": task.test.x, "y_test": task.test.y,
              "x_holdout": task.holdout.x, "y_holdout": task.holdout.y}
    for suffix, split in (("", task.train), ("_test", task.test), ("_holdout", task.holdout)):
        if split.subclasses is not None:
            arrays["subclasses" + suffix] = split.subclasses
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["ProtectOptions", "Protected", "bayes_error", "protect", "protected_task", "protection_accuracy",
           "save_protected"]
