"""The NeurIPS 2023 competition's ε score against hand-built distributions, hand-worked values and a dense scorer.

Definitions: metrics.md §4 and google-deepmind/unlearning_evaluation ``metric.py`` (``compute_forget_score_from_confs``,
``_get_epsilons``, the two rule families). The dense scorer (``dense_epsilon.py``) builds every (rule × model)
prediction as the reference does; the scorer under test counts with sorted samples and a table, so they share no
code.
"""

import math

import numpy as np
import pytest
import torch
from dense_epsilon import dense_epsilons

from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import eps_score


def normal_confidences(seed, models, examples, spread=2.0):
    """Per example, a normal sample per side, means and scales drawn per example (some overlapping, some not)."""
    rng = np.random.default_rng(seed)
    sides = [rng.normal(rng.normal(0, spread, examples), rng.uniform(0.2, 3, examples), (models, examples))
             for _ in range(2)]
    return sides[0], sides[1]


def test_identical_samples_put_every_example_in_the_top_bucket():
    """The same confidences on both sides: every rule has TPR = FPR, so every ε ≤ 0 → ε = 0 → 1 point each."""
    unlearned, _ = normal_confidences(0, 32, 5)
    epsilons = eps_score.per_example_epsilon(unlearned, unlearned.copy())
    np.testing.assert_array_equal(epsilons, 0.0)
    assert eps_score.forget_quality(unlearned, unlearned.copy()) == 1.0


def test_separated_samples_earn_no_points():
    """Retrained far above unlearned: a threshold separates them (FPR = FNR = 0) → ε = ∞ → capped at 50 → 0 points."""
    rng = np.random.default_rng(1)
    unlearned = rng.normal(0, 1, (32, 4))
    retrained = rng.normal(20, 1, (32, 4))
    np.testing.assert_array_equal(eps_score.per_example_epsilon(unlearned, retrained), 50.0)
    assert eps_score.forget_quality(unlearned, retrained) == 0.0


def test_a_much_peakier_side_gets_the_cap_even_when_it_overlaps():
    """(smaller range) / (larger range) < 0.01 → ε = 50, though the rules alone would score it far lower.

    The retrained sample is a grid over [−1, 1]; the unlearned one a tight cluster around one of its points, so every
    interval holding the whole cluster also holds that retrained point (no perfect separation). At range ratio 0.0101
    the rules score it (as the dense scorer does); at 0.0099 the cap applies.
    """
    retrained = np.repeat(np.linspace(-1.0, 1.0, 64)[:, None], 2, axis=1)
    retrained[:, 1] *= 3
    ranges = retrained.max(axis=0) - retrained.min(axis=0)
    centre = retrained[32]
    spread = np.linspace(-0.5, 0.5, 64)[:, None]
    capped = centre + spread * ranges * 0.0099
    scored_side = centre + spread * ranges * 0.0101
    np.testing.assert_array_equal(eps_score.per_example_epsilon(capped, retrained), 50.0)
    scored = eps_score.per_example_epsilon(scored_side, retrained)
    assert (scored < 10).all()
    np.testing.assert_array_equal(scored, dense_epsilons(scored_side, retrained))
    # A constant side (range 0) against a spread one: ratio 0 → the cap.
    constant = np.broadcast_to(centre, retrained.shape)
    np.testing.assert_array_equal(eps_score.per_example_epsilon(constant, retrained), 50.0)


def test_both_sides_the_same_constant_score_zero_where_the_reference_fails():
    """0/0 range ratio is not peaky; every rule then has exactly one zero rate: none survives. The reference raises
    (``np.nanmax`` of an empty array); we define ε = 0. Two different constants separate perfectly: ε = 50."""
    same = np.full((8, 2), 1.5)
    np.testing.assert_array_equal(eps_score.per_example_epsilon(same, same.copy()), 0.0)
    np.testing.assert_array_equal(eps_score.per_example_epsilon(same, same + 3.0), 50.0)


