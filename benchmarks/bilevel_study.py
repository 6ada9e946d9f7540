"""The bilevel solvers (optim/bilevel) on a quadratic problem whose hypergradient has a closed form (docs/bilevel.md).

    g(x, y) = 1/2 y^T H y - y^T (B x + c),    f(x, y) = 1/2 ||y - a||^2 + mu/2 ||x||^2 + x^T E y

x in R^20, y in R^50, H symmetric with eigenvalues spread evenly over [1, 4] (so ||H|| = L = 4, condition 4), B, E,
a, c Gaussian (E scaled by 0.1 so Phi is strongly convex), float64, one seed. y*(x) = H^-1 (B x + c); the exact
hypergradient is the autograd gradient of the closed form Phi(x) = f(x, y*(x)) (torch.linalg.solve).

Part 1, hypergradient error: ||h - grad Phi|| / ||grad Phi|| at a random x,
- BO-REP's Neumann series with Q terms (neumann_lr = 1/(2L) (= 0.125) and 0.9/L), y at y*(x);
- unrolled differentiation through k SGD steps (lower_lr = 1/L), from y = y*(x) (warm) and from y = 0 (cold);
- the penalty method with weight rho, y moved to argmin_y F_rho by 4000 gradient steps (step 1/(1 + 2 rho L^2)),
  from y*(x);
with the Hessian-vector products each estimate took (counted by wrapping g).

Part 2, convergence: 200 upper iterations of each solver from the same (x_0, y_0 = 0); ||grad Phi(x_T)|| relative
to ||grad Phi(x_0)||, Phi(x_T) - Phi(x*), and the Hessian-vector products and gradients of g spent.

    python benchmarks/bilevel_study.py
"""

from __future__ import annotations

import time

import torch

from unlearnkit.optim.bilevel import BilevelProblem, get_solver

N_X, N_Y, MU, L = 20, 50, 1.0, 4.0


class Counter:
    def __init__(self):
        self.g_calls = 0


def build(seed: int = 0, counter: Counter | None = None):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(N_Y, N_Y, generator=gen, dtype=torch.float64))
    H = q @ torch.diag(torch.linspace(1.0, L, N_Y, dtype=torch.float64)) @ q.T
    B = torch.randn(N_Y, N_X, generator=gen, dtype=torch.float64) / N_Y ** 0.5
    E = 0.1 * torch.randn(N_X, N_Y, generator=gen, dtype=torch.float64) / N_Y ** 0.5
    c, a = (torch.randn(N_Y, generator=gen, dtype=torch.float64) for _ in range(2))
    x = torch.randn(N_X, generator=gen, dtype=torch.float64).requires_grad_()
    y = torch.zeros(N_Y, dtype=torch.float64).requires_grad_()
    counter = counter or Counter()

    def f_of(x_, y_):
        return 0.5 * (y_ - a).pow(2).sum() + 0.5 * MU * x_.pow(2).sum() + x_ @ E @ y_

    def g(_batch):
        counter.g_calls += 1
        return 0.5 * y @ H @ y - y @ (B @ x + c)

    problem = BilevelProblem(upper=[x], lower=[y], f=lambda _b: f_of(x, y), g=g)
    return problem, {"H": H, "B": B, "c": c, "f_of": f_of}, counter


def y_star(x, k):
    return torch.linalg.solve(k["H"], k["B"] @ x + k["c"])


def phi(x, k):
    return k["f_of"](x, y_star(x, k))


def exact(x, k):
    x = x.detach().clone().requires_grad_()
    return torch.autograd.grad(phi(x, k), x)[0]


def set_y(problem, value):
    with torch.no_grad():
        problem.lower[0].copy_(value)


def error(h, ref):
    return float((h.detach() - ref).norm() / ref.norm())


