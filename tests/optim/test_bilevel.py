"""The bilevel solvers (optim/bilevel; docs/bilevel.md) on a quadratic problem whose hypergradient has a closed form.

    g(x, y) = 1/2 y^T H y - y^T (B x + c)          (H symmetric positive definite, eigenvalues in [1, 2])
    f(x, y) = 1/2 ||y - a||^2 + mu/2 ||x||^2 + x^T E y

y*(x) = H^-1 (B x + c), and the reference hypergradient is the autograd gradient of the closed form
Phi(x) = f(x, H^-1 (B x + c)) (torch.linalg.solve, float64): independent of the implicit-function formula and of
the Hessian-vector products the solvers use. Checked: each solver's hypergradient against it (BO-REP's Neumann series
with enough terms, unrolling with enough steps, the penalty method as rho grows); BO-REP's lower variables move only
at t = 0 and every I iterations and its upper step has norm eta; k = 0 unrolling is the first-order step; the
penalty step against its formula; the bad inputs (a diverging Neumann series, an unknown solver or parameter).
"""

import pytest
import torch

from unlearnkit.errors import UnlearnkitError
from unlearnkit.optim.bilevel import BilevelProblem, check_solver, get_solver
from unlearnkit.optim.bilevel.neumann import neumann_inverse_hvp

N_X, N_Y, MU = 3, 4, 1.0


def quadratic(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(N_Y, N_Y, generator=gen, dtype=torch.float64))
    H = q @ torch.diag(torch.linspace(1.0, 2.0, N_Y, dtype=torch.float64)) @ q.T
    B, E = (torch.randn(N_Y, N_X, generator=gen, dtype=torch.float64) for _ in range(2))
    E = 0.2 * E.T  # small enough that Phi is strongly convex (test_bo_rep_converges_on_the_quadratic checks)
    c, a = (torch.randn(N_Y, generator=gen, dtype=torch.float64) for _ in range(2))
    x = torch.randn(N_X, generator=gen, dtype=torch.float64).requires_grad_()
    y = torch.randn(N_Y, generator=gen, dtype=torch.float64).requires_grad_()

    def f_of(x_, y_):
        return 0.5 * (y_ - a).pow(2).sum() + 0.5 * MU * x_.pow(2).sum() + x_ @ E @ y_

    def g(_batch):
        return 0.5 * y @ H @ y - y @ (B @ x + c)

    problem = BilevelProblem(upper=[x], lower=[y], f=lambda _batch: f_of(x, y), g=g)
    consts = {"H": H, "B": B, "E": E, "c": c, "a": a, "f_of": f_of}
    return problem, consts


def y_star(x, k):
    return torch.linalg.solve(k["H"], k["B"] @ x + k["c"])


def exact_hypergradient(problem, k):
    x = problem.upper[0].detach().clone().requires_grad_()
    phi = k["f_of"](x, y_star(x, k))
    return torch.autograd.grad(phi, x)[0]


def set_lower_to_optimum(problem, k):
    with torch.no_grad():
        problem.lower[0].copy_(y_star(problem.upper[0], k))


def relative_error(estimate, exact):
    return float((estimate - exact).norm() / exact.norm())


def test_bo_rep_neumann_hypergradient_matches_the_closed_form():
    problem, k = quadratic()
    set_lower_to_optimum(problem, k)
    solver = get_solver("bo_rep", neumann_terms=300, neumann_lr=0.4)
    estimate = solver.hypergradient(problem)[0]
    assert relative_error(estimate, exact_hypergradient(problem, k)) < 1e-10
    few = get_solver("bo_rep", neumann_terms=3, neumann_lr=0.4).hypergradient(problem)[0]
    assert relative_error(few, exact_hypergradient(problem, k)) > 1e-3  # the truncation is visible: the check can fail


