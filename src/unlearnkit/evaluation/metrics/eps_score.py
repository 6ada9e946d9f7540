"""The forget-quality score of the NeurIPS 2023 machine-unlearning competition (the per-example ε score).

Source: "Are we making progress in unlearning? Findings from the first NeurIPS unlearning competition",
Triantafillou et al. 2024, arXiv:2406.09073, and its scorer, google-deepmind/unlearning_evaluation ``metric.py``
(``compute_forget_score_from_confs``, ``_get_epsilons``, ``_get_single_threshold_rates``,
``_get_double_threshold_rates``). unlearnkit research notes: metrics.md §4.

N models are unlearned from one original model and N are retrained from scratch without the forget set. For each
forget example, the N logit-scaled confidences c = log p_y − log Σ_{y'≠y} p_{y'} of each side are two samples, and
the score asks how well any threshold rule tells them apart (an (ε, δ)-style bound, δ = 1e-5):

1. "positive" = the side with the larger median (ties: the unlearned side).
2. If (smaller range) / (larger range) < 0.01 — one side far peakier than the other — ε = 50 (the cap).
3. Otherwise, two rule families, each giving a false-positive and a false-negative rate over the N models, as
   float32 means (the reference averages float32 0/1 values):

   - single threshold: predict positive when c ≥ t, for t on ``torch.linspace(min, max, ⌈100·(max − min)⌉)`` over
     both samples pooled (float32 thresholds: torch's default dtype);
   - double threshold: predict "the peakier side" (the smaller range; ties: the side not positive in 1.) when
     l ≤ c ≤ r. With w = the smaller range and p = the peakier sample, r runs over
     ``np.linspace(min p + w − 2, max p + 2, ⌈100·(max p − min p − w + 4)⌉)`` (400 or 401 right ends, w being
     p's range) and, for each r, l over ``np.linspace(r − w − 2, r − w + 2, 400)``: about 160 000 rules.

   Each rule gives ε = max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR) (float32 arithmetic, a NaN term
   ignored, clipped at ≥ 0); FPR = FNR = 0 gives ∞; a rule with exactly one of them 0 is discarded (too few models
   to tell), as is a rule whose both terms are NaN (FPR = FNR = 1). The example's ε is the largest over the rules
   kept, clipped to [0, 50].
4. Bucket j (ε in [j/2, (j+1)/2)) earns 2^−j points, for the buckets below ε_max = ⌈ln(N − 1)⌉; ε ≥ ε_max earns
   0. The forget quality F is the mean over the forget set, and the final score F × (RA_unlearned / RA_retrained)
   × (TA_unlearned / TA_retrained), RA and TA the mean retain and test accuracies over the N models of each side.

How it is computed. The reference builds, per example, a dense (models × rules) grid on a GPU. Here every rule's
rates come from counts: a rule's ε depends only on its true-positive and false-positive counts, so ε is read from an
(N+1) × (N+1) table computed once with the same float32 formula, and the counts come from the sorted sample. Both
sides are sorted together (one vectorised sort for all examples), with how many positives each prefix holds, so one
``np.searchsorted`` per threshold gives both sides' counts of c ≥ t, c ≤ r and c < l (log 2N comparisons, not 2N).
The double family's 400 × 400 left ends need one search per diagonal instead of one per rule when the right ends
share their step (:meth:`_Counts._below_by_diagonal`; checked exactly, else the per-rule search), and a rule's table
index is a difference of two per-end keys. The rules are the
reference's thresholds, generated the same way (``np.linspace`` for the double family, ``torch.linspace``'s float32
values for the single family: :func:`torch_linspace`), so the per-example ε is identical, not close: the tests
compare it with a dense (models × rules) implementation, and ``benchmarks/eps_scorer.py`` measures the speed-up.
The medians, ranges, the peaky rule, the sorting and the table are vectorised over examples; thresholds, counts and
ε over the ≈ 160 000 rules of one example at a time (``np.searchsorted`` takes one sorted array, and at that size
the Python loop over examples costs nothing measurable).

Choices where the reference is silent or fails:

- The reference raises when no rule survives (``np.nanmax`` of an empty array; its ``assert thr_eps`` on an array
  of two or more raises too, so it only runs with assertions off). That happens only for degenerate samples, e.g.
  both sides the same constant: every rule has FPR = 0 or FNR = 0 but not both. ε = 0 there (no rule tells the
  sides apart with both error rates measurable).
- Confidences are float64, as the reference's ``compute_logit_scaled_confidence`` returns them; the rates are
  float32 count / N, correctly rounded. The reference's GPU mean may round a rate differently by one float32 ulp
  when N is not a power of two; with N = 512, as in the competition, every rate is exact either way.
- N ≥ 3 models per side, the same N on both sides (with N = 2, ⌈ln 1⌉ = 0 leaves no bucket).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from unlearnkit.errors import UnlearnkitError

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
PEAKY_RANGE_RATIO = 0.01
BUFFER = 2.0  # how far the double-threshold rules reach beyond the peakier sample
BUCKET_WIDTH = 0.5
LEFT_THRESHOLDS = math.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT)  # 400 left ends per right end
LOG_FLOOR = 1e-45  # the reference adds it to both probabilities before the logs


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """c = log p_y − log Σ_{y'≠y} p_{y'} per row of ``logits`` (..., n, classes) with ``labels`` (n,), as the reference.

    As ``compute_logit_scaled_confidence`` (which follows LiRA's ``score.py``): the row maximum is subtracted and the
    exponentials taken in the logits' dtype, the softmax normalised in float64, and 1e-45 added to both
    probabilities before the logs (so c saturates near ±103.6 for very confident rows). Returns float64.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim < 2 or logits.shape[-2] != labels.shape[0]:
        raise UnlearnkitError(f"logits of shape {logits.shape} do not match {labels.shape[0]} labels: pass "
                              "logits (..., examples, classes) and one label per example")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted).astype(np.float64)
    probs /= probs.sum(axis=-1, keepdims=True)
    index = labels.reshape((1,) * (logits.ndim - 2) + (-1, 1))
    correct = np.take_along_axis(probs, index, axis=-1)[..., 0]
    np.put_along_axis(probs, index, 0.0, axis=-1)
    wrong = probs.sum(axis=-1)
    return np.log(correct + LOG_FLOOR) - np.log(wrong + LOG_FLOOR)


