"""Confidence intervals of every TOFU aggregate, checked against a naive bootstrap written out here.

The naive bootstrap draws one resample at a time in the documented order and computes each aggregate the slow,
obvious way (numpy means, ``sklearn.metrics.roc_auc_score``, ``scipy.stats.ks_2samp``, ``scipy.stats.hmean``), so
it shares no code with the vectorised intervals. The inputs are random with many ties.
"""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from unlearnkit.evaluation.metrics.intervals import aggregate_intervals

B = 200
EPS = 1e-10
MIA = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_reference")
UTILITY = (("retain", "Q_A_Prob"), ("ra", "Q_A_Prob_normalised"), ("wf", "Q_A_Prob_normalised"))


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
    return [float(v) for v in np.quantile(values, [alpha / 2, 1 - alpha / 2])]


def closer_to_1(r):
    return float(np.mean(np.minimum(r, 1 / (r + EPS))))


def true_better(r):
    return float(np.mean(np.maximum(0.0, 1 - r)))


def auc(f, h):
    return roc_auc_score([0] * len(f) + [1] * len(h), list(f) + list(h))


def privleak(f, h, reference_auc):
    return ((1 - auc(f, h)) - (1 - reference_auc)) / (1 - reference_auc + EPS) * 100


def utility(*blocks):
    nine = []
    for (prefix, _), (prob, rouge, ratio) in zip(UTILITY, blocks):
        nine += [float(np.mean(prob)), float(np.mean(rouge)), true_better(ratio)]
    return 0.0 if min(nine) <= 0 else stats.hmean(nine)


def tied(rng, low, high, n, step):
    """n uniform values rounded to multiples of ``step``: many ties."""
    return list(np.round(rng.uniform(low, high, n) / step) * step)


def inputs(n_forget, n_holdout, utility_sizes, seed):
    rng = np.random.default_rng(seed)
    per = {
        "forget_Q_A_Prob": tied(rng, 0, 1, n_forget, 0.05),
        "forget_Q_A_ROUGE": tied(rng, 0, 1, n_forget, 0.25),
        "forget_Truth_Ratio": tied(rng, 0.2, 2, n_forget, 0.1) + [0.0],  # R = 0: the eps guard
        "extraction_strength": tied(rng, 0, 1, n_forget, 0.1),
        "exact_memorization": list(rng.uniform(0, 1, n_forget)),
    }
    for (prefix, prob), n in zip(UTILITY, utility_sizes):
        per[f"{prefix}_{prob}"] = tied(rng, 0, 1, n, 0.01)
        per[f"{prefix}_Q_A_ROUGE"] = tied(rng, 0, 1, n, 0.2)
        # the real authors' ratios are mostly > 1: max(0, 1 − R) is 0 on some resamples, and so model_utility
        per[f"{prefix}_Truth_Ratio"] = tied(rng, 0.5 if prefix == "ra" else 0, 1.4 if prefix == "ra" else 1.5, n, 0.05)
    for k, metric in enumerate(MIA):
        step = (0.5, 0.1, 1e-9, 0.25, 1e-9)[k]  # coarse steps: forget and holdout share values (ties across labels)
        per[f"{metric}_forget"] = tied(rng, -1, 1, n_forget, step)
        per[f"{metric}_holdout"] = tied(rng, -0.5, 1.5, n_holdout, step)
    ref = {"forget_truth_ratios": tied(rng, 0.5, 1.5, n_forget + 1, 0.1), "mia_min_k_auc": 0.55}
    aggregates = {name: 1.0 for name in per if not name.endswith(("_forget", "_holdout"))}
    aggregates.update({name: 1.0 for name in (*MIA, "privleak", "model_utility", "forget_quality",
                                              "forget_quality_log10")})
    return aggregates, per, ref


CASES = [  # forget, holdout, utility split sizes, seed: equal sizes draw in one call, unequal one call per group
    (12, 12, (10, 8, 9), 0),
    (15, 11, (9, 9, 9), 5),
    (40, 40, (40, 16, 17), 3),
]


