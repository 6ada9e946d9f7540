"""HAMU (research/methods.md §6; aoi3142/HAMU ``compute_hamu_update``): the update the training loop's backward
produces, against the trust-region problem's closed form and its defining properties (constraint active, on the
sphere, best retain descent among feasible steps), and the MGDA option against a grid search of the min-norm
combination. The gradients g_f, g_r are recomputed one example at a time (naive_reference.mean_nll_tensor)."""

import math

import pytest
import torch

import naive_reference as naive
from unlearnkit.methods import get_method


def setting(seed=0):
    model = naive.perturbed_copy(naive.tiny_llama(seed), scale=0.3)
    g_f = naive.flat_gradient(naive.mean_nll_tensor(model, naive.forget_examples()), model)
    g_r = naive.flat_gradient(naive.mean_nll_tensor(model, naive.retain_examples()), model)
    return model, g_f, g_r


def step_of(method, model):
    """delta / lr: minus the gradient of the returned loss (what SGD with learning rate lr would move, over lr)."""
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    return -naive.flat_gradient(loss, model), logs


def closed_form(g_r, g_f, radius, bound):
    """HAMU-Q's rectified branch as the paper writes it, with whole vectors."""
    kappa = g_r @ g_f
    perp = g_r - kappa / (g_f @ g_f) * g_f
    return bound / (g_f @ g_f) * g_f - math.sqrt(radius**2 - bound**2 / (g_f @ g_f)) * perp / perp.norm()


def test_hamu_q_step_solves_the_trust_region_problem():
    model, g_f, g_r = setting()
    ratio = 0.05 * float(g_f.norm() * g_r.norm())  # feasible, and not the "easy" branch unless kappa is very negative
    assert float(g_r @ g_f) > -ratio
    step, logs = step_of(get_method("hamu", constraint_ratio=ratio), model)
    assert logs["branch"] == 4.0  # rectified
    # lr = 1 units: R = ||g_r||, B = ratio
    want = closed_form(g_r, g_f, float(g_r.norm()), ratio)
    assert torch.allclose(step, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    assert float(g_f @ step) == pytest.approx(ratio, rel=1e-4)  # the forget loss rises by exactly B
    assert float(step.norm()) == pytest.approx(float(g_r.norm()), rel=1e-4)  # on the trust-region sphere
    # no feasible step on the sphere helps the retain loss more (random feasible directions in span{g_f, g_r})
    e1 = g_f / g_f.norm()
    e2 = (g_r - (g_r @ e1) * e1) / (g_r - (g_r @ e1) * e1).norm()
    radius = float(g_r.norm())
    for angle in torch.linspace(-math.pi, math.pi, 721):
        candidate = radius * (torch.cos(angle) * e1 + torch.sin(angle) * e2)
        if float(g_f @ candidate) >= ratio:
            assert float(g_r @ candidate) >= float(g_r @ step) - 1e-6 * radius * float(g_r.norm())


def test_hamu_infeasible_step_is_the_pure_forget_ascent():
    model, g_f, g_r = setting()
    ratio = 2.0 * float(g_f.norm() * g_r.norm())  # B / ||g_f|| > R: no step of norm R raises the forget loss by B
    step, logs = step_of(get_method("hamu", constraint_ratio=ratio), model)
    assert logs["branch"] == 1.0
    want = ratio / float(g_f @ g_f) * g_f
    assert torch.allclose(step, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


def test_hamu_u_swaps_the_roles():
    """HAMU-U: the largest forget increase with the retain loss falling by at least B, ||delta|| <= lr ||g_f||."""
    model, g_f, g_r = setting()
    ratio = 0.05 * float(g_f.norm() * g_r.norm())
    step, logs = step_of(get_method("hamu", variant="u", constraint_ratio=ratio), model)
    assert logs["branch"] == 4.0
    want = closed_form(-g_f, -g_r, float(g_f.norm()), ratio)
    assert torch.allclose(step, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    assert float(-g_r @ step) == pytest.approx(ratio, rel=1e-4)
    assert float(g_f @ step) > 0


def test_hamu_mgda_is_the_min_norm_combination():
    model, g_f, g_r = setting()
    step, logs = step_of(get_method("hamu", balancing="mgda"), model)
    u, v = -g_f, g_r  # descent directions' gradients of -L_f and L_r
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    norms = torch.stack([(a * u + (1 - a) * v).norm() for a in grid[::50]])  # coarse, then refine around the best
    best = float(grid[::50][norms.argmin()])
    fine = grid[(grid - best).abs() <= 0.0025]
    a_grid = float(fine[torch.stack([(a * u + (1 - a) * v).norm() for a in fine]).argmin()])
    assert logs["mgda_forget_weight"] == pytest.approx(a_grid, abs=1e-4)
    a = logs["mgda_forget_weight"]
    want = -(a * u + (1 - a) * v)
    assert torch.allclose(step, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    assert 0 < a < 1  # an interior solution: the combined gradient is orthogonal to u - v
    assert abs(float(want @ (u - v))) < 1e-4 * float(want.norm() * (u - v).norm())


def test_hamu_needs_the_retain_batch():
    with pytest.raises(ValueError, match="retain batch"):
        get_method("hamu").loss(naive.tiny_llama(), naive.forget_batch(), None)
