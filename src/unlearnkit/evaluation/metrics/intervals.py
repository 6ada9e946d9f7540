"""Bootstrap confidence intervals for every aggregate of an evaluation, from its per-example values alone.

How each metric's interval is drawn is its ``interval`` in the metric table (:mod:`.registry`). Each aggregate is
recomputed on resampled examples (percentile bootstrap, :mod:`unlearnkit.evaluation.metrics.statistics`):

- means (Q_A_Prob, normalised probability, ROUGE, extraction strength, exact memorization, VerbMem, KnowMem) and
  the truth-ratio aggregates: the examples of the split, with the metric's own aggregate;
- model_utility: the retain, real-author and world-fact splits each resampled as a block (the three numbers of a
  split describe the same examples), then the harmonic mean of the nine aggregates;
- forget_quality (and its log10): the unlearned and the retain model's forget truth ratios resampled independently,
  then the KS p-value;
- membership-inference AUCs: forget and holdout resampled independently; privleak against the retain model's fixed
  Min-K% AUC.

Seeded, so the same result gives the same intervals. A metric without per-example values (or with too few) gets None.

Fast: each statistic is computed for all B resamples at once (:func:`~unlearnkit.evaluation.metrics.statistics.vectorised`
statistics on ``[B, n]`` index matrices), the index matrices are drawn once per distinct set of group sizes, and the
replicates that two intervals share (an AUC and privleak, forget_quality and its log10) are computed once. The draws
are those of :mod:`~unlearnkit.evaluation.metrics.statistics`, and every interval is the one the per-resample
computation gives: means, truth-ratio aggregates, model_utility and forget_quality bit for bit, the membership AUCs
and privleak to the AUC's rounding (the exact Mann–Whitney fraction rounded once where sklearn's trapezoidal rule
rounds a few times: ~1e-16).
"""

from __future__ import annotations

import math

import numpy as np

from unlearnkit.evaluation.metrics import mia, registry
from unlearnkit.evaluation.metrics import tofu as tofu_metrics
from unlearnkit.evaluation.metrics.statistics import (
    MEAN,
    check_settings,
    percentile_interval,
    replicates_at,
    resample_indices,
    resampled_auc,
    resampled_ks_pvalue,
    vectorised,
)

UTILITY_SPLITS = (("retain", "retain_Q_A_Prob"), ("ra", "ra_Q_A_Prob_normalised"), ("wf", "wf_Q_A_Prob_normalised"))


def _present(values) -> list[float] | None:
    kept = [float(v) for v in values or [] if v is not None and math.isfinite(float(v))]
    return kept if len(kept) >= 2 else None


def _truth_aggregate(prefix: str):
    return tofu_metrics.closer_to_1_better if prefix == "forget" else tofu_metrics.true_better


def truth_ratio_terms(prefix: str, ratios) -> np.ndarray:
    """The per-example terms whose mean is the split's truth-ratio aggregate (:func:`_truth_aggregate`).

    Forget: min(R, 1/(R + eps)) (``tofu.closer_to_1_better``); the others: max(0, 1 − R) (``tofu.true_better``).
    Elementwise, so the terms of a resample are the resample of the terms.
    """
    r = np.asarray(ratios, dtype=np.float64)
    if prefix == "forget":
        return np.minimum(r, 1 / (r + tofu_metrics.EPS))
    return np.maximum(0.0, 1 - r)


@vectorised
def _utility(groups, indices):
    """model_utility of every resample: the harmonic mean of the nine means, 0 where one is ≤ 0.

    The nine columns are ``float(np.mean(...))`` of each resample (a row's mean has the bits of the 1-D mean) and the
    harmonic mean is scipy's 1 / mean(1 / x) over the nine in order, so every row equals ``stats.hmean(nine)``.
    """
    nine = []
    for (prefix, _), (prob, rouge, terms), index in zip(UTILITY_SPLITS, groups, indices):
        nine += [prob[index].mean(axis=1), rouge[index].mean(axis=1), terms[index].mean(axis=1)]
    columns = np.stack(nine, axis=1)
    positive = columns.min(axis=1) > 0
    out = np.zeros(len(columns))
    out[positive] = 1.0 / np.mean(1.0 / columns[positive], axis=1)
    return out


