"""N classifiers trained as one batched model, each member exactly the model it would be if trained alone.

``train_ensemble(task, model, recipe, seeds, forget)`` trains one member per seed on the training split (the
original models) or on the training split without ``forget`` (the retrained models, the exact-unlearning gold
standard). The members' weights are stacked along a new first axis (``torch.func.stack_module_state``) and one
``vmap`` of ``functional_call`` runs every member on its own batch in one call, so N small models cost about what
a few cost one at a time (docs/benchmarks.md, "Ensemble training").

**A member is a function of its seed alone**, whatever else is trained beside it:

- initialisation: torch's default initialisation drawn after ``torch.manual_seed(seed)`` (:func:`init_member`);
- data order: epoch ``e`` visits the examples in the order ``batch_order(seed, e, n)``, a permutation from a
  generator seeded by (seed, e), cut into consecutive batches of ``recipe.batch_size`` (the last one shorter);
- the loss of the stack is the sum over members of each member's mean cross-entropy, so each member's gradient is
  its own; SGD (momentum, weight decay) and Adam act element by element, so each member's update is its own too.

``tests/classifier/test_ensemble.py`` checks that the batched members equal models trained one by one in a plain
loop to float tolerance.

**Cache**: each member is saved as ``<cache>/classifier/<key>/member-<seed>.safetensors`` (written to a temporary
name and renamed), the key hashing the task's data, the model options, the recipe and the forget indices. A later
call loads the members it finds and trains only the missing ones, in chunks of ``chunk_size`` members, each chunk
saved as soon as it is trained: a killed run resumes, and N = 64 today is the first 64 of N = 512 tomorrow. A file
lock per entry makes a second process wait for the first one's members instead of training them again.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import xxhash
from filelock import FileLock
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from unlearnkit.classifier.data import ClassifierTask, retain_indices
from unlearnkit.classifier.models import ModelOptions, build_model
from unlearnkit.classifier.options import Options, check
from unlearnkit.errors import UnlearnkitError
from unlearnkit.runio import default_cache_dir, write_json

CACHE_VERSION = 1  # bump when a member's training changes, so old cached members are not read as new ones


class Recipe(Options):
    """How each member is trained. The defaults reach ≥ 95 % test accuracy on digits with the default MLP in seconds
    (docs/benchmarks.md)."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0, description="learning rate (peak, with the cosine schedule)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay (coupled, as torch's SGD and Adam)")
    epochs: int = Field(20, ge=1, description="passes over the training examples")
    batch_size: int = Field(64, ge=1, description="examples per step and member")
    schedule: Literal["constant", "cosine"] = Field("cosine", description="learning rate per step")

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of step ``step`` (0-based) of ``total``."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1 + math.cos(math.pi * step / total))


def init_member(model: ModelOptions, task: ClassifierTask, seed: int) -> nn.Module:
    """Member ``seed`` before training: built after ``torch.manual_seed(seed)``, the caller's generator untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model, task.input_shape, task.num_classes)


def member_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """The random generator of member ``seed`` in epoch ``epoch``; ``stream`` 0 is training, others unlearning."""
    words = [seed, epoch] if stream == 0 else [seed, epoch, stream]
    state = np.random.SeedSequence(words).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def batch_order(seed: int, epoch: int, n: int, stream: int = 0) -> torch.Tensor:
    """The order in which member ``seed`` visits its ``n`` examples in epoch ``epoch`` (of the ``stream``)."""
    return torch.randperm(n, generator=member_generator(seed, epoch, stream))


@dataclass
class Ensemble:
    """Stacked members: ``params``/``buffers`` hold each tensor with a leading member axis, in ``seeds`` order."""

    template: nn.Module  # the architecture, its own weights unused
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    seeds: list[int]
    model: ModelOptions | None = None  # how the members were built and trained (set by train_ensemble)
    recipe: Recipe | None = None

    def __len__(self) -> int:
        return len(self.seeds)

    def member(self, i: int) -> nn.Module:
        """Member ``i`` as an ordinary module (a copy)."""
        module = copy.deepcopy(self.template)
        module.load_state_dict({k: v[i] for k, v in {**self.params, **self.buffers}.items()})
        return module

    @torch.no_grad()
    def logits(self, x: np.ndarray | torch.Tensor, batch_size: int = 1024, penultimate: bool = False) -> torch.Tensor:
        """Every member's logits (or penultimate features) on ``x``: (members, examples, classes)."""
        device = next(iter(self.params.values())).device
        x = torch.as_tensor(x, device=device)
        run = vmap(call(self.template, penultimate), in_dims=(0, 0, None))
        return torch.cat([run(self.params, self.buffers, x[i:i + batch_size]) for i in range(0, len(x), batch_size)],
                         dim=1)

    def accuracy(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
        """Each member's accuracy on (x, y), in [0, 1]: shape (members,)."""
        y = torch.as_tensor(y)
        predictions = self.logits(x).argmax(-1).cpu()
        return (predictions == y).double().mean(1).numpy()


def train_ensemble(task: ClassifierTask, model: ModelOptions | dict, recipe: Recipe | dict, seeds: list[int],
                   forget: np.ndarray | None = None, cache_dir: Path | None = None, chunk_size: int = 128,
                   device: str | torch.device = "cpu") -> Ensemble:
    """One member per seed trained on ``task.train`` without ``forget`` (indices into it; None: the whole split).

    Members found in the cache are loaded; the others are trained ``chunk_size`` at a time and saved, each chunk
    as soon as it is done. ``cache_dir=None`` means ``$UNLEARNKIT_CACHE`` (``~/.cache/unlearnkit``).
    """
    model = model if isinstance(model, ModelOptions) else check(ModelOptions, dict(model), "classifier model")
    recipe = recipe if isinstance(recipe, Recipe) else check(Recipe, dict(recipe), "classifier training recipe")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UnlearnkitError(f"ensemble seeds must be distinct whole numbers >= 0, at least one; got {seeds[:8]}")
    if chunk_size < 1:
        raise UnlearnkitError(f"chunk_size must be >= 1, got {chunk_size}")
    keep = np.arange(len(task.train)) if forget is None else retain_indices(task, np.asarray(forget))
    folder = _cache_folder(task, model, recipe, forget, cache_dir)
    template = build_model(model, task.input_shape, task.num_classes)
    if any(not (folder / f"member-{s}.safetensors").exists() for s in seeds):
        with FileLock(folder / ".train.lock"):  # another process training this entry: wait, then read its members
            missing = [s for s in seeds if not (folder / f"member-{s}.safetensors").exists()]
            x = torch.as_tensor(task.train.x[keep], device=device)
            y = torch.as_tensor(task.train.y[keep], device=device)
            for start in range(0, len(missing), chunk_size):
                chunk = missing[start:start + chunk_size]
                trained = fit(stack([init_member(model, task, s) for s in chunk], chunk, device), x, y, recipe)
                for i, seed in enumerate(chunk):
                    _save_member(folder / f"member-{seed}.safetensors", trained, i)
    states = [load_file(folder / f"member-{s}.safetensors", device=str(device)) for s in seeds]
    return Ensemble(template.to(device), {k: torch.stack([st[k] for st in states]) for k, _ in
                                          template.named_parameters()},
                    {k: torch.stack([st[k] for st in states]) for k, _ in template.named_buffers()}, seeds,
                    model, recipe)


def stack(members: list[nn.Module], seeds: list[int], device: str | torch.device = "cpu") -> Ensemble:
    """The members' weights stacked into one :class:`Ensemble` (copies; the members are left as they are)."""
    params, buffers = stack_module_state([m.to(device) for m in members])
    return Ensemble(copy.deepcopy(members[0]), {k: v.detach().clone() for k, v in params.items()},
                    {k: v.clone() for k, v in buffers.items()}, list(seeds))


def fit(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> Ensemble:
    """Train every member of ``ensemble`` on (x, y) by ``recipe``, each in its own ``batch_order``; returns it."""
    n = len(y)
    params = {k: v.requires_grad_(True) for k, v in ensemble.params.items()}
    optimizer = _optimizer(recipe, list(params.values()))
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    run = vmap(call(ensemble.template, False))
    step = 0
    for epoch in range(recipe.epochs):
        order = torch.stack([batch_order(s, epoch, n) for s in ensemble.seeds]).to(x.device)
        for b in range(steps_per_epoch):
            index = order[:, b * recipe.batch_size:(b + 1) * recipe.batch_size]
            logits = run(params, ensemble.buffers, x[index])
            # sum over members of each member's mean loss: each member's gradient is its own
            loss = F.cross_entropy(logits.flatten(0, 1), y[index].flatten(), reduction="sum") / index.shape[1]
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(step, total)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    ensemble.params = {k: v.detach() for k, v in params.items()}
    return ensemble


def call(template: nn.Module, penultimate: bool):
    """``(params, buffers, x) -> template(x)`` with the given weights: the function ``vmap`` maps over members."""
    def one(params, buffers, x):
        return functional_call(template, (params, buffers), (x,), {"penultimate": penultimate})
    return one


def _optimizer(recipe: Recipe, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _cache_folder(task: ClassifierTask, model: ModelOptions, recipe: Recipe, forget: np.ndarray | None,
                  cache_dir: Path | None) -> Path:
    forget_key = "none" if forget is None else xxhash.xxh3_64(np.sort(np.asarray(forget, np.int64)).tobytes()
                                                              ).hexdigest()
    spec = {"version": CACHE_VERSION, "task": task.name, "data": task.fingerprint,
            "model": {**model.model_dump(), "width": model.channels},  # the default width spelt out: one entry
            "recipe": recipe.model_dump(), "forget": forget_key,
            "forget_size": 0 if forget is None else len(forget)}
    key = xxhash.xxh3_64(repr(sorted(spec.items())).encode()).hexdigest()
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "classifier" / key
    if not (folder / "spec.json").exists():
        write_json(folder / "spec.json", spec)
    return folder


def _save_member(path: Path, ensemble: Ensemble, i: int) -> None:
    state = {k: v[i].detach().contiguous().cpu() for k, v in {**ensemble.params, **ensemble.buffers}.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
