"""KLOM, the KL divergence of margins between unlearned and retrained models (the DMM paper's unlearning metric).

Source: "Attribute-to-Delete: Machine Unlearning via Datamodel Matching", Georgiev, Rinberg, Park, Garg, Ilyas,
Madry, Neel 2024, arXiv:2410.23232; its evaluation code, RoyRin/data-unlearning-bench ``src/eval.py``
(``get_margin``, ``compute_binned_KL_div``, ``kl_from_margins``). unlearnkit research notes: methods.md §8,
metrics.md §4.

N models are unlearned (from N originals) and N retrained without the forget set ("oracles"). For each evaluation
point — forget, retain or validation, the caller picks — each model gives a margin
m = logit_y − logsumexp over the other logits, and KLOM is the KL divergence KL(unlearned ‖ retrained) between the
two samples of margins, binned:

- both samples are clipped to [−100, 100];
- 20 equal bins span the pooled samples, ``np.linspace(min, max, 21)`` (max = min + 1 when all margins are equal);
- a margin lands in bin i when edge[i−1] ≤ m < edge[i] (``np.digitize``), so margins equal to the top edge — the
  largest of the pooled samples — fall outside every bin and are not counted, as in the reference;
- the bin frequencies p (unlearned) and q (retrained) are the counts over the counted margins; where p > 0, q is
  raised to at least 1e-5; KL = ``scipy.stats.entropy(p, q)``, which renormalises both.

0 means the unlearned models' margins are distributed as the retrained ones' (at this resolution). When every
unlearned margin equals the pooled maximum, no unlearned margin is counted and the reference's value is NaN; so is
this one. The DMM paper reports KLOM's distribution over the points of each split; the functions here return the
per-point values and leave the summary (mean, a percentile) to the caller.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import entropy

from unlearnkit.errors import UnlearnkitError

BINS = 20
CLIP = 100.0
MIN_PROBABILITY = 1e-5


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """logit_y − logsumexp(logits of the other classes), per row of ``logits`` (..., n, classes); float64."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim < 2 or logits.shape[-2] != labels.shape[0]:
        raise UnlearnkitError(f"logits of shape {logits.shape} do not match {labels.shape[0]} labels: pass "
                              "logits (..., examples, classes) and one label per example")
    index = labels.reshape((1,) * (logits.ndim - 2) + (-1, 1))
    correct = np.take_along_axis(logits, index, axis=-1)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, index, -np.inf, axis=-1)
    return correct - logsumexp(others, axis=-1)


def klom(unlearned_margins: np.ndarray, retrained_margins: np.ndarray) -> np.ndarray:
    """Per point, the binned KL(unlearned ‖ retrained) of margins from (models, points) arrays of each side."""
    unlearned = np.asarray(unlearned_margins, dtype=np.float64)
    retrained = np.asarray(retrained_margins, dtype=np.float64)
    if unlearned.ndim != 2 or retrained.ndim != 2 or unlearned.shape[1] != retrained.shape[1]:
        raise UnlearnkitError(f"unlearned {unlearned.shape} and retrained {retrained.shape} margins must be "
                              "(models, points) arrays over the same points")
    if unlearned.shape[0] == 0 or retrained.shape[0] == 0 or np.isnan(unlearned).any() or np.isnan(retrained).any():
        raise UnlearnkitError("KLOM needs at least one model per side and margins without NaN")
    unlearned, retrained = np.clip(unlearned, -CLIP, CLIP), np.clip(retrained, -CLIP, CLIP)
    start = np.minimum(unlearned.min(axis=0), retrained.min(axis=0))
    end = np.maximum(unlearned.max(axis=0), retrained.max(axis=0))
    end = np.where(start >= end, start + 1, end)
    edges = np.linspace(start, end, BINS + 1)  # (edges, points): each column as one np.linspace call
    p, q = _frequencies(unlearned, edges), _frequencies(retrained, edges)
    q = np.where(p > 0, np.maximum(q, MIN_PROBABILITY), q)
    with np.errstate(invalid="ignore", divide="ignore"):
        return entropy(p, q, axis=0)


def _frequencies(sample: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(bins, points) frequencies of the margins counted in bins 1..BINS (``np.digitize`` numbering); 0 if none."""
    index = np.zeros(sample.shape, dtype=np.int64)  # how many edges are ≤ m: np.digitize for increasing edges
    for edge in edges:
        index += sample >= edge
    points = sample.shape[1]
    flat = index + (BINS + 2) * np.arange(points)[None, :]
    counts = np.bincount(flat.ravel(), minlength=(BINS + 2) * points).reshape(points, BINS + 2)[:, 1:BINS + 1].T
    totals = counts.sum(axis=0)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
