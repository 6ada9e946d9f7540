"""Bootstrap confidence intervals for aggregates of per-example values, and paired comparisons of two runs.

Method: the nonparametric bootstrap with the percentile interval (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13): draw B resamples of the examples with replacement, compute the aggregate on each, and
report the (1 − c)/2 and (1 + c)/2 quantiles of the B values (``numpy.quantile``, linear interpolation). The
paired p-value is a sign-flip (swap) permutation test (Good, "Permutation, Parametric and Bootstrap Tests of
Hypotheses", 2005), with the add-one Monte Carlo p-value of Phipson & Smyth 2010 (arXiv:1603.05766).

The draws are a fixed function of ``seed``: resample b = 0, 1, …, B − 1 draws, for each group in order, the
indices ``rng.integers(0, n, size=n)`` from ``rng = numpy.random.default_rng(seed)``. The same seed and inputs
give the same interval on every machine. :func:`resample_indices` draws them all up front, as one ``[B, n]`` index
matrix per group: when every group has the same n, B·G calls of ``rng.integers(0, n, size=n)`` in turn are the
same stream as one call of size ``(B, G, n)`` (numpy keeps no state between calls outside the bit generator; the
tests check it), so that case takes one call; otherwise the B·G calls are made one by one.

A statistic is computed one resample at a time (any Python callable), or for all resamples at once when it is
marked :func:`vectorised`: it then receives the groups and the index matrices (rows of at most
:data:`CHUNK_ELEMENTS` drawn values at a time) and returns one value per row. Vectorised statistics give the same
replicates as their one-at-a-time form: means (:data:`MEAN`) bit for bit, ROC AUCs (:func:`resampled_auc`, from
counts on the pooled values ranked once) as the exact Mann–Whitney U / (n₀n₁) rounded once, which is
``sklearn.metrics.roc_auc_score`` to its rounding error (~1e-16), and KS p-values (:func:`resampled_ks_pvalue`)
bit for bit, each distinct statistic's p-value taken from ``scipy.stats.ks_2samp`` on one resample that has it.

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
CHUNK_ELEMENTS = 1 << 21  # drawn values a vectorised statistic gets at once (bounds the [rows, n] matrices' memory)

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


def check_settings(n_resamples: int, confidence: float) -> None:
    """Raise :class:`UnlearnkitError` unless n_resamples is a positive integer and 0 < confidence < 1."""
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


def percentile_interval(replicates: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The (1 − c)/2 and (1 + c)/2 quantiles of the replicates (``numpy.quantile``, linear interpolation)."""
    alpha = 1 - confidence
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def resample_indices(sizes: Sequence[int], n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[np.ndarray]:
    """One ``[B, n_g]`` index matrix per group size: row b holds the indices resample b draws for group g.

    Exactly the draws of the module docstring (resample b, then group g: ``rng.integers(0, n_g, size=n_g)``).
    Memory: 8·B·n_g bytes per group (8 MB for B = 1000 and n = 1000).
    """
    sizes = [int(n) for n in sizes]
    count = int(n_resamples)
    rng = np.random.default_rng(seed)
    if len(set(sizes)) == 1:
        # B·G calls of size n in turn = one call of size (B, G, n): the same stream (tests/evaluation/test_statistics.py)
        block = rng.integers(0, sizes[0], size=(count, len(sizes), sizes[0]))
        return [np.ascontiguousarray(block[:, g, :]) for g in range(len(sizes))]
    out = [np.empty((count, n), dtype=np.int64) for n in sizes]
    for b in range(count):
        for matrix, n in zip(out, sizes):
            matrix[b] = rng.integers(0, n, size=n)
    return out


def vectorised(statistic: Callable[[list, list[np.ndarray]], np.ndarray]):
    """Mark ``statistic(groups, indices)`` as computing all resamples at once.

    ``groups``: the checked groups (an array, or a tuple of arrays, per group); ``indices``: one ``[rows, n_g]``
    integer matrix per group. It returns ``rows`` values, value i being the statistic of the groups resampled by
    row i of every matrix (``group[indices[g][i]]``). E.g. the mean of one group: :data:`MEAN`.
    """
    statistic.vectorised = True
    return statistic


def is_vectorised(statistic) -> bool:
    return bool(getattr(statistic, "vectorised", False))


@vectorised
def MEAN(groups: list, indices: list[np.ndarray]) -> np.ndarray:
    """``np.mean`` of one group (an array) for every resample: the same bits as ``np.mean`` of each resample."""
    return groups[0][indices[0]].mean(axis=1)


def _grid_counts(positions: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """``[rows, size]``: how many times each grid point is drawn in each row (``positions``: each value's point)."""
    rows = index.shape[0]
    flat = positions[index] + (np.arange(rows, dtype=np.int64) * size)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * size).reshape(rows, size)


def _pooled_counts(first: np.ndarray, second: np.ndarray, indices: list[np.ndarray]):
    """Each row's draw counts of the two groups on their pooled distinct values (sorted, ranked once)."""
    grid, position = np.unique(np.concatenate([first, second]), return_inverse=True)
    position = position.reshape(-1)
    return (_grid_counts(position[: len(first)], indices[0], len(grid)),
            _grid_counts(position[len(first):], indices[1], len(grid)))


@vectorised
def resampled_auc(groups: list, indices: list[np.ndarray]) -> np.ndarray:
    """ROC AUC of ``groups[1]`` (label 1) against ``groups[0]`` (label 0), the values as scores, for every resample.

    AUC = U / (n₀n₁) with the Mann–Whitney U = Σ over drawn label-1 values of (label-0 draws below it + ½ · those
    equal to it). With c₀, c₁ a row's draw counts on the pooled distinct values in ascending order and
    C₀ the label-0 counts strictly below each value (a cumulative sum), 2U = Σ_k c₁[k]·(2·C₀[k] + c₀[k]): integers,
    so the AUC is the exact fraction rounded once. ``sklearn.metrics.roc_auc_score`` computes the same area by the
    trapezoidal rule over its ROC curve and so differs by rounding only (≤ a few 1e-16). The orientation of
    :func:`unlearnkit.evaluation.metrics.mia.mia_auc` (forget = 0, holdout = 1) is ``groups = [forget, holdout]``.
    """
    negative, positive = groups
    c_neg, c_pos = _pooled_counts(negative, positive, indices)
    below = np.cumsum(c_neg, axis=1) - c_neg
    twice_u = np.einsum("ij,ij->i", c_pos, 2 * below + c_neg)
    return twice_u / (2 * len(negative) * len(positive))


@vectorised
def resampled_ks_pvalue(groups: list, indices: list[np.ndarray]) -> np.ndarray:
    """``scipy.stats.ks_2samp(a, b).pvalue`` (two-sided, ``method='auto'``) for every resample, bit for bit.

    The statistic D = max |F_a − F_b| is computed for all rows from their counts on the pooled distinct values,
    with scipy's arithmetic (each ECDF an integer count divided by n, then subtracted), so each row's D is the very
    float ``ks_2samp`` finds. The p-value is a function of (D, n_a, n_b) alone, so it is asked of ``ks_2samp`` once
    per distinct D, on the first row that has it, and shared by the others.
    """
    from scipy import stats

    first, second = groups
    c_first, c_second = _pooled_counts(first, second, indices)
    gap = np.cumsum(c_first, axis=1) / len(first) - np.cumsum(c_second, axis=1) / len(second)
    statistic = np.abs(gap).max(axis=1)
    _, representative, which = np.unique(statistic, return_index=True, return_inverse=True)
    pvalues = np.array([stats.ks_2samp(first[indices[0][row]], second[indices[1][row]]).pvalue
                        for row in representative], dtype=np.float64)
    return pvalues[which.reshape(-1)]


def replicates_at(groups: Sequence, statistic: Callable, indices: Sequence[np.ndarray]) -> np.ndarray:
    """The statistic on the resamples that the index matrices (one ``[B, n_g]`` per group) describe, row by row.

    A :func:`vectorised` statistic gets the rows in chunks of at most :data:`CHUNK_ELEMENTS` drawn values; any other
    is called once per row with the resampled groups (``statistic(*resampled_groups)``).
    """
    checked = _as_groups(groups)
    sizes = [_group_size(g) for g in checked]
    if len(indices) != len(checked) or any(m.ndim != 2 or m.shape[1] != n for m, n in zip(indices, sizes)):
        raise UnlearnkitError(f"indices must be one [B, n] matrix per group of sizes {sizes}")
    count = indices[0].shape[0]
    if any(m.shape[0] != count for m in indices):
        raise UnlearnkitError("the index matrices must have one row per resample, as many in each")
    if is_vectorised(statistic):
        width = sum(n * (len(g) if isinstance(g, tuple) else 1) for g, n in zip(checked, sizes))
        step = max(1, CHUNK_ELEMENTS // max(1, width))
        parts = [np.asarray(statistic(checked, [m[at : at + step] for m in indices]), dtype=np.float64)
                 for at in range(0, count, step)]
        return np.concatenate(parts)
    return np.array([float(statistic(*[_take(g, m[b]) for g, m in zip(checked, indices)])) for b in range(count)],
                    dtype=np.float64)


def bootstrap_replicates(
    groups: Sequence, statistic: Callable[..., float], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> list[float]:
    """The B bootstrap values ``statistic(*resampled_groups)``, in draw order (see the module docstring).

    ``statistic`` may be :func:`vectorised` (then it is computed for all resamples at once).
    """
    checked = _as_groups(groups)
    check_settings(n_resamples, 0.5)
    indices = resample_indices([_group_size(g) for g in checked], n_resamples, seed)
    return replicates_at(checked, statistic, indices).tolist()


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

    ``statistic`` may also be :func:`vectorised` (e.g. :func:`resampled_auc`, :func:`resampled_ks_pvalue`): the same
    interval, computed for all resamples at once. An aggregate that returns NaN on some resample makes the interval
    NaN (it is reported, not hidden).
    """
    check_settings(n_resamples, confidence)
    return percentile_interval(bootstrap_replicates(groups, statistic, n_resamples, seed), confidence)


def bootstrap_ci(
    values: Sequence[float],
    aggregate: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) of ``aggregate(values)``: B resamples of the examples.

    Equals ``bootstrap_ci_multi([values], aggregate, ...)`` (the same draws); ``np.mean`` runs as :data:`MEAN`
    (all resamples at once, the same bits). A constant array gives a zero-width interval.
    """
    return bootstrap_ci_multi([values], MEAN if aggregate is np.mean else aggregate, n_resamples, confidence, seed)


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
    check_settings(n_resamples, confidence)

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
