"""Bootstrap confidence intervals for aggregates of per-example values, and paired comparisons of two runs.

Method: the nonparametric bootstrap with the percentile interval (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13): draw B resamples of the examples with replacement, compute the aggregate on each, and
report the (1 − c)/2 and (1 + c)/2 quantiles of the B values (``numpy.quantile``, linear interpolation). The
paired p-value is a sign-flip (swap) permutation test (Good, "Permutation, Parametric and Bootstrap Tests of
Hypotheses", 2005), with the add-one Monte Carlo p-value of Phipson & Smyth 2010 (arXiv:1603.05766).

The draws are a fixed function of ``seed``: resample b = 0, 1, …, B − 1 draws, for each group in order, the
indices ``rng.integers(0, n, size=n)`` from ``rng = numpy.random.default_rng(seed)``. The same seed and inputs
give the same interval on every machine.

Groups (:func:`bootstrap_ci_multi`): per-example arrays of the *same* examples (e.g. Q_A_Prob, ROUGE and truth
ratio of the retain split) are resampled jointly, by one index vector; arrays of different example sets (the
retain, real-authors and world-facts splits of model_utility; the unlearned and the retain model's truth ratios of
forget_quality; forget and holdout of an MIA AUC) are resampled independently.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from unlearnkit.errors import UnlearnkitError

N_RESAMPLES = 1000
CONFIDENCE = 0.95

Group = np.ndarray | tuple[np.ndarray, ...]


def _as_values(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise UnlearnkitError(f"{what} must be a flat list of per-example values, got shape {arr.shape}")
    if arr.size == 0:
        raise UnlearnkitError(f"{what} is empty: a confidence interval needs at least one example")
    if np.isnan(arr).any():
        raise UnlearnkitError(f"{what} holds NaN values: drop or fix those examples first")
    return arr


def _check_settings(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise UnlearnkitError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not 0 < confidence < 1:
        raise UnlearnkitError(f"confidence must be strictly between 0 and 1, got {confidence}: e.g. 0.95")


def _as_groups(groups: Sequence) -> list[Group]:
    """Each group: a tuple of equal-length arrays (resampled jointly) or one array."""
    if len(groups) == 0:
        raise UnlearnkitError("bootstrap_ci_multi needs at least one group of per-example values")
    out: list[Group] = []
    for g, group in enumerate(groups):
        if isinstance(group, tuple):
            if len(group) == 0:
                raise UnlearnkitError(f"group {g} is an empty tuple: pass at least one array in it")
            arrays = tuple(_as_values(a, f"group {g} array {i}") for i, a in enumerate(group))
            lengths = {len(a) for a in arrays}
            if len(lengths) > 1:
                raise UnlearnkitError(
                    f"group {g} holds arrays of lengths {sorted(lengths)}: arrays resampled jointly must describe "
                    "the same examples, one value each"
                )
            out.append(arrays)
        else:
            out.append(_as_values(group, f"group {g}"))
    return out


def _group_size(group: Group) -> int:
    return len(group[0]) if isinstance(group, tuple) else len(group)


def _take(group: Group, index: np.ndarray) -> Group:
    return tuple(a[index] for a in group) if isinstance(group, tuple) else group[index]


def _interval(replicates: list[float], confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_replicates(
    groups: Sequence, statistic: Callable[..., float], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> list[float]:
    """The B bootstrap values ``statistic(*resampled_groups)``, in draw order (see the module docstring)."""
    checked = _as_groups(groups)
    _check_settings(n_resamples, 0.5)
    rng = np.random.default_rng(seed)
    sizes = [_group_size(g) for g in checked]
    replicates = []
    for _ in range(int(n_resamples)):
        resampled = [_take(g, rng.integers(0, n, size=n)) for g, n in zip(checked, sizes)]
        replicates.append(float(statistic(*resampled)))
    return replicates


def bootstrap_ci_multi(
    groups: Sequence,
    statistic: Callable[..., float],
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over several groups of per-example values.

    ``groups``: a sequence whose items are either one array of per-example values, or a *tuple* of equal-length
    arrays describing the same examples (their rows are resampled jointly). Different groups are resampled
    independently. ``statistic`` receives one argument per group, in order: the resampled array, or the tuple of
    resampled arrays. Examples::

        # forget_quality: KS p-value of two independent samples
        bootstrap_ci_multi([tr_unlearned, tr_retain], lambda a, b: scipy.stats.ks_2samp(a, b).pvalue)
        # model_utility: harmonic mean of 9 means; the three metrics of one split are the same examples
        bootstrap_ci_multi([(r_prob, r_rouge, r_tr), (ra_prob, ra_rouge, ra_tr), (wf_prob, wf_rouge, wf_tr)],
                           lambda *splits: scipy.stats.hmean([m.mean() for split in splits for m in split]))
        # an MIA AUC: forget and holdout are different examples
        bootstrap_ci_multi([forget_scores, holdout_scores], mia.mia_auc)

    An aggregate that returns NaN on some resample makes the interval NaN (it is reported, not hidden).
    """
    _check_settings(n_resamples, confidence)
    return _interval(bootstrap_replicates(groups, statistic, n_resamples, seed), confidence)