def test_neumann_series_equals_the_damped_inverse():
    _, k = quadratic()
    H = k["H"]
    b = [torch.randn(N_Y, dtype=torch.float64, generator=torch.Generator().manual_seed(3))]
    damping = 0.3
    v = neumann_inverse_hvp(lambda u: [H @ u[0] + damping * u[0]], b, lr=0.4, terms=400)[0]
    exact = torch.linalg.solve(H + damping * torch.eye(N_Y, dtype=torch.float64), b[0])
    assert torch.allclose(v, exact, rtol=0, atol=1e-12)


def test_unrolled_hypergradient_tends_to_the_closed_form():
    problem, k = quadratic()
    exact = exact_hypergradient(problem, k)  # at x, which the hypergradient does not move
    solver = get_solver("unrolled", unroll_steps=200, lower_lr=0.4)
    estimate = solver.hypergradient(problem)[0]
    assert relative_error(estimate, exact) < 1e-10
    # it left y at y_200, which is y*(x)
    assert torch.allclose(problem.lower[0], y_star(problem.upper[0], k), atol=1e-12)


def test_unrolled_one_step_matches_differentiating_the_step_by_hand():
    """k = 1: d/dx f(x, y - alpha (H y - B x - c)) = grad_x f + alpha B^T grad_y f at y_1."""
    problem, k = quadratic()
    alpha = 0.3
    x, y0 = problem.upper[0].detach(), problem.lower[0].detach().clone()
    xx = x.clone().requires_grad_()
    y1 = y0 - alpha * (k["H"] @ y0 - k["B"] @ xx - k["c"])
    expected = torch.autograd.grad(k["f_of"](xx, y1), xx)[0]
    estimate = get_solver("unrolled", unroll_steps=1, lower_lr=alpha).hypergradient(problem)[0]
    assert torch.allclose(estimate, expected, rtol=0, atol=1e-12)


def test_unrolled_with_zero_steps_is_the_first_order_update():
    problem, k = quadratic()
    x0, y0 = problem.upper[0].detach().clone(), problem.lower[0].detach().clone()
    lr = 0.05
    get_solver("unrolled", unroll_steps=0, lr=lr).step(problem)
    first_order = x0 - lr * (MU * x0 + k["E"] @ y0)  # grad_x f = mu x + E y, y held fixed
    assert torch.allclose(problem.upper[0], first_order, rtol=0, atol=1e-14)
    assert torch.equal(problem.lower[0], y0)


def test_penalty_hypergradient_tends_to_the_closed_form_as_rho_grows():
    errors = []
    for rho in (1e1, 1e3):
        problem, k = quadratic()
        set_lower_to_optimum(problem, k)
        exact = exact_hypergradient(problem, k)
        # steps on F in y: Hessian I + 2 rho H^2, eigenvalues in [1 + 2 rho, 1 + 8 rho]
        solver = get_solver("penalty", rho=rho, rho_increment=0.0, warm_steps=0, penalty_steps=300,
                            penalty_lr=1.0 / (1 + 8 * rho))
        errors.append(relative_error(solver.hypergradient(problem)[0], exact))
    assert errors[1] < 2e-3
    assert errors[1] < errors[0] / 30  # O(1/rho)


def test_penalty_step_matches_its_formula_and_rho_increases():
    problem, k = quadratic()
    H, B, c, E, a = k["H"], k["B"], k["c"], k["E"], k["a"]
    lr, rho, inc = 0.01, 0.5, 0.25
    solver = get_solver("penalty", rho=rho, rho_increment=inc, warm_steps=0, lr=lr)
    for step in range(2):
        x, y = problem.upper[0].detach().clone(), problem.lower[0].detach().clone()
        r = H @ y - B @ x - c  # grad_y g
        rho_k = rho + inc * step
        grad_x = MU * x + E @ y - 2 * rho_k * B.T @ r
        grad_y = (y - a) + E.T @ x + 2 * rho_k * H @ r
        logs = solver.step(problem)
        assert logs["rho"] == rho_k
        assert logs["penalty"] == pytest.approx(float(r @ r), rel=1e-12)
        assert torch.allclose(problem.upper[0], x - lr * grad_x, rtol=0, atol=1e-13)
        assert torch.allclose(problem.lower[0], y - lr * grad_y, rtol=0, atol=1e-13)