@pytest.mark.parametrize("seed, models, examples", [(3, 16, 8), (4, 33, 4)])
def test_per_example_epsilon_equals_the_dense_scorer(seed, models, examples):
    unlearned, retrained = normal_confidences(seed, models, examples)
    retrained[:, 0] = unlearned[:, 0] + 0.05  # nearly identical sides
    epsilons = eps_score.per_example_epsilon(unlearned, retrained)
    np.testing.assert_array_equal(epsilons, dense_epsilons(unlearned, retrained))
    assert len(set(epsilons.tolist())) > examples // 2  # the examples really differ


def test_per_example_epsilon_equals_the_dense_scorer_at_the_competitions_512_models():
    unlearned, retrained = normal_confidences(10, 512, 2)
    np.testing.assert_array_equal(eps_score.per_example_epsilon(unlearned, retrained),
                                  dense_epsilons(unlearned, retrained))


def test_per_example_epsilon_equals_the_dense_scorer_on_tied_values():
    """Confidences on a 0.25 grid: many ties within and across sides, values that can equal a threshold exactly."""
    rng = np.random.default_rng(5)
    unlearned = np.round(rng.normal(0, 1, (20, 6)) * 4) / 4
    retrained = np.round(rng.normal(0.4, 1.2, (20, 6)) * 4) / 4
    np.testing.assert_array_equal(eps_score.per_example_epsilon(unlearned, retrained),
                                  dense_epsilons(unlearned, retrained))


def test_per_example_epsilon_equals_the_dense_scorer_on_the_thresholds_themselves():
    """Confidences placed exactly on the rules' thresholds (c = t, c = l, c = r), where < and ≤ differ.

    Each side keeps its minimum and maximum fixed (so the grids stay the same) and draws its other values from the
    thresholds the reference generates for these extremes: the single grid over [−1, 2.5], the right ends for the
    peakier side [0, 1] (w = 1) and their left ends.
    """
    rng = np.random.default_rng(8)
    single = torch.linspace(torch.tensor(-1.0), torch.tensor(2.5), 350).numpy().astype(np.float64)
    right = np.linspace(0.0 + 1.0 - 2.0, 1.0 + 2.0, 400)
    left = np.concatenate([np.linspace(r - 1.0 - 2.0, r - 1.0 + 2.0, 400) for r in right])
    grid = np.concatenate([single, right, left])
    peaky_pool, broad_pool = grid[(grid > 0) & (grid < 1)], grid[(grid > -1) & (grid < 2.5)]
    peakier = np.vstack([np.zeros(3), np.ones(3), rng.choice(peaky_pool, (18, 3))])
    broader = np.vstack([np.full(3, -1.0), np.full(3, 2.5), rng.choice(broad_pool, (18, 3))])
    for unlearned, retrained in ((peakier, broader), (broader, peakier)):
        np.testing.assert_array_equal(eps_score.per_example_epsilon(unlearned, retrained),
                                      dense_epsilons(unlearned, retrained))


def test_equal_ranges_make_the_negative_side_the_peakier_one():
    """Equal ranges (shifted copies on a dyadic grid, so exactly equal): the double family's positive is the side
    that is negative by median, as in the reference's ``if pos_diff >= neg_diff: swap``."""
    rng = np.random.default_rng(9)
    unlearned = rng.integers(-40, 40, (24, 6)) / 16
    retrained = unlearned + 3 / 16
    assert (np.ptp(unlearned, axis=0) == np.ptp(retrained, axis=0)).all()
    np.testing.assert_array_equal(eps_score.per_example_epsilon(unlearned, retrained),
                                  dense_epsilons(unlearned, retrained))