def bootstrap_ci(
    values: Sequence[float],
    aggregate: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) of ``aggregate(values)``: B resamples of the examples.

    Equals ``bootstrap_ci_multi([values], aggregate, ...)`` (the same draws). A constant array gives a zero-width
    interval.
    """
    return bootstrap_ci_multi([values], aggregate, n_resamples, confidence, seed)


def paired_difference(
    values_a: Sequence[float],
    values_b: Sequence[float],
    aggregate: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, float]:
    """d = aggregate(a) − aggregate(b) of two runs scored on the same examples, with an interval and a p-value.

    ``values_a[i]`` and ``values_b[i]`` must be the same example. Returns:

    - ``difference``: d on the data;
    - ``low``, ``high``: the percentile bootstrap interval of d with the examples resampled jointly (one index
      vector for both runs). For ``aggregate=np.mean`` this is exactly the bootstrap of the per-example differences
      a_i − b_i, since mean(a[idx]) − mean(b[idx]) = mean((a − b)[idx]);
    - ``p_value``: two-sided sign-flip permutation test of "the two runs are exchangeable on every example". Each
      of the B permutations swaps a_i and b_i independently with probability 1/2 (``rng.random(n) < 0.5`` from
      ``default_rng(seed + 1)``), computes d* on the swapped arrays, and p = (1 + #{|d*| ≥ |d|}) / (1 + B), ties
      counted with a relative tolerance of 1e-12. It is never 0; identical runs give d = 0 and p = 1.
    """
    a, b = _as_values(values_a, "values_a"), _as_values(values_b, "values_b")
    if len(a) != len(b):
        raise UnlearnkitError(
            f"paired runs have {len(a)} and {len(b)} values: a paired comparison needs one value per example in both"
        )
    _check_settings(n_resamples, confidence)

    def diff(x: np.ndarray, y: np.ndarray) -> float:
        return float(aggregate(x)) - float(aggregate(y))

    observed = diff(a, b)
    low, high = bootstrap_ci_multi([(a, b)], lambda pair: diff(*pair), n_resamples, confidence, seed)
    rng = np.random.default_rng(seed + 1)
    extreme = 0
    for _ in range(int(n_resamples)):
        swap = rng.random(len(a)) < 0.5
        # a relative tolerance so that rounding never turns a tie with the observed value into a "less extreme"
        if abs(diff(np.where(swap, b, a), np.where(swap, a, b))) >= abs(observed) * (1 - 1e-12):
            extreme += 1
    return {"difference": observed, "low": low, "high": high, "p_value": (1 + extreme) / (1 + int(n_resamples))}