def test_penalty_warm_start_is_sgd_on_g():
    problem, k = quadratic()
    y = problem.lower[0].detach().clone()
    for _ in range(3):
        y = y - 0.1 * (k["H"] @ y - k["B"] @ problem.upper[0].detach() - k["c"])
    solver = get_solver("penalty", warm_steps=3, warm_lr=0.1)
    solver.hypergradient(problem)
    assert torch.allclose(problem.lower[0], y, rtol=0, atol=1e-14)


def test_bo_rep_updates_the_lower_level_every_period_and_takes_steps_of_length_eta():
    problem, _ = quadratic()
    period, eta = 3, 0.05
    solver = get_solver("bo_rep", upper_lr=eta, period=period, lower_steps=2, init_steps=5, lower_lr=0.3,
                        neumann_terms=20, neumann_lr=0.4, momentum=0.7)
    moved = []
    for t in range(8):
        x, y = problem.upper[0].detach().clone(), problem.lower[0].detach().clone()
        logs = solver.step(problem)
        moved.append(not torch.equal(problem.lower[0], y))
        assert logs["lower_steps"] == (5 if t == 0 else 2 if t % period == 0 else 0)
        assert float((problem.upper[0].detach() - x).norm()) == pytest.approx(eta, rel=1e-12)
    assert moved == [t % period == 0 for t in range(8)]


def test_bo_rep_momentum_is_the_exponential_average_of_hypergradients():
    problem, _ = quadratic()
    beta, eta = 0.6, 0.02
    solver = get_solver("bo_rep", upper_lr=eta, momentum=beta, period=100, init_steps=0, neumann_terms=5,
                        neumann_lr=0.4)
    probe = get_solver("bo_rep", period=100, init_steps=0, neumann_terms=5, neumann_lr=0.4)
    m = torch.zeros(N_X, dtype=torch.float64)
    for _ in range(3):
        x = problem.upper[0].detach().clone()
        m = beta * m + (1 - beta) * probe.hypergradient(problem)[0].detach()
        solver.step(problem)
        assert torch.allclose(problem.upper[0], x - eta * m / m.norm(), rtol=0, atol=1e-14)


def test_bo_rep_converges_on_the_quadratic():
    """Phi is a strongly convex quadratic here, so x* = x - Hess(Phi)^-1 grad Phi(x); with a constant step eta the
    normalized iterates reach a neighbourhood of x* of the size of the step (300 steps of 0.01 from 1.5 away)."""
    problem, k = quadratic()
    M = torch.linalg.solve(k["H"], k["B"])  # dy*/dx
    cross = k["E"] @ M
    hessian = M.T @ M + MU * torch.eye(N_X, dtype=torch.float64) + cross + cross.T
    assert float(torch.linalg.eigvalsh(hessian).min()) > 0  # Phi strongly convex: the minimiser exists
    x_star = problem.upper[0].detach() - torch.linalg.solve(hessian, exact_hypergradient(problem, k))
    start = float((problem.upper[0].detach() - x_star).norm())
    solver = get_solver("bo_rep", upper_lr=0.01, period=2, lower_steps=5, init_steps=50, lower_lr=0.4,
                        neumann_terms=20, neumann_lr=0.4)
    for _ in range(300):
        solver.step(problem)
    assert start > 1
    assert float((problem.upper[0].detach() - x_star).norm()) < 0.02


