"""ES population members evaluated in batches, EGGROLL's way: one forward pass of the step's batches repeated for ``c``
members, each member's low-rank perturbation added to the layers' outputs, no dense noise matrix and no change to the
weights.

For a linear layer ``y = x·Wᵀ`` and member ``n`` (pair ``k = ⌊n/2⌋``, sign ``s = ±1``, noise ``A_k ∈ R^{out×r}``,
``B_k ∈ R^{in×r}`` from :func:`pair_noise`), ``x·(W + s·(σ/√r)·A_k·B_kᵀ)ᵀ = x·Wᵀ +
s·(σ/√r)·(x·B_k)·A_kᵀ``: a rank-r correction computed on the member's rows. An embedding's lookup gets
``s·(σ/√r)·A_k[ids]·B_kᵀ``. A vector parameter (a norm's scale, a bias) gets ``s·σ·z_k`` through the module's own
forward with that parameter set to ``z_k`` and its other parameters to zero, which is exact for every module whose
output is affine in each of its parameters (norm scales and biases are). A tied weight (embedding and output layer)
is one parameter with one noise, applied in both places.

How the members share a pass: the model's inputs are repeated ``c`` times along the batch (rows ``n·B..(n+1)·B−1``
are member ``n``'s); the method's loss is evaluated once for the first member of the chunk while every model call
is recorded split per member, then once more per other member with the model replaying that member's recorded
outputs, call by call. The loss function is a black box called exactly as often as in the one-member-at-a-time
path, with the same random numbers (the closure reseeds every micro-batch), so each member's loss is the one the
sequential path computes, up to the rounding of ``x·(W + E)ᵀ`` against ``x·Wᵀ + x·B·Aᵀ``.

Limits (checked): the method must read only the model's outputs (logits, hidden states) — a method that hooks the
model's layers (RMU, LUNAR, LAU's latent attack), runs a part of the model on its own, or asks the model for its own
``loss`` is refused with a one-line error naming ``population_batch: 1``; the trainable parameters must belong to linear layers, embeddings or modules
with vector parameters.

Cost: per chunk of ``c`` members, one forward pass over ``c×`` the rows (plus the rank-r corrections), instead of
``c`` forward passes; memory: the activations of ``c×`` the rows, the weights once, the ``A, B`` of the chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from unlearnkit.errors import ConfigError
from unlearnkit.training.sharding import derived_seed


def pair_noise(parameters: list[torch.Tensor], seed: int, pair: int, rank: int):
    """The noise of antithetic pair ``pair``, regenerated from ``(seed, "es", pair)`` by one generator, parameter by
    parameter in order: ``(A, B)`` with ``A ~ N(0,1)^{a×r}``, ``B ~ N(0,1)^{b×r}`` for a matrix (``a`` = first
    dimension, ``b`` = the others flattened), a full-rank ``z ~ N(0, I)`` for any other parameter."""
    generator = torch.Generator(device=parameters[0].device).manual_seed(derived_seed(seed, "es", pair))
    for p in parameters:
        if p.dim() >= 2:
            rows = p.shape[0]
            a = torch.randn(rows, rank, generator=generator, device=p.device, dtype=p.dtype)
            b = torch.randn(p.numel() // rows, rank, generator=generator, device=p.device, dtype=p.dtype)
            yield a, b
        else:
            yield torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype), None


def member_noise(parameters: list[torch.Tensor], seed: int, members: list[int], rank: int):
    """Per parameter, per member of ``members``: ``(sign, a, b)`` (``b`` None for a vector parameter)."""
    noise: list[list] = [[] for _ in parameters]
    for n in members:
        for i, drawn in enumerate(pair_noise(parameters, seed, n // 2, rank)):
            noise[i].append((1.0 if n % 2 == 0 else -1.0, *drawn))
    return noise


class _Perturbations:
    """Forward hooks that add each member's perturbation to the outputs of the modules owning ``parameters``."""

    def __init__(self, model: nn.Module, parameters: list[nn.Parameter], noise: list[list], sigma: float, rank: int,
                 members: int):
        self.model, self.sigma, self.rank, self.members = model, sigma, rank, members
        self.noise = {id(p): n for p, n in zip(parameters, noise)}
        self.handles, self.inside, self.active = [], False, False
        owned = set()
        for module in model.modules():
            mine = [(name, p) for name, p in module.named_parameters(recurse=False) if id(p) in self.noise]
            if not mine:
                continue
            owned.update(id(p) for _, p in mine)
            self.handles.append(module.register_forward_hook(self._hook(module, mine)))
        if len(owned) != len(self.noise):
            raise ConfigError("es population_batch: a trainable parameter belongs to no module of the model: set "
                              "population_batch: 1")

    def _hook(self, module: nn.Module, mine: list[tuple[str, nn.Parameter]]):
        scale = self.sigma / math.sqrt(self.rank)

        def hook(_module, args, output):
            if self.inside:  # the module's own forward, called below for a vector parameter's term
                return output
            if not self.active:
                raise ConfigError(f"es population_batch: the method runs a part of the model "
                                  f"({type(module).__name__}) outside a call of the whole model, whose rows are not "
                                  "repeated per member: set population_batch: 1")
            x = args[0]
            rows = x.shape[0] // self.members
            parts = []
            for n in range(self.members):
                xn = x[n * rows:(n + 1) * rows]
                delta = torch.zeros_like(output[n * rows:(n + 1) * rows])
                for name, p in mine:
                    sign, a, b = self.noise[id(p)][n]
                    if p.dim() >= 2 and isinstance(module, nn.Linear) and name == "weight":
                        delta = delta + (sign * scale) * (xn.to(b.dtype) @ b) @ a.T
                    elif p.dim() >= 2 and isinstance(module, nn.Embedding) and name == "weight":
                        delta = delta + (sign * scale) * a[xn] @ b.T
                    elif p.dim() == 1:
                        values = {other: torch.zeros_like(q) for other, q in module.named_parameters(recurse=False)}
                        values[name] = a
                        self.inside = True
                        try:
                            term = torch.func.functional_call(module, values, (xn,))
                        finally:
                            self.inside = False
                        delta = delta + (sign * self.sigma) * term
                    else:
                        raise ConfigError(f"es population_batch: cannot perturb {type(module).__name__}.{name} "
                                          "through its outputs: set population_batch: 1")
                parts.append(output[n * rows:(n + 1) * rows] + delta.to(output.dtype))
            return torch.cat(parts)

        return hook

    def close(self):
        for handle in self.handles:
            handle.remove()


