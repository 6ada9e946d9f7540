"""The Euclidean projection onto the capped simplex {w : 0 <= w_i <= 1, sum_i w_i = m}, exactly.

The projection of ``a`` is ``clip(a - mu, 0, 1)`` for the one shift mu that makes the sum m (the KKT conditions of
min ½||w - a||²; Wang and Lu, "Projection onto the capped simplex", arXiv:1503.01002). s(mu) = sum_i clip(a_i - mu,
0, 1) is continuous, non-increasing and linear between the breakpoints {a_i} ∪ {a_i - 1}, so mu is found exactly:
a binary search over the sorted breakpoints (each s evaluation O(n)) brackets it between two consecutive ones, and
the linear piece there gives it in closed form. The worst-case forget-set selection (research/methods.md §15,
OPTML-Group/Unlearn-WorstCase ``utils.bisection``) bisects on mu to a tolerance instead; the result is the same
point up to that tolerance.
"""

from __future__ import annotations

import numpy as np

from unlearnkit.errors import UnlearnkitError


def project_capped_simplex(a: np.ndarray, total: float) -> np.ndarray:
    """argmin_w ||w - a||² subject to 0 <= w <= 1 and sum(w) = ``total`` (float64, the shape of ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    n = a.size
    if a.ndim != 1 or n == 0 or not np.isfinite(a).all():
        raise UnlearnkitError(f"capped-simplex projection: give a non-empty finite vector, got shape {a.shape}")
    if not 0 <= total <= n:
        raise UnlearnkitError(f"capped-simplex projection: the sum {total} must lie in [0, {n}] for {n} weights")

    def s(mu: float) -> float:
        return float(np.clip(a - mu, 0.0, 1.0).sum())

    points = np.unique(np.concatenate([a - 1.0, a]))  # s = n at the first, 0 at the last
    lo, hi = 0, len(points) - 1
    while hi - lo > 1:  # invariant: s(points[lo]) >= total >= s(points[hi])
        mid = (lo + hi) // 2
        if s(points[mid]) >= total:
            lo = mid
        else:
            hi = mid
    s_lo, s_hi = s(points[lo]), s(points[hi])
    if s_lo == s_hi:
        mu = points[lo]
    else:  # s is linear on [points[lo], points[hi]]
        mu = points[lo] + (s_lo - total) / (s_lo - s_hi) * (points[hi] - points[lo])
    return np.clip(a - mu, 0.0, 1.0)


def top_k(weights: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the ``k`` largest weights; ties go to the lower index (a stable order, so deterministic)."""
    order = np.argsort(-np.asarray(weights, dtype=np.float64), kind="stable")
    return np.sort(order[:k]).astype(np.int64)


__all__ = ["project_capped_simplex", "top_k"]