def per_example_epsilon(unlearned: np.ndarray, retrained: np.ndarray) -> np.ndarray:
    """Each forget example's ε from the (models, examples) confidences of the unlearned and retrained models."""
    unlearned, retrained = _checked(unlearned, retrained)
    retrained_positive = np.median(retrained, axis=0) > np.median(unlearned, axis=0)
    positive = np.where(retrained_positive, retrained, unlearned)
    negative = np.where(retrained_positive, unlearned, retrained)
    positive_range = positive.max(axis=0) - positive.min(axis=0)
    negative_range = negative.max(axis=0) - negative.min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 (both constant) is NaN: not peaky, as there
        peaky = np.minimum(positive_range, negative_range) / np.maximum(positive_range, negative_range) \
            < PEAKY_RANGE_RATIO
    # The double-threshold family calls the peakier side positive: the smaller range, the negative side on a tie.
    peakier_is_negative = positive_range >= negative_range
    peakier_low = np.where(peakier_is_negative, negative.min(axis=0), positive.min(axis=0))
    peakier_high = np.where(peakier_is_negative, negative.max(axis=0), positive.max(axis=0))
    width = np.minimum(positive_range, negative_range)

    pooled, positives_before = _pooled(positive, negative)
    table = epsilon_table(unlearned.shape[0])
    epsilons = np.full(unlearned.shape[1], EPSILON_CAP)
    for example in np.flatnonzero(~peaky):
        counts = _Counts(pooled[example], positives_before[example], table)
        best = max(counts.best_single(),
                   counts.best_double(peakier_low[example], peakier_high[example], width[example],
                                      peakier_is_negative[example]))
        epsilons[example] = 0.0 if best == -np.inf else min(best, EPSILON_CAP)
    return epsilons


