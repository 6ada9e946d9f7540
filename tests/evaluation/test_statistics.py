"""Bootstrap intervals and paired comparisons against naive loops written out here, and exact enumeration.

The naive loops restate the documented draw order (resample b, then group g: ``rng.integers(0, n, size=n)``) one
resample at a time and take the percentiles with ``numpy.percentile``; they never call the code under test.
"""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import statistics
from unlearnkit.evaluation.metrics.statistics import (
    MEAN,
    bootstrap_ci,
    bootstrap_ci_multi,
    bootstrap_replicates,
    paired_difference,
    replicates_at,
    resample_indices,
    resampled_auc,
    resampled_ks_pvalue,
    vectorised,
)


def naive_percentile_ci(groups, statistic, n_resamples, confidence, seed):
    rng = np.random.default_rng(seed)
    replicates = []
    for _ in range(n_resamples):
        resampled = []
        for group in groups:
            n = len(group[0]) if isinstance(group, tuple) else len(group)
            idx = rng.integers(0, n, size=n)
            if isinstance(group, tuple):
                resampled.append(tuple(np.asarray(a)[idx] for a in group))
            else:
                resampled.append(np.asarray(group)[idx])
        replicates.append(statistic(*resampled))
    tail = 100 * (1 - confidence) / 2
    return tuple(np.percentile(replicates, [tail, 100 - tail]))


VALUES = np.random.default_rng(1).exponential(2.0, size=40)


def naive_replicates(groups, statistic, n_resamples, seed):
    indices = naive_indices([len(g[0]) if isinstance(g, tuple) else len(g) for g in groups], n_resamples, seed)
    out = []
    for b in range(n_resamples):
        out.append(float(statistic(*[tuple(np.asarray(a)[m[b]] for a in g) if isinstance(g, tuple)
                                     else np.asarray(g)[m[b]] for g, m in zip(groups, indices)])))
    return out


def with_ties(rng, n, levels):
    """n values drawn from ``levels`` distinct values (many ties), shuffled, with a few negative zeros."""
    values = rng.integers(0, levels, size=n).astype(float) / 4 - 1
    values[values == 0] = -0.0
    return values


def exact_auc(negative, positive):
    """P(positive > negative) + ½ P(equal), over all pairs, as a fraction."""
    wins = sum(Fraction(int(p > q)) + Fraction(int(p == q), 2) for p in positive for q in negative)
    return wins / (len(negative) * len(positive))


@pytest.mark.parametrize("n_neg,n_pos,levels", [(40, 40, 1000), (40, 40, 6), (13, 29, 3), (7, 5, 1), (60, 11, 2)])
def test_rank_auc_equals_sklearn_and_the_exact_fraction_on_every_resample(n_neg, n_pos, levels):
    rng = np.random.default_rng(n_neg * 100 + levels)
    negative, positive = with_ties(rng, n_neg, levels), with_ties(rng, n_pos, levels) + 0.25
    indices = resample_indices([n_neg, n_pos], 300, seed=levels)
    got = replicates_at([negative, positive], resampled_auc, indices)
    for b in range(300):
        f, h = negative[indices[0][b]], positive[indices[1][b]]
        labels = [0] * n_neg + [1] * n_pos
        assert got[b] == pytest.approx(roc_auc_score(labels, np.concatenate([f, h])), rel=0, abs=1e-12)
        if b % 30 == 0:  # the exact fraction, rounded once (the pairwise count is slow)
            assert got[b] == float(exact_auc(f, h))
    if levels > 1:
        assert len(set(got.tolist())) > 5  # the resamples differ: the check above is not of one number


@pytest.mark.parametrize("n_a,n_b,levels", [(40, 40, 1000), (40, 40, 5), (12, 30, 4), (25, 9, 1000), (6, 4, 2)])
def test_ks_pvalues_equal_scipys_on_every_resample(n_a, n_b, levels):
    rng = np.random.default_rng(n_a + n_b + levels)
    a, b = with_ties(rng, n_a, levels), with_ties(rng, n_b, levels) + 0.25
    indices = resample_indices([n_a, n_b], 250, seed=1)
    got = replicates_at([a, b], resampled_ks_pvalue, indices)
    want = [stats.ks_2samp(a[indices[0][r]], b[indices[1][r]]).pvalue for r in range(250)]
    assert got.tolist() == want  # bit for bit
    assert len(set(want)) > 3