class _Bootstrap:
    """One call's draws and replicates: index matrices per distinct group sizes, replicates per key."""

    def __init__(self, n_resamples: int, confidence: float, seed: int):
        self.n_resamples, self.confidence, self.seed = n_resamples, confidence, seed
        self._indices: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._replicates: dict[object, np.ndarray] = {}

    def replicates(self, key, groups: list, statistic) -> np.ndarray:
        if key not in self._replicates:
            check_settings(self.n_resamples, self.confidence)
            sizes = tuple(len(g[0]) if isinstance(g, tuple) else len(g) for g in groups)
            if sizes not in self._indices:
                self._indices[sizes] = resample_indices(sizes, self.n_resamples, self.seed)
            self._replicates[key] = replicates_at(groups, statistic, self._indices[sizes])
        return self._replicates[key]

    def interval(self, replicates) -> tuple[float, float]:
        return percentile_interval(replicates, self.confidence)


def aggregate_intervals(aggregates: dict, per_example: dict, reference: dict | None = None,
                        n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, list | None]:
    """``{metric: [low, high] or None}`` for every aggregate in ``aggregates``."""
    ref = reference or {}
    boot = _Bootstrap(n_resamples, confidence, seed)
    out: dict[str, list | None] = {}
    for name, value in aggregates.items():
        interval = None
        if value is not None:
            interval = _interval(name, per_example, ref, boot)
        out[name] = list(interval) if interval is not None else None
    return out


def _interval(name: str, per_example: dict, ref: dict, boot: _Bootstrap):
    """The interval of ``name``, drawn as its declaration in the metric table says."""
    declared = registry.metric(name)
    kind = declared.interval if declared is not None else None
    if kind == "mean":
        values = _present(per_example.get(name))
        return boot.interval(boot.replicates(name, [np.asarray(values)], MEAN)) if values else None
    if kind in ("truth_ratio_forget", "truth_ratio"):
        values = _present(per_example.get(name))
        if not values:
            return None
        terms = truth_ratio_terms("forget" if kind == "truth_ratio_forget" else "other", values)
        return boot.interval(boot.replicates(name, [terms], MEAN))
    if kind in ("forget_quality", "forget_quality_log10"):
        ours, theirs = _present(per_example.get("forget_Truth_Ratio")), _present(ref.get("forget_truth_ratios"))
        if not ours or not theirs:
            return None
        low, high = boot.interval(boot.replicates("forget_quality", [np.asarray(ours), np.asarray(theirs)],
                                                  resampled_ks_pvalue))
        if kind == "forget_quality":
            return low, high
        return tuple(math.log10(p) if p > 0 else float("-inf") for p in (low, high))
    if kind == "model_utility":
        return _utility_interval(per_example, boot)
    if kind in ("auc", "privleak"):
        metric = "mia_min_k" if kind == "privleak" else name
        forget, holdout = _present(per_example.get(f"{metric}_forget")), _present(per_example.get(f"{metric}_holdout"))
        if not forget or not holdout:
            return None
        if kind == "privleak" and "mia_min_k_auc" not in ref:
            return None
        aucs = boot.replicates(metric, [np.asarray(forget), np.asarray(holdout)], resampled_auc)
        if kind == "privleak":
            return boot.interval(mia.privleak(aucs, float(ref["mia_min_k_auc"])))
        return boot.interval(aucs)
    return None


def _utility_interval(per_example: dict, boot: _Bootstrap):
    groups = []
    for prefix, prob in UTILITY_SPLITS:
        arrays = [per_example.get(prob), per_example.get(f"{prefix}_Q_A_ROUGE"), per_example.get(f"{prefix}_Truth_Ratio")]
        if any(a is None or len(a) < 2 or any(v is None for v in a) for a in arrays):
            return None
        prob_values, rouge, ratios = (np.asarray(a, dtype=np.float64) for a in arrays)
        groups.append((prob_values, rouge, truth_ratio_terms(prefix, ratios)))
    return boot.interval(boot.replicates("model_utility", groups, _utility))
