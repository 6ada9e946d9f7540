"""The leaderboard's statistics: the interval over seeds, the Pareto front, and the rule that picks the best."""

import random

import pytest
from scipy import stats

from unlearnkit.errors import UnlearnkitError
from unlearnkit.sweep.leaderboard import Row, choose_best, directions, pareto_front, seed_interval


def test_seed_interval_is_the_student_t_interval():
    values = [0.2, 0.5, 0.35, 0.4]
    mean, low, high = seed_interval(values)
    want = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values))
    assert mean == pytest.approx(0.3625) and (low, high) == pytest.approx(want)
    assert seed_interval([0.3]) == (0.3, None, None)
    assert seed_interval([0.3, None]) == (None, None, None)


def skyline(points):
    """The 2-D maximal points by a sweep, independent of pareto_front's pairwise test: sort by (x, y) descending; a
    point is maximal when its y beats every y seen at a strictly larger x, and it is the top y of its own x."""
    order = sorted(range(len(points)), key=lambda i: points[i], reverse=True)
    keep, best_y_at_larger_x, i = [], float("-inf"), 0
    while i < len(order):
        x = points[order[i]][0]
        same_x = [j for j in order[i:] if points[j][0] == x]
        top = points[same_x[0]][1]
        if top > best_y_at_larger_x:
            keep += [j for j in same_x if points[j][1] == top]  # equal points do not dominate each other
        best_y_at_larger_x = max(best_y_at_larger_x, top)
        i += len(same_x)
    return sorted(keep)


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_equals_a_brute_force_skyline(seed):
    rng = random.Random(seed)
    points = [(rng.choice([0.1, 0.2, 0.3, 0.4, 0.5]), rng.choice([0.6, 0.7, 0.8])) for _ in range(12)]
    assert pareto_front(points, ["higher", "higher"]) == skyline(points)
    flipped = [(x, -y) for x, y in points]  # lower-is-better on the second axis: the same front
    assert pareto_front(flipped, ["higher", "lower"]) == skyline(points)


def test_points_missing_a_value_are_not_on_the_front():
    assert pareto_front([(0.1, None), (0.2, 0.5), (0.1, 0.4)], ["higher", "higher"]) == [1]


def rows(points, target_utility):
    out = []
    for i, (fq, mu) in enumerate(points):
        row = Row(str(i), {"x": i}, seeds=[0])
        row.values = {"forget_quality": [fq], "model_utility": [mu]}
        row.target = {"forget_quality": [0.01], "model_utility": [target_utility]}
        out.append(row)
    return out


def test_best_is_the_best_forget_quality_that_keeps_utility_within_the_floor():
    table = rows([(0.9, 0.5), (0.6, 0.85), (0.3, 0.95), (0.2, 0.9)], target_utility=1.0)
    front = pareto_front([(r.mean("forget_quality"), r.mean("model_utility")) for r in table], ["higher", "higher"])
    assert front == [0, 1, 2]
    best, rule = choose_best(table, front, ["forget_quality", "model_utility"], ["higher", "higher"], 0.8)
    assert best == 1 and "within 0.8×" in rule
    best, rule = choose_best(table, front, ["forget_quality", "model_utility"], ["higher", "higher"], 0.99)
    assert best == 2 and "no Pareto configuration" in rule


def test_objectives_need_a_direction():
    assert directions(["forget_quality", "model_utility"]) == ["higher", "higher"]
    with pytest.raises(UnlearnkitError, match="not a metric"):
        directions(["forget_qualty", "model_utility"])
