"""OFMU (research/methods.md §5): the outer loss L_r + rho_k ||grad Phi||^2 against a one-example-at-a-time
recomputation in float64, its gradient (the outer step, by double backward) against central finite differences of
that recomputation, the inner ascent step, and the increasing rho_k with its saved state."""

import pytest
import torch

import naive_reference as naive
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import get_method


def naive_grad_phi(model, beta, create_graph=True):
    """grad (L_f - beta cos(grad L_f, grad L_r)), every loss one unpadded example at a time in float64."""
    params = list(model.parameters())
    l_f = naive.mean_nll_tensor(model, naive.forget_examples())
    l_r = naive.mean_nll_tensor(model, naive.retain_examples())
    g_f = torch.autograd.grad(l_f, params, create_graph=True)
    g_r = torch.autograd.grad(l_r, params, create_graph=True)
    dot = sum((a.double() * b.double()).sum() for a, b in zip(g_f, g_r))
    norm_f = sum((a.double() ** 2).sum() for a in g_f).sqrt()
    norm_r = sum((b.double() ** 2).sum() for b in g_r).sqrt()
    phi = l_f - beta * dot / (norm_f * norm_r)
    return torch.autograd.grad(phi, params, create_graph=create_graph), l_r


def naive_outer(model, beta, rho):
    grad_phi, l_r = naive_grad_phi(model, beta)
    return l_r + rho * sum((g.double() ** 2).sum() for g in grad_phi)


def small_model():
    return naive.perturbed_copy(naive.tiny_llama(layers=2), scale=0.3).double()


def test_ofmu_outer_loss_matches_recomputation():
    model = small_model()
    method = get_method("ofmu", beta=0.5, rho=0.3, inner_steps=0)
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    assert logs["rho"] == 0.3
    assert loss.item() == pytest.approx(naive_outer(model, 0.5, 0.3).item(), rel=1e-4)


def test_ofmu_outer_gradient_matches_finite_differences():
    """d/de [L_r + rho ||grad Phi||^2](theta + e v) at e = 0, for a random direction v: the method's backward
    (grad L_r + 2 rho Hess(Phi) grad Phi) against a central difference of the float64 recomputation."""
    model = small_model()
    beta, rho = 0.5, 2.0
    loss, _ = get_method("ofmu", beta=beta, rho=rho, inner_steps=0).loss(model, naive.forget_batch(),
                                                                         naive.retain_batch())
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)
    generator = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    analytic = sum((g.double() * v).sum() for g, v in zip(grads, direction)).item()

    def at(step, penalty_weight=rho):
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.add_(v, alpha=step)
        value = naive_outer(model, beta, penalty_weight).item()
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.sub_(v, alpha=step)
        return value

    eps = 1e-4
    numeric = (at(eps) - at(-eps)) / (2 * eps)
    retain_only = (at(eps, 0.0) - at(-eps, 0.0)) / (2 * eps)
    # the penalty's share of the slope is far above the tolerance: the check covers the Hessian-vector product
    assert abs(numeric - retain_only) > 0.05 * abs(numeric)
    assert analytic == pytest.approx(numeric, rel=2e-3)


def test_ofmu_penalty_contributes_to_the_outer_gradient():
    model = small_model()
    grads = []
    for rho in (0.0, 2.0):
        loss, _ = get_method("ofmu", rho=rho, inner_steps=0).loss(model, naive.forget_batch(), naive.retain_batch())
        grads.append(torch.autograd.grad(loss, model.lm_head.weight)[0])
    assert (grads[1] - grads[0]).norm() > 1e-3 * grads[0].norm()


def test_ofmu_inner_step_ascends_phi():
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    want, _ = naive_grad_phi(model, 0.2, create_graph=False)
    get_method("ofmu", beta=0.2, inner_steps=1, inner_lr=0.05).loss(model, naive.forget_batch(), naive.retain_batch())
    for p, p0, g in zip(model.parameters(), before, want):
        assert torch.allclose(p.detach(), p0 + 0.05 * g, rtol=1e-5, atol=1e-7)


def test_ofmu_rho_increases_with_each_step_and_is_saved():
    model = small_model()
    method = get_method("ofmu", rho=0.1, rho_increment=0.5, inner_steps=0)
    rhos = [method.loss(model, naive.forget_batch(), naive.retain_batch())[1]["rho"] for _ in range(3)]
    assert rhos == pytest.approx([0.1, 0.6, 1.1])
    resumed = get_method("ofmu", rho=0.1, rho_increment=0.5, inner_steps=0)
    resumed.load_state_dict(method.state_dict())
    assert resumed.loss(model, naive.forget_batch(), naive.retain_batch())[1]["rho"] == pytest.approx(1.6)


def test_ofmu_solver_penalty_is_the_default_and_its_rho_k_and_penalty_are_the_bilevel_module_s():
    """``solver: penalty`` (the default) is the loss above; rho_k and ||grad Phi||^2 are those of
    optim/bilevel/penalty.py (rho + rho_increment * k; the squared norm), checked against the float64 recomputation."""
    model = small_model()
    method = get_method("ofmu", beta=0.5, rho=0.3, rho_increment=0.2, inner_steps=0, solver="penalty")
    assert get_method("ofmu").solver == "penalty"
    method.loss(model, naive.forget_batch(), naive.retain_batch())
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    assert logs["rho"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(naive_outer(model, 0.5, 0.5).item(), rel=1e-4)


@pytest.mark.parametrize(("solver", "says"), [
    ("bo_rep", "needs separate upper and lower variables"),
    ("unrolled", "needs separate upper and lower variables"),
    ("bo-rep", "unknown bilevel solver 'bo-rep': choose one of bo_rep, penalty, unrolled"),
])
def test_ofmu_refuses_a_solver_that_does_not_fit_in_one_line(solver, says):
    with pytest.raises(UnlearnkitError, match=says) as err:
        get_method("ofmu", solver=solver)
    assert "\n" not in str(err.value)