def _split(value, members: int):
    """``value`` (a model output, or one of its fields) cut into ``members`` parts along the batch."""
    if isinstance(value, torch.Tensor):
        return list(value.chunk(members)) if value.dim() > 0 else [value] * members
    if isinstance(value, (tuple, list)):
        parts = [_split(v, members) for v in value]
        return [type(value)(p[n] for p in parts) for n in range(members)]
    if isinstance(value, dict):  # ModelOutput is an OrderedDict
        split = {}
        for key, v in value.items():
            if key == "loss" and v is not None:
                raise ConfigError("es population_batch: the method asks the model for its own loss, which mixes the "
                                  "members' rows: set population_batch: 1")
            split[key] = None if key == "past_key_values" else _split(v, members)
        return [type(value)(**{k: (None if v is None else v[n]) for k, v in split.items()}) for n in range(members)]
    return [value] * members


@contextmanager
def _recording(model: nn.Module, members: int, recorded: list[list], perturbations: _Perturbations):
    """Calls of ``model`` run on inputs repeated ``members`` times; each output is split, member 0's returned and
    every member's appended to ``recorded[n]``."""
    own_hooks = {id(m): (len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()}

    def repeat(value):
        return value.repeat(members, *([1] * (value.dim() - 1))) if isinstance(value, torch.Tensor) \
            and value.dim() > 0 else value

    def pre(_module, args, kwargs):
        foreign = [m for m in model.modules() if (len(m._forward_hooks), len(m._forward_pre_hooks)) != own_hooks[id(m)]]
        if foreign:
            raise ConfigError(f"es population_batch: the method hooks the model's layers "
                              f"({type(foreign[0]).__name__}), which would see every member's rows: set "
                              "population_batch: 1")
        perturbations.active = True
        return tuple(repeat(a) for a in args), {k: repeat(v) for k, v in kwargs.items()}

    def post(_module, _args, _kwargs, output):
        perturbations.active = False
        parts = _split(output, members)
        for n in range(members):
            recorded[n].append(parts[n])
        return parts[0]

    handles = [model.register_forward_pre_hook(pre, with_kwargs=True),
               model.register_forward_hook(post, with_kwargs=True)]
    own_hooks[id(model)] = (own_hooks[id(model)][0] + 1, own_hooks[id(model)][1] + 1)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _replaying(model: nn.Module, outputs: list):
    """Calls of ``model`` return ``outputs`` in order instead of running it."""
    calls = iter(outputs)

    def forward(*_args, **_kwargs):
        try:
            return next(calls)
        except StopIteration:
            raise RuntimeError("es population_batch: the loss called the model more often than when it was recorded "
                               "(the method is not deterministic in its calls): set population_batch: 1") from None

    model.forward = forward
    try:
        yield
    finally:
        del model.forward


def population_losses(model: nn.Module, parameters: list[nn.Parameter], loss: Callable[[], float], seed: int,
                      population: int, rank: int, sigma: float, chunk: int) -> list[float]:
    """The loss (``loss()``: the step's loss at the model's current weights, under no_grad) of every member
    ``n = 0..population−1`` at ``θ + E_n``, evaluated ``chunk`` members per forward pass; the weights are not
    changed."""
    losses: list[float] = []
    for start in range(0, population, chunk):
        members = list(range(start, min(start + chunk, population)))
        perturbations = _Perturbations(model, parameters, member_noise(parameters, seed, members, rank), sigma, rank,
                                       len(members))
        recorded: list[list] = [[] for _ in members]
        try:
            with _recording(model, len(members), recorded, perturbations):
                losses.append(loss())
        finally:
            perturbations.close()
        for n in range(1, len(members)):
            with _replaying(model, recorded[n]):
                losses.append(loss())
    return losses