def _pooled(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per example, both samples sorted together (examples, 2N), and how many positives the first m hold (m ≤ 2N)."""
    both = np.concatenate([positive, negative], axis=0).T
    order = np.argsort(both, axis=1, kind="stable")
    pooled = np.take_along_axis(both, order, axis=1)
    positives_before = np.zeros((both.shape[0], both.shape[1] + 1), dtype=np.int64)
    np.cumsum(order < positive.shape[0], axis=1, out=positives_before[:, 1:])
    return pooled, positives_before


class _Counts:
    """One example's rule counts from its pooled sorted sample: one ``np.searchsorted`` per threshold, both sides."""

    def __init__(self, pooled: np.ndarray, positives_before: np.ndarray, table: np.ndarray):
        self.pooled, self.positives_before = pooled, positives_before
        self.n = table.shape[0] - 1
        self.table = table.ravel()

    def best_single(self) -> float:
        """The largest ε of the single-threshold rules: positive when c ≥ t."""
        low, high = self.pooled[0], self.pooled[-1]
        thresholds = torch_linspace(low, high, int(np.ceil((high - low) * THRESHOLDS_PER_UNIT)))
        if thresholds.size == 0:
            return -np.inf
        below = np.searchsorted(self.pooled, thresholds, side="left")  # pooled values < t
        positives_below = self.positives_before[below]
        true_pos = self.n - positives_below
        false_pos = self.n - (below - positives_below)
        return float(self.table[true_pos * (self.n + 1) + false_pos].max())

    def best_double(self, peakier_low: float, peakier_high: float, width: float, peakier_is_negative: bool) -> float:
        """The largest ε of the double-threshold rules: the peakier side when l ≤ c ≤ r."""
        low = peakier_low + width - BUFFER
        high = peakier_high + BUFFER
        right = np.linspace(low, high, int(np.ceil((high - low) * THRESHOLDS_PER_UNIT)))
        # left[j, k]: the j-th left end for the right end k. np.linspace with arrays of starts and stops computes
        # each column exactly as one call per right end does (the reference's loop).
        left = np.linspace(right - width - BUFFER, right - width + BUFFER, LEFT_THRESHOLDS)
        upto = np.searchsorted(self.pooled, right, side="right")  # pooled values ≤ r
        key = _rule_key_negative if peakier_is_negative else _rule_key_positive
        on_diagonals = self._below_by_diagonal(left, key)
        if on_diagonals is None:
            below = np.searchsorted(self.pooled, left.ravel(), side="left").reshape(left.shape)  # pooled < l
            below_key = key(below, self.positives_before[below], self.n)
        else:
            below, below_key = on_diagonals
        index = key(upto, self.positives_before[upto], self.n) - below_key  # the counts in [l, r]
        np.putmask(index, below >= upto, 0)  # nothing in [l, r] (l > r included): tp = fp = 0, a discarded rule
        return float(self.table[index].max())

    def _below_by_diagonal(self, left: np.ndarray, key) -> tuple[np.ndarray, np.ndarray] | None:
        """How many pooled values lie below each left end, and their key, from one search per diagonal j + k.

        With as many right ends as left ends (400: both grids span 4 units in 399 steps, the usual case), left[j, k]
        = r_k − w − 2 + j·step is the same number along each diagonal j + k, up to rounding. One search per diagonal
        counts exactly as one per cell if (both checked here) every cell lies within τ/2 of its diagonal's
        representative (a cell of the first row or last column) and no pooled value lies within τ of it;
        τ = 1e-9·max(1, |l|), far above rounding and far below the data's spacing. The cells of a diagonal with a
        pooled value that close (usually one: the diagonal whose left ends fall on the peakier sample's minimum) are
        searched one by one. None when the grid is not of that shape.
        """
        rows, columns = left.shape
        if rows != columns:
            return None
        representative = np.concatenate([left[0], left[1:, -1]])  # diagonal s = j + k
        tolerance = 1e-9 * max(1.0, abs(left[0, 0]), abs(left[-1, -1]))  # the grid's extremes
        if np.abs(left - sliding_window_view(representative, columns)).max() > tolerance / 2:
            return None
        diagonal = np.searchsorted(self.pooled, representative, side="left")
        below = sliding_window_view(diagonal, columns)  # below[j, k] = diagonal[j + k]
        below_key = sliding_window_view(key(diagonal, self.positives_before[diagonal], self.n), columns)
        near = (np.searchsorted(self.pooled, representative - tolerance, side="left")
                != np.searchsorted(self.pooled, representative + tolerance, side="right"))
        if near.any():
            cells = sliding_window_view(near, columns)
            below, below_key = below.copy(), below_key.copy()
            searched = np.searchsorted(self.pooled, left[cells], side="left")
            below[cells] = searched
            below_key[cells] = key(searched, self.positives_before[searched], self.n)
        return below, below_key


def _rule_key_positive(total: np.ndarray, positives: np.ndarray, n: int) -> np.ndarray:
    """The table index tp·(N+1) + fp of a rule predicting the positive side for ``total`` values, ``positives`` of
    them positive. Linear in the counts, so the index of [l, r] is key(values ≤ r) − key(values < l)."""
    return positives * (n + 1) + (total - positives)


def _rule_key_negative(total: np.ndarray, positives: np.ndarray, n: int) -> np.ndarray:
    """As :func:`_rule_key_positive` for a rule predicting the negative side: tp = the negatives, fp = the positives."""
    return (total - positives) * (n + 1) + positives


def epsilon_table(num_models: int) -> np.ndarray:
    """ε of a rule from its counts: ``table[tp, fp]``, tp positives and fp negatives predicted positive of N each.

    float32 rates and arithmetic as the reference; ∞ where FPR = FNR = 0, −∞ where the rule is discarded (exactly one
    rate 0, or both ε terms NaN). Returned as float64 (the float32 values, exactly).
    """
    counts = np.arange(num_models + 1, dtype=np.float32)
    fnr = ((np.float32(num_models) - counts) / np.float32(num_models))[:, None]  # by tp
    fpr = (counts / np.float32(num_models))[None, :]  # by fp
    fnr, fpr = np.broadcast_to(fnr, (num_models + 1,) * 2).copy(), np.broadcast_to(fpr, (num_models + 1,) * 2).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        one_way = np.log(1 - DELTA - fpr) - np.log(fnr)
        other_way = np.log(1 - DELTA - fnr) - np.log(fpr)
    table = np.clip(np.fmax(one_way, other_way), 0, None).astype(np.float64)
    fnr_zero, fpr_zero = fnr == 0, fpr == 0
    table[fnr_zero ^ fpr_zero] = -np.inf
    table[np.isnan(table)] = -np.inf
    table[fnr_zero & fpr_zero] = np.inf
    return table


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` as the reference gets it: float32 values, widened to float64.

    The reference passes float64 0-d tensors and no dtype, so torch computes in its default dtype, float32, on the
    CPU (the result is moved to the GPU afterwards), symmetrically from both ends: start + step·i below the middle,
    end − step·(n − 1 − i) above, step = (end − start) / (n − 1). Torch's CPU kernels, built for AVX2 / AVX-512,
    fuse the multiply-add (one rounding); the product is exact in float64, so the float64 sum rounded to float32
    is the fused result (a second rounding could differ only if the float64 sum fell exactly on a float32 midpoint).
    """
    start32, end32 = np.float32(start), np.float32(end)
    if steps <= 1:
        return np.full(steps, start32, dtype=np.float64)
    step = np.float64((end32 - start32) / np.float32(steps - 1))
    index = np.arange(steps)
    values = np.where(index < steps // 2, np.float64(start32) + step * index,
                      np.float64(end32) - step * (steps - index - 1))
    return values.astype(np.float32).astype(np.float64)


def bucket_points(epsilons: np.ndarray, num_models: int) -> np.ndarray:
    """Each example's points: 2^−j for ε in [j/2, (j+1)/2) below ⌈ln(N − 1)⌉, else 0."""
    epsilons = np.asarray(epsilons, dtype=np.float64)
    buckets = int(np.ceil(np.log(num_models - 1)) / BUCKET_WIDTH)
    index = np.floor(epsilons / BUCKET_WIDTH)
    return np.where(index < buckets, np.exp2(-np.minimum(index, buckets)), 0.0)


def forget_quality(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """F: the mean bucket points over the forget set (the competition's forget score, before the accuracy ratios)."""
    epsilons = per_example_epsilon(unlearned, retrained)
    return float(bucket_points(epsilons, np.shape(unlearned)[0]).mean())


def final_score(forget_score: float, retain_accuracy_unlearned, retain_accuracy_retrained,
                test_accuracy_unlearned, test_accuracy_retrained) -> float:
    """F × (RA_unlearned / RA_retrained) × (TA_unlearned / TA_retrained); each accuracy a value or one per model."""
    means = [float(np.mean(value)) for value in (retain_accuracy_unlearned, retain_accuracy_retrained,
                                                 test_accuracy_unlearned, test_accuracy_retrained)]
    if means[1] <= 0 or means[3] <= 0:
        raise UnlearnkitError("the retrained models' retain and test accuracies must be positive to divide by: "
                              "pass their accuracies (per model or their mean)")
    return forget_score * (means[0] / means[1]) * (means[2] / means[3])


def _checked(unlearned, retrained) -> tuple[np.ndarray, np.ndarray]:
    unlearned = np.asarray(unlearned, dtype=np.float64)
    retrained = np.asarray(retrained, dtype=np.float64)
    if unlearned.ndim != 2 or unlearned.shape != retrained.shape:
        raise UnlearnkitError(f"unlearned {unlearned.shape} and retrained {retrained.shape} confidences must both be "
                              "(models, examples) arrays of the same shape")
    if unlearned.shape[0] < 3 or unlearned.shape[1] == 0:
        raise UnlearnkitError(f"the ε score needs at least 3 models per side and one example, got {unlearned.shape}: "
                              "unlearn and retrain more models (the competition used 512)")
    if not (np.isfinite(unlearned).all() and np.isfinite(retrained).all()):
        raise UnlearnkitError("the confidences contain NaN or infinite values: compute them with "
                              "logit_scaled_confidence from finite logits")
    return unlearned, retrained
