"""Bootstrap intervals and paired comparisons against naive loops written out here, and exact enumeration.

The naive loops restate the documented draw order (resample b, then group g: ``rng.integers(0, n, size=n)``) one
resample at a time and take the percentiles with ``numpy.percentile``; they never call the code under test.
"""

import itertools

import numpy as np
import pytest
from scipy import stats

from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics.statistics import bootstrap_ci, bootstrap_ci_multi, paired_difference


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


@pytest.mark.parametrize("aggregate", [np.mean, np.median])
def test_bootstrap_ci_equals_a_naive_loop(aggregate):
    got = bootstrap_ci(VALUES, aggregate, n_resamples=300, confidence=0.9, seed=7)
    want = naive_percentile_ci([VALUES], aggregate, 300, 0.9, 7)
    assert got == pytest.approx(want, rel=1e-12)
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
