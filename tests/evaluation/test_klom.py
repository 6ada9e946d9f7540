"""KLOM against small cases worked out by hand, and margins against the logit-scaled confidence.

Definition: RoyRin/data-unlearning-bench ``src/eval.py`` (``compute_binned_KL_div``: clip ±100, 20 bins over the
pooled samples, ``np.digitize`` numbering with the top edge outside every bin, q ≥ 1e-5 where p > 0,
``scipy.stats.entropy`` renormalising both); the DMM paper, arXiv:2410.23232; methods.md §8.
"""

import math

import numpy as np
import pytest

from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import eps_score
from unlearnkit.evaluation.metrics.klom import klom, margins


def test_klom_by_hand_with_the_top_edge_left_out():
    """Edges 0, 0.15, …, 3. Unlearned (0, 0, 1, 3): bins 1, 1, 7 and 3 on the top edge (not counted) → p = (2/3, 1/3)
    on bins (1, 7). Retrained (0, 1, 2, 3): bins 1, 7, 14 (3 not counted) → q = 1/3 each.
    KL = 2/3 ln((2/3)/(1/3)) + 1/3 ln((1/3)/(1/3)) = (2/3) ln 2."""
    unlearned = np.array([[0.0], [0.0], [1.0], [3.0]])
    retrained = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert klom(unlearned, retrained)[0] == pytest.approx(2 / 3 * math.log(2), rel=1e-12)


def test_klom_by_hand_where_the_retrained_bin_is_empty():
    """Unlearned (0, 0, 2, 3) → p = (2/3 on bin 1, 1/3 on bin 14); retrained (0, 0, 0, 3) → q = (1 on bin 1).
    q is raised to 1e-5 on bin 14 and renormalised by 1.00001:
    KL = 2/3 ln((2/3)·1.00001) + 1/3 ln((1/3)·1.00001/1e-5)."""
    unlearned = np.array([[0.0], [0.0], [2.0], [3.0]])
    retrained = np.array([[0.0], [0.0], [0.0], [3.0]])
    expected = 2 / 3 * math.log(2 / 3 * 1.00001) + 1 / 3 * math.log(1 / 3 * 1.00001 / 1e-5)
    assert klom(unlearned, retrained)[0] == pytest.approx(expected, rel=1e-12)


def test_klom_clips_at_100_and_handles_equal_margins_per_point():
    """Column 0: −500 is clipped to −100, so it scores as −100 does. Column 1: every margin 5 → edges 5…6, all in
    bin 1 on both sides → 0. Column 2: every unlearned margin is the pooled maximum → nothing counted → NaN."""
    unlearned = np.array([[-500.0, 5.0, 2.0], [0.0, 5.0, 2.0], [1.0, 5.0, 2.0]])
    retrained = np.array([[-100.0, 5.0, 0.0], [0.5, 5.0, 1.0], [1.0, 5.0, 1.5]])
    clipped = unlearned.copy()
    clipped[0, 0] = -100.0
    values = klom(unlearned, retrained)
    assert values[0] == klom(clipped, retrained)[0]
    assert values[1] == 0.0
    assert math.isnan(values[2])


def test_klom_is_per_point_and_small_for_the_same_distribution():
    rng = np.random.default_rng(0)
    same = klom(rng.normal(0, 1, (400, 5)), rng.normal(0, 1, (400, 5)))
    apart = klom(rng.normal(0, 1, (400, 5)), rng.normal(3, 1, (400, 5)))
    assert (same < 0.2).all() and (apart > 1.0).all()


def naive_binned_kl(p_sample, q_sample):
    """One point, step by step as the reference's compute_binned_KL_div: np.digitize and a count per bin."""
    p_sample, q_sample = np.clip(p_sample, -100, 100), np.clip(q_sample, -100, 100)
    start, end = min(p_sample.min(), q_sample.min()), max(p_sample.max(), q_sample.max())
    if start >= end:
        end = start + 1
    edges = np.linspace(start, end, 21)
    p_counts = np.array([np.sum(np.digitize(p_sample, edges) == i) for i in range(1, 21)])
    q_counts = np.array([np.sum(np.digitize(q_sample, edges) == i) for i in range(1, 21)])
    p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    q = np.where(p > 0, np.maximum(q, 1e-5), q)
    p, q = p / p.sum(), q / q.sum()
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_klom_equals_a_point_by_point_computation():
    """Random margins with different spreads, ties (a 0.25 grid) and clipped values, point by point."""
    rng = np.random.default_rng(2)
    unlearned = np.round(rng.normal(0, 3, (60, 7)) * 4) / 4
    retrained = rng.normal(rng.normal(0, 2, 7), rng.uniform(0.5, 3, 7), (60, 7))
    unlearned[0, 3], retrained[5, 4] = 250.0, -130.0
    expected = [naive_binned_kl(unlearned[:, i], retrained[:, i]) for i in range(7)]
    np.testing.assert_allclose(klom(unlearned, retrained), expected, rtol=1e-12)


def test_margins_by_hand_and_equal_to_the_logit_scaled_confidence():
    """logits (ln 3, 0, 0), label 0: ln 3 − ln(e⁰ + e⁰) = ln 1.5. Mathematically the same quantity as the ε score's
    logit-scaled confidence (computed there through float64 probabilities)."""
    assert margins(np.array([[math.log(3), 0.0, 0.0]]), np.array([0]))[0] == pytest.approx(math.log(1.5), rel=1e-15)
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (2, 6, 4))
    labels = rng.integers(0, 4, 6)
    np.testing.assert_allclose(margins(logits, labels), eps_score.logit_scaled_confidence(logits, labels),
                               rtol=1e-10, atol=1e-12)


def test_klom_bad_input():
    with pytest.raises(UnlearnkitError, match="same points"):
        klom(np.zeros((3, 4)), np.zeros((3, 5)))