def hypergradient_rows():
    rows = []
    for lr_name, lr in (("1/(2L)", 0.5 / L), ("0.9/L", 0.9 / L)):
        for q in (1, 5, 10, 20, 50, 100):
            problem, k, _ = build()
            set_y(problem, y_star(problem.upper[0].detach(), k))
            ref = exact(problem.upper[0], k)
            solver = get_solver("bo_rep", neumann_terms=q, neumann_lr=lr, norm_check_iterations=0)
            h = solver.hypergradient(problem)[0]
            rows.append((f"bo_rep, neumann_lr = {lr_name}", f"Q = {q}", error(h, ref), q))  # Q - 1 yy, 1 xy
    for start in ("warm", "cold"):
        for steps in (0, 1, 5, 10, 20, 50, 100):
            problem, k, _ = build()
            if start == "warm":
                set_y(problem, y_star(problem.upper[0].detach(), k))
            ref = exact(problem.upper[0], k)
            h = get_solver("unrolled", unroll_steps=steps, lower_lr=1 / L).hypergradient(problem)[0]
            rows.append((f"unrolled, y_0 = {'y*(x)' if start == 'warm' else '0'}", f"k = {steps}", error(h, ref),
                         2 * steps))
    for rho in (1.0, 10.0, 100.0, 1000.0):
        problem, k, _counter = build()
        set_y(problem, y_star(problem.upper[0].detach(), k))
        ref = exact(problem.upper[0], k)
        solver = get_solver("penalty", rho=rho, rho_increment=0.0, warm_steps=0, penalty_steps=4000,
                            penalty_lr=1 / (1 + 2 * rho * L ** 2))
        h = solver.hypergradient(problem)[0]
        rows.append(("penalty, y = argmin_y F_rho", f"rho = {rho:g}", error(h, ref), 4001))
    return rows


def convergence_rows(iterations: int = 200):
    # (label, solver, parameters, Hessian-vector products per iteration: Neumann Q - 1 + one mixed product; unrolled
    # two per unrolled step; penalty one backward through the graph of grad_y g)
    configs = [
        ("bo_rep (eta 0.05, beta 0.9, I 5, N 5, Q 20)", "bo_rep",
         {"upper_lr": 0.05, "period": 5, "lower_steps": 5, "init_steps": 50, "lower_lr": 1 / L,
          "neumann_terms": 20, "neumann_lr": 0.5 / L}, 20),
        ("unrolled k = 0 (first order, y fixed)", "unrolled", {"unroll_steps": 0, "lower_lr": 1 / L, "lr": 0.5}, 0),
        ("unrolled k = 0 + 5 SGD steps on g", "unrolled+lower", {"unroll_steps": 0, "lower_lr": 1 / L, "lr": 0.5}, 0),
        ("unrolled k = 5", "unrolled", {"unroll_steps": 5, "lower_lr": 1 / L, "lr": 0.5}, 10),
        ("unrolled k = 20", "unrolled", {"unroll_steps": 20, "lower_lr": 1 / L, "lr": 0.5}, 40),
        ("penalty (rho 1 + 0.01 k, T 5, lr 0.02)", "penalty",
         {"rho": 1.0, "rho_increment": 0.01, "warm_steps": 5, "warm_lr": 1 / L, "lr": 0.02}, 1),
        ("penalty (rho 1 + 0.01 k, T 0, lr 0.02)", "penalty",
         {"rho": 1.0, "rho_increment": 0.01, "warm_steps": 0, "lr": 0.02}, 1),
    ]
    rows = []
    for label, name, params, hvps in configs:
        problem, k, counter = build()
        x0 = problem.upper[0].detach().clone()
        g0 = float(exact(x0, k).norm())
        solver = get_solver(name.split("+")[0], **params)
        start = time.perf_counter()
        for _ in range(iterations):
            if name == "unrolled+lower":  # the first-order step with the lower level tracked by plain SGD
                for _ in range(5):
                    y = problem.lower[0]
                    grad = torch.autograd.grad(problem.g(None), y)[0]
                    with torch.no_grad():
                        y.sub_(grad, alpha=1 / L)
            solver.step(problem)
        seconds = time.perf_counter() - start
        x = problem.upper[0].detach()
        ref_hessian = torch.autograd.functional.hessian(lambda z, k=k: phi(z, k), x)
        x_star = x - torch.linalg.solve(ref_hessian, exact(x, k))
        rows.append((label, float(exact(x, k).norm()) / g0, float(phi(x, k) - phi(x_star, k)), counter.g_calls,
                     hvps * iterations, seconds))
    return rows


def main():
    torch.set_num_threads(1)
    print("| solver | setting | relative error of the hypergradient | H·v products (penalty: F evaluations) |")
    print("| --- | --- | --- | --- |")
    for solver, setting, err, cost in hypergradient_rows():
        print(f"| {solver} | {setting} | {err:.2e} | {cost} |")
    print()
    print("| solver (200 iterations) | ‖∇Φ(x_T)‖ / ‖∇Φ(x_0)‖ | Φ(x_T) − Φ(x*) | evaluations of g | H·v products "
          "| seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, ratio, gap, calls, hvps, seconds in convergence_rows():
        print(f"| {label} | {ratio:.2e} | {gap:.2e} | {calls} | {hvps} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