@pytest.mark.parametrize("n_forget,n_holdout,utility_sizes,seed", CASES)
def test_each_aggregate_matches_a_naive_bootstrap(n_forget, n_holdout, utility_sizes, seed):
    aggregates, per, ref = inputs(n_forget, n_holdout, utility_sizes, seed)
    ci = aggregate_intervals(aggregates, per, ref, n_resamples=B, seed=seed)
    assert set(ci) == set(aggregates) and all(v is not None for v in ci.values())

    def naive(groups, statistic):
        return naive_bootstrap(groups, statistic, seed=seed)

    # means, truth ratios, model_utility and forget quality: the same bits
    for name in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "extraction_strength", "exact_memorization",
                 "retain_Q_A_Prob", "ra_Q_A_Prob_normalised", "wf_Q_A_ROUGE"):
        assert ci[name] == naive([per[name]], lambda v: float(np.mean(v))), name
    assert ci["forget_Truth_Ratio"] == naive([per["forget_Truth_Ratio"]], closer_to_1)
    for prefix in ("retain", "ra", "wf"):
        assert ci[f"{prefix}_Truth_Ratio"] == naive([per[f"{prefix}_Truth_Ratio"]], true_better), prefix
    blocks = [tuple(per[f"{p}_{m}"] for m in (prob, "Q_A_ROUGE", "Truth_Ratio")) for p, prob in UTILITY]
    assert ci["model_utility"] == naive(blocks, utility)
    ks = naive([per["forget_Truth_Ratio"], ref["forget_truth_ratios"]], lambda a, b: stats.ks_2samp(a, b).pvalue)
    assert ci["forget_quality"] == ks
    assert ci["forget_quality_log10"] == [math.log10(p) for p in ks]
    # the membership AUCs and privleak: the exact Mann–Whitney fraction where sklearn sums trapezoids, so up to
    # sklearn's rounding
    for metric in MIA:
        want = naive([per[f"{metric}_forget"], per[f"{metric}_holdout"]], auc)
        assert ci[metric] == pytest.approx(want, rel=0, abs=1e-12), metric
    leak = naive([per["mia_min_k_forget"], per["mia_min_k_holdout"]], lambda f, h: privleak(f, h, 0.55))
    assert ci["privleak"] == pytest.approx(leak, rel=0, abs=1e-10)
    # the intervals are not degenerate (the comparisons above are of distinct numbers)
    for name in ("forget_Q_A_Prob", "forget_Truth_Ratio", "model_utility", "forget_quality", "mia_min_k", "privleak"):
        assert ci[name][0] < ci[name][1], name


def test_model_utility_is_zero_on_resamples_where_an_input_is_zero():
    _, per, ref = inputs(12, 12, (10, 8, 9), 0)
    per["ra_Truth_Ratio"] = [1.2] * 7 + [0.9]  # true_better is 0 unless the one ratio below 1 is drawn
    ci = aggregate_intervals({"model_utility": 0.1}, per, ref, n_resamples=B)
    blocks = [tuple(per[f"{p}_{m}"] for m in (prob, "Q_A_ROUGE", "Truth_Ratio")) for p, prob in UTILITY]
    assert ci["model_utility"] == naive_bootstrap(blocks, utility)
    assert ci["model_utility"][0] == 0.0 < ci["model_utility"][1]


def test_the_seed_and_the_confidence_are_used():
    aggregates, per, ref = inputs(12, 12, (10, 8, 9), 0)
    base = aggregate_intervals(aggregates, per, ref, n_resamples=B)
    assert aggregate_intervals(aggregates, per, ref, n_resamples=B) == base
    other = aggregate_intervals(aggregates, per, ref, n_resamples=B, seed=1)
    assert other["forget_Q_A_Prob"] == naive_bootstrap([per["forget_Q_A_Prob"]], np.mean, seed=1) != base[
        "forget_Q_A_Prob"]
    wide = aggregate_intervals(aggregates, per, ref, n_resamples=B, confidence=0.99)
    assert wide["mia_loss"][0] <= base["mia_loss"][0] and wide["mia_loss"][1] >= base["mia_loss"][1]
    assert wide["mia_loss"] != base["mia_loss"]


def test_missing_reference_or_value_gives_no_interval():
    _, per, ref = inputs(12, 12, (10, 8, 9), 0)
    ci = aggregate_intervals({"forget_quality": 0.3, "privleak": None}, per, None, n_resamples=B)
    assert ci == {"forget_quality": None, "privleak": None}
    ci = aggregate_intervals({"privleak": 0.3, "extraction_strength": 0.5, "model_utility": 0.4},
                             {k: v for k, v in per.items() if k not in ("extraction_strength", "wf_Q_A_ROUGE")},
                             {"forget_truth_ratios": ref["forget_truth_ratios"]}, n_resamples=B)
    assert ci == {"privleak": None, "extraction_strength": None, "model_utility": None}
