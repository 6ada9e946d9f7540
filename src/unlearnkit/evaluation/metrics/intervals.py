"""Bootstrap confidence intervals for every aggregate of a TOFU evaluation, from its per-example values alone.

Each aggregate is recomputed on resampled examples (percentile bootstrap, :mod:`unlearnkit.evaluation.metrics.statistics`):

- means (Q_A_Prob, normalised probability, ROUGE, extraction strength, exact memorization) and the truth-ratio
  aggregates: the examples of the split, with the metric's own aggregate;
- model_utility: the retain, real-author and world-fact splits each resampled as a block (the three numbers of a
  split describe the same examples), then the harmonic mean of the nine aggregates;
- forget_quality (and its log10): the unlearned and the retain model's forget truth ratios resampled independently,
  then the KS p-value;
- membership-inference AUCs: forget and holdout resampled independently; privleak against the retain model's fixed
  Min-K% AUC.

Seeded, so the same result gives the same intervals. A metric without per-example values (or with too few) gets None.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from unlearnkit.evaluation.metrics import mia, registry
from unlearnkit.evaluation.metrics import tofu as tofu_metrics
from unlearnkit.evaluation.metrics.statistics import bootstrap_ci, bootstrap_ci_multi

UTILITY_SPLITS = (("retain", "retain_Q_A_Prob"), ("ra", "ra_Q_A_Prob_normalised"), ("wf", "wf_Q_A_Prob_normalised"))


def _present(values) -> list[float] | None:
    kept = [float(v) for v in values or [] if v is not None and math.isfinite(float(v))]
    return kept if len(kept) >= 2 else None


def _truth_aggregate(prefix: str):
    return tofu_metrics.closer_to_1_better if prefix == "forget" else tofu_metrics.true_better


def aggregate_intervals(aggregates: dict, per_example: dict, reference: dict | None = None,
                        n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, list | None]:
    """``{metric: [low, high] or None}`` for every aggregate in ``aggregates``."""
    ref = reference or {}
    settings = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    out: dict[str, list | None] = {}
    for name, value in aggregates.items():
        interval = None
        if value is not None:
            interval = _interval(name, aggregates, per_example, ref, settings)
        out[name] = list(interval) if interval is not None else None
    return out


def _interval(name: str, aggregates: dict, per_example: dict, ref: dict, settings: dict):
    """The interval of ``name``, drawn as its declaration in the metric table says (:mod:`.registry`)."""
    declared = registry.metric(name)
    kind = declared.interval if declared is not None else None
    if kind in ("mean", "truth_ratio_forget", "truth_ratio"):
        values = _present(per_example.get(name))
        if not values:
            return None
        statistic = {"mean": np.mean, "truth_ratio_forget": tofu_metrics.closer_to_1_better,
                     "truth_ratio": tofu_metrics.true_better}[kind]
        return bootstrap_ci(values, statistic, **settings)
    if kind in ("forget_quality", "forget_quality_log10"):
        ours, theirs = _present(per_example.get("forget_Truth_Ratio")), _present(ref.get("forget_truth_ratios"))
        if not ours or not theirs:
            return None
        low, high = bootstrap_ci_multi([ours, theirs], lambda a, b: stats.ks_2samp(a, b).pvalue, **settings)
        if kind == "forget_quality":
            return low, high
        return tuple(math.log10(p) if p > 0 else float("-inf") for p in (low, high))
    if kind == "model_utility":
        return _utility_interval(per_example, settings)
    if kind in ("auc", "privleak"):
        metric = "mia_min_k" if kind == "privleak" else name
        forget, holdout = _present(per_example.get(f"{metric}_forget")), _present(per_example.get(f"{metric}_holdout"))
        if not forget or not holdout:
            return None
        if kind == "privleak":
            reference_auc = float(ref["mia_min_k_auc"]) if "mia_min_k_auc" in ref else None
            if reference_auc is None:
                return None
            return bootstrap_ci_multi([forget, holdout],
                                      lambda f, h: mia.privleak(mia.mia_auc(f, h), reference_auc), **settings)
        return bootstrap_ci_multi([forget, holdout], mia.mia_auc, **settings)
    return None


def _utility_interval(per_example: dict, settings: dict):
    groups = []
    for prefix, prob in UTILITY_SPLITS:
        arrays = [per_example.get(prob), per_example.get(f"{prefix}_Q_A_ROUGE"), per_example.get(f"{prefix}_Truth_Ratio")]
        if any(a is None or len(a) < 2 or any(v is None for v in a) for a in arrays):
            return None
        groups.append(tuple(np.asarray(a, dtype=np.float64) for a in arrays))

    def utility(*blocks) -> float:
        nine = []
        for (prefix, _), (prob, rouge, ratio) in zip(UTILITY_SPLITS, blocks):
            nine += [float(np.mean(prob)), float(np.mean(rouge)), _truth_aggregate(prefix)(ratio)]
        return 0.0 if min(nine) <= 0 else float(stats.hmean(nine))

    return bootstrap_ci_multi(groups, utility, **settings)
