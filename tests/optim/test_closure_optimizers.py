"""The optimizers that evaluate the loss through a closure (zeroth-order, ES, SAM, smoothing, Rolling Ball): one step
on a small quadratic against its update rule worked out by hand, and their statistical properties.

The rules checked are those of the modules' docstrings and their sources: the randomized gradient estimate with
central differences (Liu et al. 2020, arXiv:2006.06224), R-AdaZO (arXiv:2502.01014), the Downgrade to Upgrade
hybrid (arXiv:2510.00761), EGGROLL (arXiv:2511.16652; ESHyperscale/HyperscaleES noiser/eggroll.py), SAM on the forget
loss and randomized smoothing (arXiv:2502.05374; OPTML-Group/Unlearn-Smooth), the Rolling Ball Optimizer (methods.md
§20). The random directions are regenerated here by the documented protocol (one generator seeded by
``derived_seed(seed, kind, index)``, a standard normal draw per parameter in order); everything else is recomputed
by hand from the quadratic's closed-form value and gradient.
"""

import io
import math

import pytest
import torch

from unlearnkit.optim.closure import LossClosure
from unlearnkit.optim.registry import available, build_optimizer
from unlearnkit.optim.zo_hybrid import is_zeroth_order_step
from unlearnkit.training.sharding import derived_seed

D = torch.float64
H = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]], dtype=D)
B = torch.tensor([0.2, -0.1, 0.4], dtype=D)
THETA0 = torch.tensor([1.0, -2.0, 0.5], dtype=D)
W0 = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]], dtype=D)  # a 3×2 "weight matrix"
LR, WD = 0.05, 0.1
CLOSURE_OPTIMIZERS = {"zo", "adazo", "zo_hybrid", "es", "sam", "smoothing", "rolling_ball"}


def forget_value(theta, w):
    """ℓ_f = ½θᵀHθ + bᵀθ + ½‖W‖² + θ₀·W₀₀ (a quadratic coupling the two parameters)."""
    return 0.5 * theta @ H @ theta + B @ theta + 0.5 * (w ** 2).sum() + theta[0] * w[0, 0]


def forget_gradient(theta, w):
    gw = w.clone()
    gw[0, 0] += theta[0]
    gt = H @ theta + B
    gt[0] += w[0, 0]
    return gt, gw


def retain_value(theta, w):
    """ℓ_r = 0.3·‖θ − 1‖²."""
    return 0.3 * ((theta - 1) ** 2).sum()


def retain_gradient(theta, w):
    return 0.6 * (theta - 1), torch.zeros_like(w)


def value(theta, w):
    return forget_value(theta, w) + retain_value(theta, w)


def gradient(theta, w):
    (a, b), (c, d) = forget_gradient(theta, w), retain_gradient(theta, w)
    return a + c, b + d


def setup(name, params=None, lr=LR, wd=WD):
    theta, w = torch.nn.Parameter(THETA0.clone()), torch.nn.Parameter(W0.clone())
    optimizer = build_optimizer([theta, w], name, params or {}, lr, wd)
    return theta, w, optimizer


def closure_for(theta, w, seed=7, step=0, total_steps=1):
    return LossClosure(lambda: {"forget": forget_value(theta, w), "retain": retain_value(theta, w)}, [theta, w],
                       seed=seed, step=step, total_steps=total_steps)


def normal(seed, *key, shapes=((3,), (3, 2))):
    generator = torch.Generator().manual_seed(derived_seed(seed, *key))
    return [torch.randn(s, generator=generator, dtype=D) for s in shapes]


def test_the_closure_optimizers_are_registered_with_rule_and_citation():
    found = available()
    assert CLOSURE_OPTIMIZERS <= set(found)
    for name in CLOSURE_OPTIMIZERS:
        cls = found[name]
        assert issubclass(cls, torch.optim.Optimizer) and cls.uses_closure and cls.summary and cls.citation
    assert not found["zo"].first_order and not found["es"].first_order and found["sam"].first_order