def test_vectorised_mean_has_the_bits_of_np_mean_and_chunks_change_nothing(monkeypatch):
    rng = np.random.default_rng(4)
    for n in (2, 9, 40, 400):
        values = rng.lognormal(0, 1, n)
        indices = resample_indices([n], 120, seed=n)
        want = [np.mean(values[row]) for row in indices[0]]
        assert replicates_at([values], MEAN, indices).tolist() == want
        monkeypatch.setattr(statistics, "CHUNK_ELEMENTS", 3 * n)  # rows in chunks of 3
        assert replicates_at([values], MEAN, indices).tolist() == want
        monkeypatch.undo()


def test_a_vectorised_statistic_gives_the_same_interval_as_its_plain_form():
    rng = np.random.default_rng(8)
    first, second = tuple(rng.uniform(0, 1, 15) for _ in range(2)), rng.uniform(0, 1, 9)

    def plain(pair, other):
        return pair[0].mean() - 2 * pair[1].mean() + np.max(other)

    @vectorised
    def fast(groups, indices):
        (x, y), other = groups
        return x[indices[0]].mean(axis=1) - 2 * y[indices[0]].mean(axis=1) + other[indices[1]].max(axis=1)

    assert bootstrap_replicates([first, second], fast, 200, seed=2) == naive_replicates([first, second], plain, 200, 2)
    assert bootstrap_ci_multi([first, second], fast, 200, seed=2) == bootstrap_ci_multi([first, second], plain, 200,
                                                                                         seed=2)
    with pytest.raises(UnlearnkitError, match="one \\[B, n\\] matrix per group"):
        replicates_at([first, second], fast, resample_indices([15], 10))


def naive_indices(sizes, n_resamples, seed):
    """The documented draws, one call per resample and group."""
    rng = np.random.default_rng(seed)
    rows = [[] for _ in sizes]
    for _ in range(n_resamples):
        for g, n in enumerate(sizes):
            rows[g].append(rng.integers(0, n, size=n))
    return [np.array(r).reshape(n_resamples, n) for r, n in zip(rows, sizes)]


@pytest.mark.parametrize("sizes", [(40,), (41,), (7, 7), (40, 40, 40), (1, 1), (400, 100, 117), (12, 8, 10), (5, 1)])
@pytest.mark.parametrize("seed", [0, 3])
def test_resample_indices_are_the_documented_draws(sizes, seed):
    # equal sizes take one call of size (B, G, n): the same stream as B·G calls in turn
    got = resample_indices(sizes, 57, seed)
    want = naive_indices(sizes, 57, seed)
    assert len(got) == len(sizes)
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.array_equal(g, w)


@pytest.mark.parametrize("aggregate", [np.mean, np.median])
def test_bootstrap_ci_equals_a_naive_loop(aggregate):
    got = bootstrap_ci(VALUES, aggregate, n_resamples=300, confidence=0.9, seed=7)
    want = naive_percentile_ci([VALUES], aggregate, 300, 0.9, 7)
    assert got == pytest.approx(want, rel=1e-12)
    # np.mean runs vectorised (MEAN), np.median one resample at a time: both are the naive loop's values exactly
    assert got == tuple(np.quantile(naive_replicates([VALUES], aggregate, 300, 7), [0.05, 0.95]))
    # the seed matters, and the same seed repeats
    assert bootstrap_ci(VALUES, aggregate, n_resamples=300, confidence=0.9, seed=7) == got
    assert bootstrap_ci(VALUES, aggregate, n_resamples=300, confidence=0.9, seed=8) != got


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_more_data():
    rng = np.random.default_rng(2)
    small, large = rng.normal(3.0, 1.0, 20), rng.normal(3.0, 1.0, 2000)
    low_s, high_s = bootstrap_ci(small)
    low_l, high_l = bootstrap_ci(large)
    assert low_s <= small.mean() <= high_s and low_l <= large.mean() <= high_l
    # the width goes as 1/sqrt(n): about 10x narrower here
    assert (high_l - low_l) < 0.3 * (high_s - low_s)
    # a higher confidence gives a wider interval on the same draws
    low_99, high_99 = bootstrap_ci(small, confidence=0.99)
    assert low_99 <= low_s and high_99 >= high_s


def test_constant_values_give_a_zero_width_interval():
    low, high = bootstrap_ci([0.3] * 15)
    assert low == high and low == pytest.approx(0.3)  # every resample is the same multiset: one value
    assert bootstrap_ci([5.0]) == (5.0, 5.0)


