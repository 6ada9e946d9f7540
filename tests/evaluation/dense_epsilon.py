"""A direct, dense implementation of the NeurIPS 2023 competition's per-example ε, for the tests and the benchmark.

Written from google-deepmind/unlearning_evaluation ``metric.py`` (``_get_epsilons``, ``_get_single_threshold_rates``,
``_get_double_threshold_rates``) the way it computes, in NumPy on the CPU instead of torch on a GPU: per example,
the full list of threshold rules (single thresholds from ``torch.linspace`` itself; every (left, right) pair of the
double family from one ``np.linspace`` per right threshold), a (models × rules) grid of predictions per side, the
float32 mean over the models, the reference's ε formula, its discarding and its infinity rule. Unlike the reference,
its assertion works (an empty set of surviving rules fails it; the reference's ``assert thr_eps`` on an array raises
as soon as two rules survive). The grid is built in chunks of rules to bound memory; chunks change no value.
Independent of unlearnkit's scorer: no counting, no sorting, no ε table.
"""

import warnings

import numpy as np
import torch

DELTA = 1e-5
CAP = 50
PER_UNIT = 100
BUFFER = 2.0
CHUNK = 8192


def _rates(pos, neg, predict, rules):
    """(fnr, fpr) over the models for every rule, in chunks: predict(confs[:, None], rule_chunk) → bool grid."""
    fnr, fpr = [], []
    for start in range(0, len(rules[0]), CHUNK):
        chunk = [r[start:start + CHUNK][None, :] for r in rules]
        fnr.append(np.mean(np.logical_not(predict(pos[:, None], *chunk)).astype(np.float32), axis=0))
        fpr.append(np.mean(predict(neg[:, None], *chunk).astype(np.float32), axis=0))
    if not fnr:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(fnr), np.concatenate(fpr)


def double_threshold_rates(pos, neg):
    pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
    smallest = min(pos_diff, neg_diff)
    if pos_diff >= neg_diff:
        pos, neg = neg, pos
    width = smallest
    min_ = pos.min() + width - BUFFER
    max_ = pos.max() + BUFFER
    right = np.linspace(min_, max_, num=int(np.ceil((max_ - min_) * PER_UNIT)))
    num_left = int(np.ceil(2 * BUFFER * PER_UNIT))
    left = np.concatenate([np.linspace(tr - width - BUFFER, tr - width + BUFFER, num=num_left) for tr in right])
    right = np.repeat(right, num_left)
    return _rates(pos, neg, lambda c, lo, hi: np.logical_and(lo <= c, c <= hi), (left, right))


def single_threshold_rates(pos, neg):
    both = np.concatenate([pos, neg])
    low, high = torch.tensor(both.min()), torch.tensor(both.max())
    thresholds = torch.linspace(low, high, int(torch.ceil((high - low) * PER_UNIT))).numpy().astype(np.float64)
    return _rates(pos, neg, lambda c, t: c >= t, (thresholds,))


def dense_epsilons(unlearned, retrained):
    """Per-example ε from (models, examples) confidences, rule by rule and model by model."""
    retrain_is_positive = np.median(retrained, axis=0) > np.median(unlearned, axis=0)
    pos_confs = np.where(retrain_is_positive, retrained, unlearned)
    neg_confs = np.where(retrain_is_positive, unlearned, retrained)
    epsilons = []
    for i in range(pos_confs.shape[1]):
        pos, neg = pos_confs[:, i], neg_confs[:, i]
        pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
        largest, smallest = max(pos_diff, neg_diff), min(pos_diff, neg_diff)
        with np.errstate(invalid="ignore", divide="ignore"):
            if smallest / largest < 0.01:
                epsilons.append(CAP)
                continue
        fnr_d, fpr_d = double_threshold_rates(pos, neg)
        fnr_s, fpr_s = single_threshold_rates(pos, neg)
        fnr, fpr = np.concatenate([fnr_d, fnr_s]), np.concatenate([fpr_d, fpr_s])
        thr_eps = np.zeros(fnr.shape, np.float32)
        thr_eps = np.where(fpr + fnr == 0, np.float32(np.inf), thr_eps)
        thr_eps = np.where((thr_eps == 0) & (fpr * fnr == 0), np.float32(np.nan), thr_eps)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmax of two NaNs (FPR = FNR = 1)
            values = np.clip(np.nanmax([np.log(1 - DELTA - fpr) - np.log(fnr),
                                        np.log(1 - DELTA - fnr) - np.log(fpr)], axis=0), 0, None)
        thr_eps = np.where(thr_eps == 0, values, thr_eps)
        kept = thr_eps[~np.isnan(thr_eps)]
        assert kept.size > 0, f"example {i}: every rule was discarded"
        epsilons.append(kept.max())
    return np.clip(np.asarray(epsilons, dtype=np.float64), 0, CAP)
