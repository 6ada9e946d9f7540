"""Confidence intervals of every TOFU aggregate, checked against a naive bootstrap written out here."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from unlearnkit.evaluation.metrics.intervals import aggregate_intervals

B = 200


def naive_bootstrap(groups, statistic, seed=0, n=B, confidence=0.95):
    """One resample at a time; groups drawn in order, each with its own index draw, as the statistics module."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        draws = []
        for g in groups:
            size = len(g[0]) if isinstance(g, tuple) else len(g)
            idx = rng.integers(0, size, size=size)
            draws.append(tuple(np.asarray(a)[idx] for a in g) if isinstance(g, tuple) else np.asarray(g)[idx])
        values.append(statistic(*draws))
    alpha = 1 - confidence
    return list(np.quantile(values, [alpha / 2, 1 - alpha / 2]))


RNG = np.random.default_rng(3)
PER = {
    "forget_Q_A_Prob": list(RNG.uniform(0, 1, 12)),
    "forget_Truth_Ratio": list(RNG.uniform(0.2, 2, 12)),
    "retain_Q_A_Prob": list(RNG.uniform(0, 1, 10)), "retain_Q_A_ROUGE": list(RNG.uniform(0, 1, 10)),
    "retain_Truth_Ratio": list(RNG.uniform(0, 1.5, 10)),
    "ra_Q_A_Prob_normalised": list(RNG.uniform(0, 1, 8)), "ra_Q_A_ROUGE": list(RNG.uniform(0, 1, 8)),
    "ra_Truth_Ratio": list(RNG.uniform(0, 1.5, 8)),
    "wf_Q_A_Prob_normalised": list(RNG.uniform(0, 1, 9)), "wf_Q_A_ROUGE": list(RNG.uniform(0, 1, 9)),
    "wf_Truth_Ratio": list(RNG.uniform(0, 1.5, 9)),
    "mia_min_k_forget": list(RNG.normal(0, 1, 12)), "mia_min_k_holdout": list(RNG.normal(1, 1, 12)),
}
REF = {"forget_truth_ratios": list(RNG.uniform(0.5, 1.5, 12)), "mia_min_k_auc": 0.55}
AGG = {name: 1.0 for name in ("forget_Q_A_Prob", "forget_Truth_Ratio", "model_utility", "forget_quality",
                              "forget_quality_log10", "mia_min_k", "privleak", "extraction_strength")}


def test_each_aggregate_matches_a_naive_bootstrap():
    ci = aggregate_intervals(AGG, PER, REF, n_resamples=B)
    assert ci["forget_Q_A_Prob"] == pytest.approx(naive_bootstrap([PER["forget_Q_A_Prob"]], np.mean))
    closer = lambda r: np.mean(np.minimum(r, 1 / (r + 1e-10)))  # noqa: E731
    assert ci["forget_Truth_Ratio"] == pytest.approx(naive_bootstrap([PER["forget_Truth_Ratio"]], closer))
    ks = naive_bootstrap([PER["forget_Truth_Ratio"], REF["forget_truth_ratios"]],
                         lambda a, b: stats.ks_2samp(a, b).pvalue)
    assert ci["forget_quality"] == pytest.approx(ks)
    assert ci["forget_quality_log10"] == pytest.approx([math.log10(p) for p in ks])

    def auc(f, h):
        return roc_auc_score([0] * len(f) + [1] * len(h), list(f) + list(h))

    assert ci["mia_min_k"] == pytest.approx(naive_bootstrap([PER["mia_min_k_forget"], PER["mia_min_k_holdout"]], auc))
    leak = naive_bootstrap([PER["mia_min_k_forget"], PER["mia_min_k_holdout"]],
                           lambda f, h: ((1 - auc(f, h)) - (1 - 0.55)) / (1 - 0.55 + 1e-10) * 100)
    assert ci["privleak"] == pytest.approx(leak)

    def utility(*blocks):
        nine = []
        for prefix, (prob, rouge, ratio) in zip(("retain", "ra", "wf"), blocks):
            nine += [np.mean(prob), np.mean(rouge), np.mean(np.maximum(0, 1 - ratio))]
        return len(nine) / sum(1 / v for v in nine)

    blocks = [tuple(PER[f"{p}_{m}"] for m in (prob, "Q_A_ROUGE", "Truth_Ratio"))
              for p, prob in (("retain", "Q_A_Prob"), ("ra", "Q_A_Prob_normalised"), ("wf", "Q_A_Prob_normalised"))]
    assert ci["model_utility"] == pytest.approx(naive_bootstrap(blocks, utility))
    assert ci["extraction_strength"] is None  # no per-example values given


def test_missing_reference_or_value_gives_no_interval():
    ci = aggregate_intervals({"forget_quality": 0.3, "privleak": None}, PER, None, n_resamples=B)
    assert ci == {"forget_quality": None, "privleak": None}