def test_independent_groups_equal_a_naive_loop():
    rng = np.random.default_rng(3)
    unlearned, retain = rng.uniform(0, 1, 25), rng.uniform(0.2, 1, 30)

    def ks_pvalue(a, b):
        return stats.ks_2samp(a, b).pvalue

    got = bootstrap_ci_multi([unlearned, retain], ks_pvalue, n_resamples=200, seed=4)
    assert got == pytest.approx(naive_percentile_ci([unlearned, retain], ks_pvalue, 200, 0.95, 4), rel=1e-12)


def test_joint_groups_keep_rows_together_and_equal_a_naive_loop():
    rng = np.random.default_rng(5)
    splits = [tuple(rng.uniform(0.1, 1, n) for _ in range(3)) for n in (12, 8, 10)]  # model_utility's shape

    def utility(*resampled):
        return stats.hmean([m.mean() for split in resampled for m in split])

    got = bootstrap_ci_multi(splits, utility, n_resamples=200, seed=6)
    assert got == pytest.approx(naive_percentile_ci(splits, utility, 200, 0.95, 6), rel=1e-12)
    low, high = got
    assert low <= utility(*splits) <= high

    ids = np.arange(20, dtype=float)

    def check_pairing(pair):
        first, second = pair
        assert np.array_equal(second, 2 * first)  # one index vector for both arrays of a tuple
        return float(first.mean())

    bootstrap_ci_multi([(ids, 2 * ids)], check_pairing, n_resamples=50)


def test_bad_input_is_a_user_error():
    with pytest.raises(UnlearnkitError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(UnlearnkitError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(UnlearnkitError, match="flat"):
        bootstrap_ci([[1.0, 2.0]])
    with pytest.raises(UnlearnkitError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(UnlearnkitError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(UnlearnkitError, match="lengths"):
        bootstrap_ci_multi([([1.0, 2.0], [1.0])], lambda pair: 0.0)
    with pytest.raises(UnlearnkitError, match="at least one group"):
        bootstrap_ci_multi([], lambda: 0.0)
    with pytest.raises(UnlearnkitError, match="one value per example"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(UnlearnkitError, match="empty"):
        paired_difference([], [])


def test_paired_difference_of_identical_runs_is_zero():
    out = paired_difference(VALUES, VALUES.copy())
    assert out == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}


def test_paired_difference_of_means_is_the_bootstrap_of_per_example_differences():
    rng = np.random.default_rng(9)
    a = rng.normal(1.0, 1.0, 30)
    b = a - 0.2 + rng.normal(0, 0.3, 30)
    out = paired_difference(a, b, n_resamples=400, seed=11)
    assert out["difference"] == pytest.approx(np.mean(a - b))
    want_low, want_high = naive_percentile_ci([a - b], np.mean, 400, 0.95, 11)
    assert out["low"] == pytest.approx(want_low, abs=1e-12) and out["high"] == pytest.approx(want_high, abs=1e-12)
    assert out["low"] <= out["difference"] <= out["high"]


def test_paired_difference_p_value_equals_a_naive_swap_loop():
    rng = np.random.default_rng(12)
    a, b = rng.normal(0.5, 1, 15), rng.normal(0.0, 1, 15)
    out = paired_difference(a, b, aggregate=np.median, n_resamples=300, seed=13)
    observed = np.median(a) - np.median(b)
    draws = np.random.default_rng(13 + 1)
    extreme = 0
    for _ in range(300):
        swap = draws.random(15) < 0.5
        a_star = [b[i] if swap[i] else a[i] for i in range(15)]
        b_star = [a[i] if swap[i] else b[i] for i in range(15)]
        extreme += abs(np.median(a_star) - np.median(b_star)) >= abs(observed)
    assert out["p_value"] == pytest.approx((1 + extreme) / 301)


def test_paired_difference_p_value_approaches_the_exact_permutation_p_value():
    a = np.array([1.0, 2.0, 3.5, 0.2])
    b = np.array([0.5, 1.0, 1.0, 0.4])
    d = a - b  # 0.5, 1.0, 2.5, -0.2: |Σ s·d| ≥ 3.8 for 4 of the 16 sign patterns
    exact = np.mean([abs(np.dot(signs, d)) >= abs(d.sum()) - 1e-12
                     for signs in itertools.product([1, -1], repeat=4)])
    assert exact == pytest.approx(0.25)
    out = paired_difference(a, b, n_resamples=20000, seed=0)
    assert out["p_value"] == pytest.approx(exact, abs=0.02)
    # a consistent large effect on 12 examples: only 2 of 4096 sign patterns are as extreme
    strong = paired_difference(np.arange(12.0) + 10, np.arange(12.0))
    assert strong["difference"] == pytest.approx(10.0) and strong["p_value"] < 0.01
