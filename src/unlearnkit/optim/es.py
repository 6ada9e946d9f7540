"""Evolution strategies in EGGROLL's form: antithetic low-rank perturbations, z-scored fitness, update from seeds."""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator

from unlearnkit.errors import ConfigError
from unlearnkit.optim.base import OptimizerParams, Registered
from unlearnkit.optim.closure import ClosureOptimizer
from unlearnkit.optim.es_population import pair_noise, population_losses
from unlearnkit.optim.registry import register


def add_pair(parameters: list[torch.Tensor], seed: int, pair: int, rank: int, alphas: list[float]) -> None:
    """``θ ← θ + alpha·ε`` for pair ``pair``'s unit-σ noise ``ε`` (``A·Bᵀ/√r`` for a matrix, ``z`` otherwise), in
    place: a matrix gets a rank-r GEMM into its own storage (``addmm_``), no dense noise matrix is formed."""
    for p, alpha, (a, b) in zip(parameters, alphas, pair_noise(parameters, seed, pair, rank)):
        if b is None:
            p.add_(a, alpha=alpha)
        else:
            p.view(p.shape[0], -1).addmm_(a, b.T, alpha=alpha / math.sqrt(rank))


def z_scores(values: list[float], eps: float = 1e-5) -> list[float]:
    """``(s − mean)/√(var + 1e-5)`` over the population (population variance), EGGROLL's fitness shaping."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


class ESParams(OptimizerParams):
    population: int = Field(8, ge=2, description="N: perturbed models per step, in antithetic pairs (even)")
    rank: int = Field(1, ge=1, description="r: rank of each weight matrix's perturbation A·Bᵀ (EGGROLL: 1)")
    sigma: float = Field(1e-3, gt=0, description="σ: scale of the perturbations")
    population_batch: int = Field(1, ge=1, description=(
        "members evaluated per forward pass, their low-rank perturbations added to the layers' outputs "
        "(optim/es_population.py); 1: one member at a time, perturbing the weights in place"))

    @field_validator("population")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"population must be even (antithetic pairs), got {value}")
        return value


@register
class EvolutionStrategies(ClosureOptimizer, Registered):
    """Evolution strategies as in EGGROLL (Sarkar et al., Evolution Strategies at the Hyperscale, 2025,
    arXiv:2511.16652; reference code ESHyperscale/HyperscaleES, ``noiser/eggroll.py``).

    Population member ``n = 0..N−1`` uses pair ``k = ⌊n/2⌋`` with sign + (even n) or − (odd n):
    ``E_n = ±(σ/√r)·A_k·B_kᵀ`` for every weight matrix, ``±σ·z_k`` for the other parameters (norms' weights, biases).
    Fitness ``s_n = −L(θ + E_n)`` (the whole step's loss under no_grad), shaped ``f_n = (s_n − mean)/√(var + 1e-5)``.
    Update, as the reference code (its 1/σ² is commented out there): ``θ ← θ·(1 − lr·wd) + lr·√N·(1/N)·Σ_n f_n·E_n``,
    applied pair by pair, ``Σ_n f_n·E_n = Σ_k (f_{2k} − f_{2k+1})·ε_k``, regenerating ``A_k, B_k, z_k`` from
    ``(seed, k)``: the state is the step's seed, never noise.

    Evaluation: with ``population_batch: 1`` members are evaluated one after another, each perturbation added in
    place to the weights by a rank-r GEMM (``addmm_``) and taken off again (memory: inference plus the small A, B;
    time: N forwards). With ``population_batch: c > 1`` the members are evaluated ``c`` per forward pass as EGGROLL
    does, ``x·Wᵀ + s·(σ/√r)·(x·B)·Aᵀ`` on each member's rows (:mod:`unlearnkit.optim.es_population`; the same
    losses up to rounding; memory: the activations of ``c×`` the rows). It needs a method that reads only the
    model's outputs (refused for one that alters activations). Defaults: r = 1
    (EGGROLL's); N = 8 and σ = 1e-3 are ours (the paper's populations are far larger; tune for the task).
    Cost: N forward passes of the step's batches, no backward.
    """

    name = "es"
    summary = "E_n = ±(σ/√r)·A·Bᵀ per matrix; f = zscore(−L(θ+E_n)); θ ← θ + lr·√N·mean(f_n·E_n) − lr·wd·θ"
    citation = "Sarkar et al., Evolution Strategies at the Hyperscale (EGGROLL), 2025, arXiv:2511.16652"
    first_order = False
    Params = ESParams

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, population: int = 8, rank: int = 1,
                 sigma: float = 1e-3, population_batch: int = 1):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, population=population, rank=rank,
                                      sigma=sigma, population_batch=population_batch))

    @classmethod
    def refusal(cls, params, method) -> str | None:
        if params.population_batch > 1 and getattr(method, "alters_activations", False):
            return (f"population_batch {params.population_batch} evaluates members through the layers' outputs, and "
                    f"method {method.name!r} changes activations with its own hooks: set population_batch: 1")
        return super().refusal(params, method)

    @torch.no_grad()
    def step(self, closure):
        group = self.param_groups[0]
        parameters, pairs = self.parameter_list(), self.parameters_with_groups()
        sigma, rank, population = group["sigma"], group["rank"], group["population"]
        if group["population_batch"] > 1:
            losses = self._batched_losses(closure, parameters, group)
        else:
            losses = []
            for k in range(population // 2):
                add_pair(parameters, closure.seed, k, rank, [sigma] * len(parameters))
                losses.append(closure(grad=False))
                add_pair(parameters, closure.seed, k, rank, [-2 * sigma] * len(parameters))
                losses.append(closure(grad=False))
                add_pair(parameters, closure.seed, k, rank, [sigma] * len(parameters))
        fitness = z_scores([-loss for loss in losses])
        for p, g in pairs:
            p.mul_(1 - g["lr"] * g["weight_decay"])
        for k in range(population // 2):
            weight = math.sqrt(population) / population * (fitness[2 * k] - fitness[2 * k + 1]) * sigma
            add_pair(parameters, closure.seed, k, rank, [g["lr"] * weight for _, g in pairs])
        return sum(losses) / len(losses)

    @staticmethod
    def _batched_losses(closure, parameters, group) -> list[float]:
        model = getattr(closure, "model", None)
        if model is None:
            raise ConfigError("es population_batch > 1 runs the model itself, and this closure does not carry one "
                              "(closure.model): set population_batch: 1")
        return population_losses(model, parameters, lambda: closure(grad=False), closure.seed, group["population"],
                                 group["rank"], group["sigma"], group["population_batch"])
