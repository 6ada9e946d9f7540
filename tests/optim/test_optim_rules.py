"""Each optimizer's step against its update rule worked out by hand (and torch's own for sgd and adamw), and the
state_dict round trip that checkpoint resume relies on."""

import io

import pytest
import torch

from unlearnkit.optim.registry import available, build_optimizer

THETA = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
GRADS = [torch.tensor([0.3, -0.1, 0.0, 2.0, -0.7], dtype=torch.float64),
         torch.tensor([-0.4, -0.2, 0.5, 1.0, 0.1], dtype=torch.float64),
         torch.tensor([0.2, 0.6, -0.3, -1.5, 0.05], dtype=torch.float64)]
LR, WD = 0.1, 0.05


def run(name: str, grads, params=None, lr=LR, wd=WD, optimizer=None):
    """Steps of optimizer ``name`` from THETA, with the given gradients; returns (θ, optimizer)."""
    theta = torch.nn.Parameter(THETA.clone())
    optimizer = optimizer or build_optimizer([theta], name, params or {}, lr, wd)
    for g in grads:
        theta.grad = g.clone()
        optimizer.step()
    return theta.detach(), optimizer


def torch_run(make, grads):
    theta = torch.nn.Parameter(THETA.clone())
    optimizer = make([theta])
    for g in grads:
        theta.grad = g.clone()
        optimizer.step()
    return theta.detach()


def test_every_optimizer_is_registered_with_rule_and_citation():
    found = available()
    first_order = {name for name, cls in found.items() if not getattr(cls, "uses_closure", False)}
    assert first_order == {"adamw", "sgd", "signsgd", "sign_adam", "lion"}
    for cls in found.values():
        assert issubclass(cls, torch.optim.Optimizer) and cls.summary and cls.citation and cls.__doc__


def test_sgd_by_hand_and_equal_to_torch():
    g = GRADS[0]
    theta, _ = run("sgd", [g])
    torch.testing.assert_close(theta, THETA - LR * (g + WD * THETA), rtol=0, atol=1e-15)
    # momentum 0.9, two steps: b1 = d1, b2 = 0.9 b1 + d2 (d = g + wd θ)
    theta, _ = run("sgd", GRADS[:2], {"momentum": 0.9})
    d1 = GRADS[0] + WD * THETA
    t1 = THETA - LR * d1
    b2 = 0.9 * d1 + GRADS[1] + WD * t1
    torch.testing.assert_close(theta, t1 - LR * b2, rtol=0, atol=1e-14)
    for params in ({"momentum": 0.9}, {"momentum": 0.5, "nesterov": True}):
        ours, _ = run("sgd", GRADS, params)
        theirs = torch_run(lambda p: torch.optim.SGD(p, lr=LR, weight_decay=WD, **params), GRADS)
        assert torch.equal(ours, theirs)


def test_adamw_by_hand_and_equal_to_torch():
    g = GRADS[0]
    theta, _ = run("adamw", [g])
    m, v = 0.1 * g, 0.001 * g * g
    expected = THETA * (1 - LR * WD) - LR * (m / 0.1) / ((v / 0.001).sqrt() + 1e-8)
    torch.testing.assert_close(theta, expected, rtol=1e-12, atol=1e-12)
    ours, _ = run("adamw", GRADS)
    assert torch.equal(ours, torch_run(lambda p: torch.optim.AdamW(p, lr=LR, weight_decay=WD), GRADS))
    ours, _ = run("adamw", GRADS, {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6})
    theirs = torch_run(lambda p: torch.optim.AdamW(p, lr=LR, weight_decay=WD, betas=(0.8, 0.99), eps=1e-6), GRADS)
    assert torch.equal(ours, theirs)


def test_signsgd_by_hand_decoupled_weight_decay():
    g = GRADS[0]
    theta, _ = run("signsgd", [g])
    torch.testing.assert_close(theta, THETA - LR * (torch.sign(g) + WD * THETA), rtol=0, atol=1e-15)
    assert theta[2] == THETA[2] * (1 - LR * WD)  # sign(0) = 0: only the decay moves it


def test_signum_by_hand_over_two_steps():
    theta, _ = run("signsgd", GRADS[:2], {"momentum": 0.9})
    m1 = 0.1 * GRADS[0]
    t1 = THETA - LR * (torch.sign(m1) + WD * THETA)
    m2 = 0.9 * m1 + 0.1 * GRADS[1]
    torch.testing.assert_close(theta, t1 - LR * (torch.sign(m2) + WD * t1), rtol=0, atol=1e-15)


