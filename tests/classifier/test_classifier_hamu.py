"""HAMU on classifiers (``unlearnkit.classifier.hamu``): Chen, Niu, Sim, Liu, Chen, Low, ICML 2026, code aoi3142/HAMU
``hamu/methods/core.py: compute_hamu_update`` and ``hamu/methods/hamu.py`` (radius lr·‖g_r‖, constraint shared
in proportion to ‖g_r‖‖g_f‖, gradients clipped to norm 1).

The references: δ worked out by hand on 2-vectors for each branch of the closed form; the closed form against a
brute-force search of the trust-region problem min g_r·δ s.t. g_f·δ ≥ B, ‖δ‖ ≤ R on a polar grid; and a plain loop
on one ``nn.Module`` that follows ``compute_hamu_update``'s scalar if/else per parameter, clipping with
``torch.nn.utils.clip_grad_norm_``. They share with the library only the per-member data order.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.classifier.data import retain_indices
from unlearnkit.classifier.ensemble import batch_order
from unlearnkit.classifier.hamu import HAMUParams, hamu_step, hamu_update
from unlearnkit.classifier.unlearn import unlearn


@pytest.fixture(scope="module")
def setup(digits120):
    task, original, forget, cache = digits120
    return task, original, forget


# (name, g_r, g_f, lr, B, δ by hand)
CASES = [
    # κ = −3 ≤ −B‖g_r‖/R = −0.5 (R = 0.2·5 = 1): the plain retain step −R g_r/‖g_r‖
    ("direct", (3.0, 4.0), (-1.0, 0.0), 0.2, 0.1, (-0.6, -0.8)),
    # R = 1, ‖g_f‖² = 4, κ = 0: (B/‖g_f‖²) g_f − √(R² − B²/‖g_f‖²) g_r⊥/‖g_r⊥‖ = (0, 0.2) − √0.96 (1, 0)
    ("rectified", (1.0, 0.0), (0.0, 2.0), 1.0, 0.4, (-math.sqrt(0.96), 0.2)),
    # R = 0.1 < B/‖g_f‖ = 0.5: infeasible, the ascent step (B/‖g_f‖²) g_f
    ("infeasible", (1.0, 0.0), (0.0, 1.0), 0.1, 0.5, (0.0, 0.5)),
    # g_r ∥ g_f: g_r⊥ = 0, the ascent step (0.4/4)(2, 0)
    ("colinear", (1.0, 0.0), (2.0, 0.0), 1.0, 0.4, (0.2, 0.0)),
    # g_f = 0 and B > 0: no step; with B = 0: the retain step
    ("no forget gradient", (1.0, 0.0), (0.0, 0.0), 1.0, 0.3, (0.0, 0.0)),
    ("no forget gradient, B = 0", (0.0, 2.0), (0.0, 0.0), 0.5, 0.0, (0.0, -1.0)),
]


@pytest.mark.parametrize("name, gr, gf, lr, b, expected", CASES, ids=[c[0] for c in CASES])
def test_update_by_hand(name, gr, gf, lr, b, expected):
    got = hamu_update(torch.tensor([gr]), torch.tensor([gf]), lr, torch.tensor([b]))
    torch.testing.assert_close(got, torch.tensor([expected]), rtol=1e-6, atol=1e-7)


def test_cases_on_members_side_by_side_are_each_their_own():
    gr = torch.tensor([c[1] for c in CASES])
    gf = torch.tensor([c[2] for c in CASES])
    b = torch.tensor([c[4] for c in CASES])
    for lr in {c[3] for c in CASES}:
        got = hamu_update(gr, gf, lr, b)
        for i, case in enumerate(CASES):
            if case[3] == lr:
                torch.testing.assert_close(got[i], torch.tensor(case[5]), rtol=1e-6, atol=1e-7)


def test_update_solves_the_trust_region_problem():
    """On random 2-D pairs, δ is feasible and no point of a fine polar grid of the feasible set does better."""
    gen = torch.Generator().manual_seed(0)
    radii = torch.linspace(0, 1, 401, dtype=torch.float64)
    angles = torch.linspace(0, 2 * math.pi, 2001, dtype=torch.float64)[:-1]
    grid = (radii[:, None, None] * torch.stack([angles.cos(), angles.sin()], -1)[None]).reshape(-1, 2)
    checked = 0
    for _ in range(40):
        gr, gf = torch.randn(2, 2, generator=gen, dtype=torch.float64)
        lr, b = 0.5, float(torch.rand(1, generator=gen)) * 0.5
        radius = lr * gr.norm()
        if radius ** 2 < b ** 2 / gf.dot(gf):
            continue  # infeasible: no δ satisfies both constraints (the code takes the ascent step)
        delta = hamu_update(gr[None], gf[None], lr, torch.tensor([b], dtype=torch.float64))[0]
        assert gf.dot(delta) >= b - 1e-9 and delta.norm() <= radius + 1e-9
        points = grid * radius
        feasible = points[points @ gf >= b]
        best = (feasible @ gr).min()
        assert gr.dot(delta) <= best + 1e-9  # nothing feasible is lower
        assert best - gr.dot(delta) < 2e-2 * radius * gr.norm()  # and the grid gets close to it
        checked += 1
    assert checked > 20


def test_constraint_is_shared_by_the_product_of_gradient_norms():
    # two tensors per member, both in the rectified branch: g_f^(i)·δ^(i) = B_i exactly
    gr = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])]
    gf = [torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0, 0.0]])]
    opts = HAMUParams(lr=1.0, constraint_ratio=0.3)
    deltas = hamu_step(gr, gf, opts)
    products = [1.0 * 2.0, 3.0 * 1.0]
    for i, delta in enumerate(deltas):
        assert float((gf[i] * delta).sum()) == pytest.approx(0.3 * products[i] / sum(products), rel=1e-6)
    # HAMU-U swaps the roles: the retain loss falls by the shared budget, −g_r^(i)·δ^(i) = B_i
    deltas = hamu_step(gr, gf, HAMUParams(variant="u", lr=1.0, constraint_ratio=0.3))
    for i, delta in enumerate(deltas):
        assert float((-gr[i] * delta).sum()) == pytest.approx(0.3 * products[i] / sum(products), rel=1e-6)


def update_alone(gr, gf, lr, b, eps=1e-12):
    """compute_hamu_update for one tensor of one model, its branches as scalar if/else."""
    gr_n, gf_n2, dot = gr.norm(), (gf * gf).sum(), (gr * gf).sum()
    radius = lr * gr_n
    if gf_n2 < eps:
        return -(radius / max(gr_n, eps)) * gr if b <= eps else torch.zeros_like(gr)
    ascent = (b / gf_n2) * gf
    disc = radius ** 2 - b ** 2 / gf_n2
    if disc < 0:
        return ascent
    if dot <= -b * max(gr_n, eps) / max(radius, eps):
        return -(radius / max(gr_n, eps)) * gr
    perp = gr - (dot / gf_n2) * gf
    if perp.norm() < eps:
        return ascent
    return ascent - (radius if b <= eps else disc.sqrt()) * perp / perp.norm()


def hamu_alone(net, seed, task, forget, o):
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    retain, forget = torch.as_tensor(retain_indices(task, forget)), torch.as_tensor(forget)
    params = list(net.parameters())

    def grads(index):
        net.zero_grad()
        F.cross_entropy(net(x[index]), y[index]).backward()
        torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
        return [p.grad.clone() for p in params]

    pending, passes = [], 0
    for epoch in range(o.epochs):
        order = retain[batch_order(seed, epoch, len(retain), 1)]
        for b in range(0, len(order), o.batch_size):
            if not pending:
                f_order = forget[batch_order(seed, passes, len(forget), 3)]
                pending = [f_order[i:i + o.batch_size] for i in range(0, len(f_order), o.batch_size)]
                passes += 1
            g_r, g_f = grads(order[b:b + o.batch_size]), grads(pending.pop(0))
            if o.variant == "u":
                g_r, g_f = [-g for g in g_f], [-g for g in g_r]
            products = [r.norm() * f.norm() for r, f in zip(g_r, g_f)]
            with torch.no_grad():
                for p, r, f, w in zip(params, g_r, g_f, products):
                    p += update_alone(r, f, o.lr, o.lr * o.constraint_ratio * w / sum(products))
    return net


@pytest.mark.parametrize("variant", ["q", "u"])
def test_each_member_equals_hamu_on_that_model_alone(setup, variant):
    task, original, forget = setup
    params = {"variant": variant, "lr": 0.05, "epochs": 2, "batch_size": 16, "max_grad_norm": 0.5}
    result = unlearn(original, task, forget, "hamu", params)
    for m, seed in enumerate(original.seeds):
        expected = hamu_alone(original.member(m), seed, task, forget, HAMUParams(**params)).state_dict()
        got = result.member(m).state_dict()
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-6, msg=k)
        assert not torch.allclose(got["head.weight"], original.member(m).state_dict()["head.weight"])


def test_hamu_q_raises_the_forget_loss_more_than_the_retain_loss(setup):
    task, original, forget = setup
    y = torch.as_tensor(task.train.y)
    retain = torch.as_tensor(retain_indices(task, forget))

    def losses(ensemble):
        logits = ensemble.logits(task.train.x)
        return torch.tensor([[F.cross_entropy(logits[m, s], y[s]) for s in (torch.as_tensor(forget), retain)]
                             for m in range(len(ensemble))])

    result = unlearn(original, task, forget, "hamu", {"lr": 0.05, "epochs": 5, "batch_size": 16})
    rise = losses(result) - losses(original)
    # measured: forget CE +0.69, +0.63; retain CE +0.13, +0.10 (NegGrad+ at β = 0.5, same lr: both diverge, > +17)
    assert (rise[:, 0] > 0.3).all() and (rise[:, 0] > 3 * rise[:, 1]).all()
