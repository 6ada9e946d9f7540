"""The randomized gradient estimate (RGE) with central differences that every zeroth-order optimizer here uses.

With ``q`` directions ``u_i`` and smoothing radius ``μ`` (Liu, Chen, Kailkhura, Zhang, Hero and Varshney, A Primer on
Zeroth-Order Optimization in Signal Processing and Machine Learning, IEEE SPM 2020, arXiv:2006.06224):

``ĝ = (1/q)·Σ_i c_i·u_i``, ``c_i = s·[f(θ + μu_i) − f(θ − μu_i)] / (2μ)``;

- ``gaussian``: ``u_i ~ N(0, I)``, ``s = 1``. ``E ĝ = ∇f_μ(θ)`` with ``f_μ(θ) = E_{u~N(0,I)} f(θ + μu)``;
- ``sphere``: ``u_i`` uniform on the unit sphere of R^d (a Gaussian draw divided by its norm), ``s = d`` (the number
  of trained weights). ``E ĝ = ∇f_μ(θ)`` with ``f_μ(θ) = E_{v~U(unit ball)} f(θ + μv)``. (methods.md §13 writes
  the sphere estimate without ``d``; without it the estimate is ``∇f_μ / d``, so ``d`` is kept, as in the primer.)

``f`` is the whole step's loss (the closure, under :func:`torch.no_grad`). The directions are regenerated from
``(seed, "zo", i)``; the weights are perturbed in place and restored. Cost: ``2q`` forward passes per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from unlearnkit.optim.closure import StepClosure, draw, global_norm

Distribution = Literal["gaussian", "sphere"]


@dataclass
class Direction:
    """Direction ``u_i``: regenerated from ``(seed, "zo", index)``; ``scale`` is 1 (gaussian) or 1/‖z‖ (sphere)."""

    seed: int
    index: int
    scale: float

    @classmethod
    def make(cls, parameters: list[torch.Tensor], seed: int, index: int, distribution: Distribution) -> Direction:
        scale = 1.0
        if distribution == "sphere":
            scale = 1.0 / global_norm(draw(parameters, seed, "zo", index))  # one draw at a time
        return cls(seed, index, scale)

    def add_to(self, parameters: list[torch.Tensor], alpha: float | list[float]) -> None:
        """``θ ← θ + alpha·u`` in place (``alpha`` per parameter when a list)."""
        alphas = alpha if isinstance(alpha, list) else [alpha] * len(parameters)
        for p, a, z in zip(parameters, alphas, draw(parameters, self.seed, "zo", self.index)):
            p.add_(z, alpha=a * self.scale)

    def tensors(self, parameters: list[torch.Tensor]):
        """``u`` itself, one tensor per parameter (regenerated)."""
        for z in draw(parameters, self.seed, "zo", self.index):
            yield z.mul_(self.scale)


@torch.no_grad()
def estimate(parameters: list[torch.Tensor], closure: StepClosure, mu: float, directions: int,
             distribution: Distribution) -> tuple[list[Direction], list[float], float]:
    """The directions ``u_i``, the coefficients ``c_i`` (so that ``ĝ = (1/q)·Σ c_i·u_i``) and the mean of the ``2q``
    losses evaluated (``f(θ) + O(μ²)``, what the step logs as its loss)."""
    dimension = sum(p.numel() for p in parameters)
    factor = dimension if distribution == "sphere" else 1
    found, coefficients, losses = [], [], []
    for i in range(directions):
        u = Direction.make(parameters, closure.seed, i, distribution)
        u.add_to(parameters, mu)
        plus = closure(grad=False)
        u.add_to(parameters, -2 * mu)
        minus = closure(grad=False)
        u.add_to(parameters, mu)
        found.append(u)
        coefficients.append(factor * (plus - minus) / (2 * mu))
        losses += [plus, minus]
    return found, coefficients, sum(losses) / len(losses)