def test_sign_adam_by_hand_both_scales():
    b1, b2, eps = 0.9, 0.999, 1e-8
    m1, v1 = (1 - b1) * GRADS[0], (1 - b2) * GRADS[0] ** 2
    m2, v2 = b1 * m1 + (1 - b1) * GRADS[1], b2 * v1 + (1 - b2) * GRADS[1] ** 2
    u1 = (m1 / (1 - b1)) / ((v1 / (1 - b2)).sqrt() + eps)
    u2 = (m2 / (1 - b1 ** 2)) / ((v2 / (1 - b2 ** 2)).sqrt() + eps)
    for scale, s in (("none", lambda u: 1.0), ("mean", lambda u: u.abs().mean())):
        t1 = THETA - LR * (s(u1) * torch.sign(u1) + WD * THETA)
        t2 = t1 - LR * (s(u2) * torch.sign(u2) + WD * t1)
        theta, _ = run("sign_adam", GRADS[:2], {"scale": scale})
        torch.testing.assert_close(theta, t2, rtol=0, atol=1e-14)


def test_sign_adam_without_scale_equals_signum_as_its_docstring_says():
    ours, _ = run("sign_adam", GRADS, {"beta1": 0.8})
    signum, _ = run("signsgd", GRADS, {"momentum": 0.8})
    assert torch.equal(ours, signum)


def test_lion_one_step_by_hand():
    g = GRADS[0]
    theta, optimizer = run("lion", [g])
    # m = 0: c = (1 − β1)·g, so the step is the sign of g
    torch.testing.assert_close(theta, THETA - LR * (torch.sign(g) + WD * THETA), rtol=0, atol=1e-15)
    torch.testing.assert_close(optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"], 0.01 * g)


def test_lion_momentum_over_two_steps_by_hand():
    b1, b2 = 0.9, 0.99
    theta, optimizer = run("lion", GRADS[:2])
    m1 = (1 - b2) * GRADS[0]
    t1 = THETA - LR * (torch.sign((1 - b1) * GRADS[0]) + WD * THETA)
    c2 = b1 * m1 + (1 - b1) * GRADS[1]
    t2 = t1 - LR * (torch.sign(c2) + WD * t1)
    m2 = b2 * m1 + (1 - b2) * GRADS[1]
    torch.testing.assert_close(theta, t2, rtol=0, atol=1e-15)
    torch.testing.assert_close(optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"], m2,
                               rtol=0, atol=1e-17)
    # where the momentum outweighs the gradient, Lion steps against the gradient's sign:
    # g = 10 then −0.05: m1 = 0.1, c2 = 0.9·0.1 + 0.1·(−0.05) = 0.085 > 0, so θ goes down by lr
    x = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    lion = build_optimizer([x], "lion", {}, LR, 0.0)
    for g in (10.0, -0.05):
        x.grad = torch.tensor([g], dtype=torch.float64)
        lion.step()
    assert x.item() == pytest.approx(-2 * LR)
    assert lion.state[x]["exp_avg"].item() == pytest.approx(0.99 * 0.1 + 0.01 * -0.05)


def test_lion_on_a_quadratic_moves_every_coordinate_by_lr():
    theta = torch.nn.Parameter(torch.tensor([2.0, -3.0, 0.7]))
    optimizer = build_optimizer([theta], "lion", {}, 0.1, 0.0)
    for _ in range(5):
        optimizer.zero_grad()
        (0.5 * (theta ** 2).sum()).backward()
        optimizer.step()
    torch.testing.assert_close(theta.detach(), torch.tensor([1.5, -2.5, 0.2]))


@pytest.mark.parametrize("name,params", [("adamw", {}), ("sgd", {"momentum": 0.9, "nesterov": True}),
                                         ("signsgd", {"momentum": 0.9}), ("sign_adam", {"scale": "mean"}),
                                         ("lion", {})])
def test_state_dict_round_trip_then_a_step_equals_an_uninterrupted_run(name, params):
    straight, _ = run(name, GRADS, params)
    theta, first = run(name, GRADS[:2], params)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)  # as the loop's checkpoint does, and read back the same way
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed = torch.nn.Parameter(theta.clone())
    second = build_optimizer([resumed], name, params, LR, WD)
    second.load_state_dict(state)
    resumed.grad = GRADS[2].clone()
    second.step()
    assert torch.equal(resumed.detach(), straight)


def test_the_scheduled_learning_rate_is_used():
    theta = torch.nn.Parameter(THETA.clone())
    optimizer = build_optimizer([theta], "lion", {}, LR, 0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    theta.grad = GRADS[0].clone()
    optimizer.step()
    scheduler.step()
    torch.testing.assert_close(theta.detach(), THETA - 0.5 * LR * torch.sign(GRADS[0]))
