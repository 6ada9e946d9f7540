"""[grad^2_yy g + lambda I]^-1 b by a truncated Neumann series of Hessian-vector products, and its divergence check.

    v = eta_N * sum_{q=0}^{Q-1} (I - eta_N (H + lambda I))^q b,        H = grad^2_yy g

(research/methods.md §22; the series of Ghadimi and Wang 2018, "Approximation methods for bilevel programming",
arXiv:1802.02246, used by BO-REP). It converges to (H + lambda I)^-1 b when 0 < eta_N (h + lambda) < 2 for every
eigenvalue h of H; the solvers ask for the usual sufficient condition eta_N ||H + lambda I|| < 1, under which every
term is a contraction of the one before. Q terms cost Q - 1 Hessian-vector products.

Two checks, each a one-line :class:`UnlearnkitError` naming the fix:

- :func:`check_contraction`: ``iterations`` steps of power iteration estimate ||H + lambda I|| (a lower bound that
  is tight for a few dozen iterations on a well separated top eigenvalue); eta_N times it >= 1 is refused.
- inside :func:`neumann_inverse_hvp`: a term whose norm exceeds the first term's (by more than rounding) means the
  series is diverging (eta_N too large, or a negative curvature of H that lambda does not cover).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from unlearnkit.errors import UnlearnkitError
from unlearnkit.optim.bilevel.problem import Tensors, norm

Hvp = Callable[[Sequence[torch.Tensor]], Tensors]
GROWTH_TOLERANCE = 1e-6


def damped(hvp: Hvp, damping: float) -> Hvp:
    """v -> (H + damping I) v."""
    return lambda v: [h + damping * t for h, t in zip(hvp(v), v)]


def neumann_inverse_hvp(hvp: Hvp, b: Sequence[torch.Tensor], lr: float, terms: int) -> Tensors:
    """eta_N sum_{q<Q} (I - eta_N A)^q b for the operator ``hvp`` (v -> A v; already damped)."""
    term = [t.detach().clone() for t in b]
    total = [t.clone() for t in term]
    first = norm(term)
    for q in range(1, terms):
        term = [t - lr * h.detach() for t, h in zip(term, hvp(term))]
        size = norm(term)
        if size > first * (1 + GROWTH_TOLERANCE) + 1e-30:
            raise UnlearnkitError(f"the Neumann series diverges: term {q} has norm {size:.3g} > the first term's "
                                  f"{first:.3g}, so neumann_lr * ||H + damping I|| >= 1 or H has negative "
                                  "curvature: lower neumann_lr or raise damping")
        for acc, t in zip(total, term):
            acc.add_(t)
    return [lr * t for t in total]


def operator_norm(hvp: Hvp, like: Sequence[torch.Tensor], iterations: int, seed: int = 0) -> float:
    """||A|| of the symmetric operator ``hvp`` by ``iterations`` steps of power iteration from a seeded start."""
    generator = torch.Generator(device=like[0].device).manual_seed(seed)
    v = [torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype) for t in like]
    estimate = 0.0
    for _ in range(iterations):
        size = norm(v)
        if size == 0:
            return 0.0
        v = [t / size for t in v]
        v = [t.detach() for t in hvp(v)]
        estimate = norm(v)
    return estimate


def check_contraction(hvp: Hvp, like: Sequence[torch.Tensor], lr: float, iterations: int) -> float:
    """||A|| (estimated); an :class:`UnlearnkitError` when neumann_lr * ||A|| >= 1 (the series would not contract)."""
    size = operator_norm(hvp, like, iterations)
    if lr * size >= 1:
        raise UnlearnkitError(f"the Neumann series would diverge: neumann_lr * ||H + damping I|| = {lr:g} * "
                              f"{size:.4g} = {lr * size:.3g} >= 1; set neumann_lr below {1 / size:.3g}")
    return size