def test_a_neumann_step_that_does_not_contract_is_refused_in_one_line():
    problem, k = quadratic()  # ||H|| = 2
    set_lower_to_optimum(problem, k)
    with pytest.raises(UnlearnkitError, match="neumann_lr") as err:
        get_solver("bo_rep", neumann_lr=0.6).hypergradient(problem)  # 0.6 * 2 = 1.2 >= 1
    assert "\n" not in str(err.value)
    get_solver("bo_rep", neumann_lr=0.45).hypergradient(problem)  # 0.9 < 1: accepted
    # with the check off, the growing terms of a truly diverging series (|1 - 1.2 * 2| > 1) stop it
    with pytest.raises(UnlearnkitError, match="diverges"):
        get_solver("bo_rep", neumann_lr=1.2, norm_check_iterations=0, neumann_terms=50).hypergradient(problem)


def test_bad_solver_names_and_parameters_are_one_line_errors():
    with pytest.raises(UnlearnkitError, match="unknown bilevel solver 'bo-rep': choose one of bo_rep, penalty, "
                                              "unrolled"):
        get_solver("bo-rep")
    with pytest.raises(UnlearnkitError, match="bilevel solver 'bo_rep' parameter period"):
        check_solver("bo_rep", {"period": 0})
    with pytest.raises(UnlearnkitError, match="has no parameter 'k'"):
        check_solver("unrolled", {"k": 2})


def test_a_problem_whose_levels_share_a_tensor_is_refused():
    t = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="distinct"):
        BilevelProblem(upper=[t], lower=[t], f=lambda b: t.sum(), g=lambda b: t.sum())


def test_unrolled_reverse_pass_uses_each_step_s_own_batch():
    """With a stochastic g (batch j scales the quadratic by s_j), the hypergradient equals autograd through the
    explicit unroll y_{j+1} = y_j - alpha s_j (H y_j - B x - c) with the same batches in the same order."""
    problem, k = quadratic()
    H, B, c = k["H"], k["B"], k["c"]
    scales = [0.5, 1.5, 1.0]
    draws = iter(scales)
    x_leaf, y_leaf = problem.upper[0], problem.lower[0]
    problem.g = lambda s: s * (0.5 * y_leaf @ H @ y_leaf - y_leaf @ (B @ x_leaf + c))
    problem.g_batch = lambda: next(draws)
    alpha = 0.3
    xx = x_leaf.detach().clone().requires_grad_()
    y = y_leaf.detach().clone()
    for s in scales:
        y = y - alpha * s * (H @ y - B @ xx - c)
    expected = torch.autograd.grad(k["f_of"](xx, y), xx)[0]
    estimate = get_solver("unrolled", unroll_steps=3, lower_lr=alpha).hypergradient(problem)[0]
    assert torch.allclose(estimate, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("name", "params"), [
    ("bo_rep", {"upper_lr": 0.05, "period": 2, "lower_steps": 2, "init_steps": 3, "lower_lr": 0.3,
                "neumann_terms": 5, "neumann_lr": 0.4}),
    ("penalty", {"rho": 0.5, "rho_increment": 0.5, "warm_steps": 1, "warm_lr": 0.1, "lr": 0.01}),
])
def test_a_solver_resumed_from_its_state_continues_as_an_uninterrupted_one(name, params):
    """The iteration count (BO-REP's period and refinement, the penalty's rho_k) and BO-REP's momentum are saved."""
    whole, _ = quadratic()
    solver = get_solver(name, **params)
    for _ in range(5):
        solver.step(whole)
    split, _ = quadratic()
    first = get_solver(name, **params)
    for _ in range(3):
        first.step(split)
    resumed = get_solver(name, **params)
    resumed.load_state_dict(first.state_dict())
    for _ in range(2):
        resumed.step(split)
    assert torch.equal(split.upper[0], whole.upper[0]) and torch.equal(split.lower[0], whole.lower[0])
    fresh, _ = quadratic()
    restarted = get_solver(name, **params)
    for _ in range(3):
        restarted.step(fresh)
    for _ in range(2):
        get_solver(name, **params).step(fresh)  # without the state: a different path (the check can fail)
    assert not torch.equal(fresh.upper[0], whole.upper[0])