def zo_by_hand(seed, mu, q, distribution):
    """The estimate ĝ = (1/q)·Σ s·[f(θ+μu) − f(θ−μu)]/(2μ)·u by hand, at THETA0, W0."""
    total = [torch.zeros(3, dtype=D), torch.zeros(3, 2, dtype=D)]
    for i in range(q):
        u = normal(seed, "zo", i)
        s = 1.0
        if distribution == "sphere":
            norm = math.sqrt(sum(float((z ** 2).sum()) for z in u))
            u, s = [z / norm for z in u], 9  # d = 3 + 6
        c = s * (value(THETA0 + mu * u[0], W0 + mu * u[1]) - value(THETA0 - mu * u[0], W0 - mu * u[1])) / (2 * mu)
        total = [t + c * z / q for t, z in zip(total, u)]
    return total


@pytest.mark.parametrize("distribution", ["gaussian", "sphere"])
def test_zo_one_step_by_hand(distribution):
    theta, w, optimizer = setup("zo", {"mu": 0.01, "directions": 3, "distribution": distribution})
    closure = closure_for(theta, w)
    optimizer.step(closure)
    g = zo_by_hand(7, 0.01, 3, distribution)
    torch.testing.assert_close(theta.detach(), THETA0 * (1 - LR * WD) - LR * g[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(w.detach(), W0 * (1 - LR * WD) - LR * g[1], rtol=0, atol=1e-12)
    assert closure.calls == 6 and theta.grad is None and w.grad is None and not optimizer.state


def test_zo_on_a_quadratic_central_differences_are_exact_directional_derivatives():
    # for a quadratic [f(θ+μu) − f(θ−μu)]/(2μ) = uᵀ∇f(θ) whatever μ: the gaussian estimate is (uᵀ∇f)·u
    theta, w, optimizer = setup("zo", {"mu": 0.7, "distribution": "gaussian"}, wd=0.0)
    optimizer.step(closure_for(theta, w))
    u = normal(7, "zo", 0)
    gt, gw = gradient(THETA0, W0)
    c = float((u[0] * gt).sum() + (u[1] * gw).sum())
    torch.testing.assert_close(theta.detach(), THETA0 - LR * c * u[0], rtol=0, atol=1e-12)


def test_adazo_two_steps_by_hand():
    params = {"mu": 0.01, "directions": 2, "distribution": "gaussian", "beta1": 0.8, "beta2": 0.9, "zeta": 1e-6}
    theta, w, optimizer = setup("adazo", params)
    t, x = THETA0.clone(), W0.clone()
    m = [torch.zeros(3, dtype=D), torch.zeros(3, 2, dtype=D)]
    v = [torch.zeros(3, dtype=D), torch.zeros(3, 2, dtype=D)]
    for seed in (7, 8):
        optimizer.step(closure_for(theta, w, seed=seed))
        # the estimate at the current (t, x): central differences along the regenerated directions
        g = [torch.zeros(3, dtype=D), torch.zeros(3, 2, dtype=D)]
        for i in range(2):
            u = normal(seed, "zo", i)
            c = (value(t + 0.01 * u[0], x + 0.01 * u[1]) - value(t - 0.01 * u[0], x - 0.01 * u[1])) / 0.02
            g = [a + c * z / 2 for a, z in zip(g, u)]
        m = [0.8 * a + 0.2 * b for a, b in zip(m, g)]
        v = [0.9 * a + 0.1 * b ** 2 for a, b in zip(v, m)]
        t = t * (1 - LR * WD) - LR * m[0] / (v[0] + 1e-6).sqrt()
        x = x * (1 - LR * WD) - LR * m[1] / (v[1] + 1e-6).sqrt()
    torch.testing.assert_close(theta.detach(), t, rtol=0, atol=1e-10)
    torch.testing.assert_close(w.detach(), x, rtol=0, atol=1e-10)


def test_hybrid_phases_end_on_zeroth_order_and_alternate():
    # 3 FO and 2 ZO steps per cycle, laid out from the end: the last 2 steps ZO, the 3 before FO, and so on
    phases = ["zo" if is_zeroth_order_step(s, 10, 3, 2) else "fo" for s in range(10)]
    assert phases == ["fo", "fo", "fo", "zo", "zo", "fo", "fo", "fo", "zo", "zo"]
    phases = ["zo" if is_zeroth_order_step(s, 7, 2, 2) else "fo" for s in range(7)]
    assert phases == ["fo", "zo", "zo", "fo", "fo", "zo", "zo"]  # 7 steps: the first phase is cut short


def test_hybrid_first_order_steps_are_torch_adamw_and_zeroth_order_steps_adazo():
    params = {"fo_steps": 2, "zo_steps": 1, "mu": 0.01, "distribution": "gaussian"}
    theta, w, optimizer = setup("zo_hybrid", params)
    ref_theta, ref_w = torch.nn.Parameter(THETA0.clone()), torch.nn.Parameter(W0.clone())
    adamw = torch.optim.AdamW([ref_theta, ref_w], lr=LR, weight_decay=WD)
    for step in range(2):  # steps 0, 1 of 3: FO
        optimizer.step(closure_for(theta, w, seed=step, step=step, total_steps=3))
        adamw.zero_grad()
        value(ref_theta, ref_w).backward()
        adamw.step()
        torch.testing.assert_close(theta.detach(), ref_theta.detach(), rtol=0, atol=1e-14)
    before_t, before_w = theta.detach().clone(), w.detach().clone()
    closure = closure_for(theta, w, seed=2, step=2, total_steps=3)
    optimizer.step(closure)  # step 2: ZO, the first AdaZO step (m, v from zero)
    assert closure.calls == 2
    u = normal(2, "zo", 0)
    c = (value(before_t + 0.01 * u[0], before_w + 0.01 * u[1])
         - value(before_t - 0.01 * u[0], before_w - 0.01 * u[1])) / 0.02
    m = 0.1 * c * u[0]
    v = 0.001 * m ** 2
    torch.testing.assert_close(theta.detach(), before_t * (1 - LR * WD) - LR * m / (v + 1e-8).sqrt(),
                               rtol=0, atol=1e-10)


def test_es_one_step_by_hand_low_rank_antithetic_z_scored():
    sigma, rank, population = 0.05, 2, 4
    theta, w, optimizer = setup("es", {"sigma": sigma, "rank": rank, "population": population})
    closure = closure_for(theta, w)
    optimizer.step(closure)
    eps = []  # per pair: (vector noise, matrix noise A·Bᵀ/√r)
    for k in range(population // 2):
        z, a, b = normal(7, "es", k, shapes=((3,), (3, rank), (2, rank)))
        eps.append((z, a @ b.T / math.sqrt(rank)))
    losses = []
    for z, e in eps:
        losses += [value(THETA0 + sigma * z, W0 + sigma * e), value(THETA0 - sigma * z, W0 - sigma * e)]
    s = torch.tensor([-float(x) for x in losses], dtype=D)
    f = (s - s.mean()) / torch.sqrt(s.var(unbiased=False) + 1e-5)
    t, x = THETA0 * (1 - LR * WD), W0 * (1 - LR * WD)
    for n in range(population):  # θ ← θ + lr·√N·(1/N)·Σ f_n·E_n, E_n = ±σ·ε_{⌊n/2⌋}
        z, e = eps[n // 2]
        sign = 1 if n % 2 == 0 else -1
        t = t + LR * math.sqrt(population) / population * f[n] * sign * sigma * z
        x = x + LR * math.sqrt(population) / population * f[n] * sign * sigma * e
    torch.testing.assert_close(theta.detach(), t, rtol=0, atol=1e-12)
    torch.testing.assert_close(w.detach(), x, rtol=0, atol=1e-12)
    assert closure.calls == population and theta.grad is None and not optimizer.state


class Recording(LossClosure):
    """Records the weights and whether autograd was on at each evaluation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def __call__(self, grad=True, part="all"):
        self.seen.append((part, torch.is_grad_enabled(), [p.detach().clone() for p in self.parameters]))
        return super().__call__(grad, part)


def recording(theta, w, seed=7):
    return Recording(lambda: {"forget": forget_value(theta, w), "retain": retain_value(theta, w)}, [theta, w],
                     seed=seed)


def test_sam_perturbs_the_forget_loss_by_rho_and_steps_with_its_gradient_there_plus_the_retain_gradient():
    rho = 0.2
    theta, w, optimizer = setup("sam", {"rho": rho, "base": "sgd"})
    closure = recording(theta, w)
    optimizer.step(closure)
    assert [(part, grad) for part, grad, _ in closure.seen] == [("forget", True), ("forget", True), ("retain", True)]
    shift = [b - a for a, b in zip(closure.seen[0][2], closure.seen[1][2])]
    assert math.sqrt(sum(float((s ** 2).sum()) for s in shift)) == pytest.approx(rho, rel=1e-12)
    for before, at_retain in zip(closure.seen[0][2], closure.seen[2][2]):  # retain at θ (θ + ε − ε: one rounding)
        torch.testing.assert_close(at_retain, before, rtol=0, atol=1e-15)
    g1 = forget_gradient(THETA0, W0)
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in g1))
    eps = [rho * g / norm for g in g1]
    gf = forget_gradient(THETA0 + eps[0], W0 + eps[1])
    gr = retain_gradient(THETA0, W0)
    # base sgd: θ ← θ − lr·(g + wd·θ)
    torch.testing.assert_close(theta.detach(), THETA0 - LR * (gf[0] + gr[0] + WD * THETA0), rtol=0, atol=1e-12)
    torch.testing.assert_close(w.detach(), W0 - LR * (gf[1] + gr[1] + WD * W0), rtol=0, atol=1e-12)


def test_sam_perturb_all_is_foret_sam_with_adamw():
    theta, w, optimizer = setup("sam", {"rho": 0.1, "perturb": "all"})
    closure = recording(theta, w)
    optimizer.step(closure)
    assert [part for part, _, _ in closure.seen] == ["all", "all"]
    g1 = gradient(THETA0, W0)
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in g1))
    g = gradient(THETA0 + 0.1 * g1[0] / norm, W0 + 0.1 * g1[1] / norm)
    ref = [torch.nn.Parameter(THETA0.clone()), torch.nn.Parameter(W0.clone())]
    adamw = torch.optim.AdamW(ref, lr=LR, weight_decay=WD)
    ref[0].grad, ref[1].grad = g[0], g[1]
    adamw.step()
    torch.testing.assert_close(theta.detach(), ref[0].detach(), rtol=0, atol=1e-14)


def test_smoothing_one_step_by_hand():
    sigma, n = 0.3, 2
    theta, w, optimizer = setup("smoothing", {"sigma": sigma, "samples": n, "base": "sgd"})
    closure = recording(theta, w)
    optimizer.step(closure)
    assert [part for part, _, _ in closure.seen] == ["forget", "forget", "retain"]
    g = [torch.zeros(3, dtype=D), torch.zeros(3, 2, dtype=D)]
    for i in range(n):
        z = normal(7, "smoothing", i)
        gi = forget_gradient(THETA0 + sigma * z[0], W0 + sigma * z[1])
        g = [a + b / n for a, b in zip(g, gi)]
    gr = retain_gradient(THETA0, W0)
    torch.testing.assert_close(theta.detach(), THETA0 - LR * (g[0] + gr[0] + WD * THETA0), rtol=0, atol=1e-12)
    torch.testing.assert_close(w.detach(), W0 - LR * (g[1] + gr[1] + WD * W0), rtol=0, atol=1e-12)


def test_rolling_ball_one_step_by_hand():
    rho, steps, gamma, lr = 0.5, 3, 0.1, 0.2
    theta, w, optimizer = setup("rolling_ball", {"rho": rho, "projection_steps": steps, "gamma": gamma}, lr=lr,
                                wd=0.0)
    loss = optimizer.step(closure_for(theta, w))
    f0, g = value(THETA0, W0), gradient(THETA0, W0)
    g2 = sum(float((x ** 2).sum()) for x in g)
    s = math.sqrt(g2 + 1)
    centre = [THETA0 - rho * g[0] / s - lr * g[0], W0 - rho * g[1] / s - lr * g[1]]  # c − η·τ, θ part
    height = f0 + rho / s - lr * g2  # c − η·τ, height part
    t, x = THETA0.clone(), W0.clone()
    for _ in range(steps):
        fv, gv = value(t, x), gradient(t, x)
        t = t - gamma * ((t - centre[0]) + (fv - height) * gv[0])
        x = x - gamma * ((x - centre[1]) + (fv - height) * gv[1])
    assert loss == pytest.approx(float(f0))
    torch.testing.assert_close(theta.detach(), t, rtol=0, atol=1e-12)
    torch.testing.assert_close(w.detach(), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("distribution,mu", [("gaussian", 0.5), ("sphere", 0.8)])
def test_zo_estimate_mean_approaches_the_gradient_of_the_smoothed_loss(distribution, mu):
    # f(θ) = Σ θ_j³/3 is not quadratic, so smoothing moves its gradient: ∇f_μ = θ² + μ²·E[v_j²], with E[v_j²] = 1
    # for v ~ N(0, I) and 1/(d+2) for v uniform in the unit ball (d = 3); ∇f = θ² alone is excluded by the tolerance
    start = torch.tensor([0.5, -1.0, 0.2], dtype=D)
    draws, total = 2000, torch.zeros(3, dtype=D)
    theta = torch.nn.Parameter(start.clone())
    optimizer = build_optimizer([theta], "zo", {"mu": mu, "distribution": distribution, "directions": 1}, 1.0, 0.0)
    for seed in range(draws):
        theta.data.copy_(start)
        optimizer.step(LossClosure(lambda: {"forget": (theta ** 3).sum() / 3}, [theta], seed=seed))
        total += start - theta.detach()  # lr = 1: the step is ĝ
    smoothed = start ** 2 + mu ** 2 * (1.0 if distribution == "gaussian" else 1 / 5)
    mean = total / draws
    torch.testing.assert_close(mean, smoothed, rtol=0, atol=0.06)
    assert (mean - start ** 2).abs().max() > 0.05  # the smoothing term is visible, not just ∇f


def test_es_with_small_sigma_steps_against_the_gradient():
    theta, w, optimizer = setup("es", {"sigma": 1e-4, "population": 2000, "rank": 1}, lr=1.0, wd=0.0)
    optimizer.step(closure_for(theta, w, seed=3))
    step = torch.cat([(theta.detach() - THETA0), (w.detach() - W0).reshape(-1)])
    g = gradient(THETA0, W0)
    minus_gradient = -torch.cat([g[0], g[1].reshape(-1)])
    cosine = float(step @ minus_gradient / (step.norm() * minus_gradient.norm()))
    assert cosine > 0.95


@pytest.mark.parametrize("name,params", [("adazo", {"distribution": "gaussian"}),
                                         ("zo_hybrid", {"fo_steps": 1, "zo_steps": 1}),
                                         ("sam", {}), ("smoothing", {"samples": 2}), ("es", {"population": 4})])
def test_state_dict_round_trip_then_a_step_equals_an_uninterrupted_run(name, params):
    theta, w, straight = setup(name, params)
    for step in range(3):
        straight.step(closure_for(theta, w, seed=step, step=step, total_steps=3))
    expected = [theta.detach().clone(), w.detach().clone()]
    theta, w, first = setup(name, params)
    for step in range(2):
        first.step(closure_for(theta, w, seed=step, step=step, total_steps=3))
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    resumed_theta, resumed_w = torch.nn.Parameter(theta.detach().clone()), torch.nn.Parameter(w.detach().clone())
    second = build_optimizer([resumed_theta, resumed_w], name, params, LR, WD)
    second.load_state_dict(torch.load(saved, weights_only=True))
    second.step(closure_for(resumed_theta, resumed_w, seed=2, step=2, total_steps=3))
    assert torch.equal(resumed_theta.detach(), expected[0]) and torch.equal(resumed_w.detach(), expected[1])


@pytest.mark.parametrize("name", ["zo", "adazo", "es"])
def test_zeroth_order_and_es_evaluate_without_autograd(name):
    theta, w, optimizer = setup(name)
    closure = recording(theta, w)
    optimizer.step(closure)
    assert closure.seen and not any(grad for _, grad, _ in closure.seen)
    assert theta.grad is None and w.grad is None