def test_epsilon_table_by_hand():
    """N = 4. tp = 2, fp = 1: FNR = 1/2, FPR = 1/4, ε = max(ln((1−δ−1/4)/(1/2)), ln((1−δ−1/2)/(1/4))) ≈ ln 2."""
    table = eps_score.epsilon_table(4)
    expected = max(math.log((1 - 1e-5 - 0.25) / 0.5), math.log((1 - 1e-5 - 0.5) / 0.25))
    assert table[2, 1] == pytest.approx(expected, rel=1e-6)
    assert table[2, 1] == np.float32(table[2, 1])  # a float32 value, as the reference's rates and logs
    assert table[4, 0] == np.inf  # FPR = FNR = 0
    assert table[4, 1] == -np.inf and table[3, 0] == -np.inf  # exactly one rate 0: discarded
    assert table[0, 4] == -np.inf  # FPR = FNR = 1: both terms NaN, discarded
    assert table[1, 3] == 0.0  # a rule worse than chance: clipped at 0


def test_bucket_points_by_hand():
    """N = 512: ε_max = ⌈ln 511⌉ = 7, 14 buckets of 0.5; N = 3: ⌈ln 2⌉ = 1, two buckets."""
    eps = np.array([0.0, 0.49, 0.5, 1.2, 6.99, 7.0, 50.0])
    np.testing.assert_array_equal(eps_score.bucket_points(eps, 512), [1, 1, 0.5, 0.25, 2.0**-13, 0, 0])
    np.testing.assert_array_equal(eps_score.bucket_points(np.array([0.3, 0.7, 1.0]), 3), [1, 0.5, 0])


def test_forget_quality_and_final_score():
    unlearned, retrained = normal_confidences(6, 16, 6)
    epsilons = dense_epsilons(unlearned, retrained)
    points = [0.0 if e >= 3 else 2.0 ** -math.floor(2 * e) for e in epsilons]  # ⌈ln 15⌉ = 3
    forget = eps_score.forget_quality(unlearned, retrained)
    assert forget == pytest.approx(sum(points) / len(points), abs=1e-15)
    score = eps_score.final_score(forget, [0.9, 0.8], 0.85, np.array([0.7, 0.7, 0.8]), [0.75])
    assert score == pytest.approx(forget * (0.85 / 0.85) * ((2.2 / 3) / 0.75))


def test_torch_linspace_matches_torch():
    """The single-threshold grid is torch.linspace of float64 0-d tensors (float32 values), as the reference calls it."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        low = float(rng.normal(0, 30))
        high = low + float(rng.exponential(8))
        steps = math.ceil((high - low) * 100)
        expected = torch.linspace(torch.tensor(low), torch.tensor(high), steps).numpy().astype(np.float64)
        np.testing.assert_array_equal(eps_score.torch_linspace(low, high, steps), expected)
    for steps in (0, 1, 2):
        expected = torch.linspace(torch.tensor(0.3), torch.tensor(0.305), steps).numpy().astype(np.float64)
        np.testing.assert_array_equal(eps_score.torch_linspace(0.3, 0.305, steps), expected)


def test_logit_scaled_confidence_by_hand():
    """logits (ln 3, 0, 0): p = (3/5, 1/5, 1/5); label 0 → ln(3/5) − ln(2/5) = ln 1.5; label 1 → ln(1/5) − ln(4/5)."""
    logits = np.array([[math.log(3), 0.0, 0.0], [math.log(3), 0.0, 0.0]])
    confidence = eps_score.logit_scaled_confidence(logits, np.array([0, 1]))
    np.testing.assert_allclose(confidence, [math.log(1.5), math.log(0.25)], rtol=1e-12)
    stacked = eps_score.logit_scaled_confidence(np.stack([logits, logits]), np.array([0, 1]))
    np.testing.assert_array_equal(stacked, np.stack([confidence, confidence]))


@pytest.mark.parametrize("unlearned, retrained, problem", [
    (np.zeros((4, 3)), np.zeros((5, 3)), "same shape"),
    (np.zeros((2, 3)), np.zeros((2, 3)), "at least 3 models"),
    (np.full((4, 3), np.nan), np.zeros((4, 3)), "NaN"),
])
def test_bad_input_is_a_one_line_error(unlearned, retrained, problem):
    with pytest.raises(UnlearnkitError, match=problem):
        eps_score.per_example_epsilon(unlearned, retrained)
