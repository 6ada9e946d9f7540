"""Worst-case forget sets (Fan et al., ECCV 2024, "Challenging Forgets"; OPTML-Group/Unlearn-WorstCase data-wise).

Checked against independent computations: the capped-simplex projection against scipy's trust-constr on the same
quadratic programme and against the KKT form clip(a − μ, 0, 1) with μ from scipy's brentq; the weighted lower level
against a plain ``nn.Module`` + ``torch.optim.SGD`` loop on Σ_b c_b·CE_b / B (c from the definitions: 1 − w, −w,
β(1 − w) − (1 − β)w); the upper step's direction against central finite differences of U(w) = Σ w_i ℓ_i(θ) +
γ||w||² at fixed θ, ℓ recomputed from the unlearned members as plain modules; and the paper's claim on digits (the
selected set keeps a higher forget accuracy after unlearning than random sets of the same size).
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, LinearConstraint, brentq, minimize

from unlearnkit.classifier.data import forget_indices, load_task
from unlearnkit.classifier.ensemble import Recipe, batch_order, train_ensemble
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.options import ForgetOptions, WorstCaseOptions
from unlearnkit.classifier.simplex import project_capped_simplex, top_k
from unlearnkit.classifier.unlearn import unlearn
from unlearnkit.classifier.worst_case import (
    example_losses,
    forget_set,
    lower_level,
    select_worst_case,
    upper_direction,
)
from unlearnkit.errors import UnlearnkitError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    full = load_task("digits")
    task = dataclasses.replace(full, train=full.train.subset(np.arange(60)))
    original = train_ensemble(task, ModelOptions(width=8), Recipe(epochs=3, batch_size=16), [3, 5],
                              cache_dir=tmp_path_factory.mktemp("cache"))
    return task, original


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    task = load_task("digits")
    original = train_ensemble(task, ModelOptions(width=32), Recipe(epochs=8), [0],
                              cache_dir=tmp_path_factory.mktemp("cache"))
    return task, original


# --- the projection onto {0 <= w <= 1, sum w = m} -----------------------------------------------------------------

def qp_projection(a, total):
    """The projection as scipy's interior-point solver finds it: min ½||w - a||², 0 <= w <= 1, Σ w = total."""
    n = len(a)
    result = minimize(lambda w: 0.5 * np.sum((w - a) ** 2), np.full(n, total / n), jac=lambda w: w - a,
                      hess=lambda w: np.eye(n), bounds=Bounds(0, 1),
                      constraints=[LinearConstraint(np.ones((1, n)), total, total)], method="trust-constr",
                      options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000})
    assert result.success
    return result.x


def kkt_projection(a, total):
    """The KKT form clip(a − μ, 0, 1), μ from Brent's root finder on the sum (the reference bisects on μ)."""
    mu = brentq(lambda m: np.clip(a - m, 0, 1).sum() - total, a.min() - 1, a.max(), xtol=1e-15, rtol=1e-15)
    return np.clip(a - mu, 0, 1)


@pytest.mark.parametrize("seed,n,total,scale", [(0, 7, 3, 1.0), (1, 12, 1, 3.0), (2, 12, 11.5, 0.3),
                                                (3, 20, 5, 10.0), (4, 5, 2.5, 0.01)])
def test_projection_equals_an_independent_qp_solver(seed, n, total, scale):
    a = np.random.default_rng(seed).normal(0.3, scale, n)
    w = project_capped_simplex(a, total)
    assert abs(w.sum() - total) < 1e-9 and w.min() >= 0 and w.max() <= 1
    general = qp_projection(a, total)  # a general QP solver: close, and never closer to a than the projection
    np.testing.assert_allclose(w, general, atol=1e-4)
    assert np.sum((w - a) ** 2) <= np.sum((general - a) ** 2) + 1e-12
    np.testing.assert_allclose(w, kkt_projection(a, total), atol=1e-12)


def test_projection_edge_cases_and_bad_input():
    a = np.array([0.2, 5.0, -3.0, 0.7])
    np.testing.assert_array_equal(project_capped_simplex(a, 0), np.zeros(4))
    np.testing.assert_array_equal(project_capped_simplex(a, 4), np.ones(4))
    inside = np.array([0.25, 0.5, 0.75, 0.5])  # already feasible for total 2: unchanged
    np.testing.assert_allclose(project_capped_simplex(inside, 2.0), inside, atol=1e-12)
    np.testing.assert_array_equal(top_k(np.array([0.5, 1.0, 0.5, 0.5]), 2), [0, 1])  # ties: the lower index
    with pytest.raises(UnlearnkitError, match="must lie in"):
        project_capped_simplex(a, 5)


# --- the lower level and the upper step ---------------------------------------------------------------------------

def weighted_alone(net, seed, task, c, opts, iteration=0):
    """The weighted lower level on one model: each epoch the member's order of every training example, batches of
    B, loss Σ_b c_b CE_b / B, torch.optim.SGD (momentum, weight decay)."""
    net = copy.deepcopy(net)
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    c = torch.as_tensor(c, dtype=torch.float32)
    sgd = torch.optim.SGD(net.parameters(), lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    for epoch in range(opts.unlearn_epochs):
        order = batch_order(seed, iteration * opts.unlearn_epochs + epoch, len(y), 1)
        for b in range(0, len(order), opts.batch_size):
            i = order[b:b + opts.batch_size]
            loss = (c[i] * F.cross_entropy(net(x[i]), y[i], reduction="none")).sum() / len(i)
            sgd.zero_grad()
            loss.backward()
            sgd.step()
    return net


@pytest.mark.parametrize("method,coefficient", [("finetune", lambda w: 1 - w), ("ga", lambda w: -w),
                                                ("neggrad_plus", lambda w: 0.9 * (1 - w) - 0.1 * w)])
def test_weighted_lower_level_is_the_method_with_per_example_weights(tiny, method, coefficient):
    task, original = tiny
    opts = WorstCaseOptions(method=method, unlearn_epochs=2, lr=0.05, batch_size=16, beta=0.9)
    w = np.random.default_rng(0).uniform(0, 1, len(task.train))
    ours = lower_level(original, task, w, opts, iteration=1)
    for m, seed in enumerate(original.seeds):
        alone = weighted_alone(original.member(m), seed, task, coefficient(w), opts, iteration=1)
        for name, p in alone.named_parameters():
            torch.testing.assert_close(ours.params[name][m], p.detach(), rtol=1e-4, atol=1e-5)


def test_upper_direction_is_the_gradient_of_the_upper_objective_at_fixed_theta(tiny):
    task, original = tiny
    opts = WorstCaseOptions(unlearn_epochs=1, lr=0.05, batch_size=16, gamma=0.7)
    w = project_capped_simplex(np.random.default_rng(1).uniform(0, 1, len(task.train)), 6)
    unlearned = lower_level(original, task, w, opts)
    direction = upper_direction(w, example_losses(unlearned, task.train.x, task.train.y), opts.gamma)
    x, y = torch.as_tensor(task.train.x, dtype=torch.float64), torch.as_tensor(task.train.y)
    nets = [unlearned.member(m).double() for m in range(len(unlearned))]
    with torch.no_grad():  # ℓ_i: the members' mean cross-entropy, recomputed from plain modules
        losses = torch.stack([F.cross_entropy(net(x), y, reduction="none") for net in nets]).mean(0).numpy()

    def upper(v):
        return float(v @ losses + opts.gamma * v @ v)

    h = 1e-4
    for i in (0, 7, 31, 59):
        e = np.zeros_like(w)
        e[i] = h
        assert abs((upper(w + e) - upper(w - e)) / (2 * h) - direction[i]) < 1e-5


def test_first_order_iteration_is_the_projected_step(tiny):
    task, original = tiny
    opts = {"select_epochs": 1, "unlearn_epochs": 1, "lr": 0.05, "batch_size": 16, "w_lr": 0.5, "gamma": 0.1}
    selection = select_worst_case(original, task, 6, opts)
    w0 = np.full(len(task.train), 6 / len(task.train))
    losses = example_losses(lower_level(original, task, w0, WorstCaseOptions(**opts)), task.train.x, task.train.y)
    np.testing.assert_allclose(selection.weights, kkt_projection(w0 - 0.5 * (losses + 2 * 0.1 * w0), 6), atol=1e-12)
    np.testing.assert_array_equal(selection.indices, np.sort(np.argsort(-selection.weights)[:6]))
    assert selection.objective[0] == pytest.approx(float(w0 @ losses + 0.1 * w0 @ w0))


def test_bo_rep_problem_is_the_upper_objective_at_the_original_weights(tiny):
    """With no lower steps before it, BO-REP's first f is U(w0, θ0), recomputed here from the plain members."""
    task, original = tiny
    selection = select_worst_case(original, task, 6, {"solver": "bo_rep", "select_epochs": 1, "gamma": 0.3,
                                                      "solver_params": {"init_steps": 0, "neumann_lr": 1e-3,
                                                                        "damping": 1.0}})
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    with torch.no_grad():
        losses = torch.stack([F.cross_entropy(original.member(m)(x), y, reduction="none")
                              for m in range(len(original))]).mean(0).double().numpy()
    w0 = np.full(len(y), 6 / len(y))
    assert selection.objective[0] == pytest.approx(float(w0 @ losses + 0.3 * w0 @ w0), rel=1e-5)


@pytest.mark.parametrize("solver", ["first_order", "bo_rep"])
def test_selection_is_deterministic_and_a_set_of_the_size_asked(tiny, solver):
    task, original = tiny
    opts = {"select_epochs": 3, "unlearn_epochs": 1, "batch_size": 16, "binarize_every": 2, "solver": solver}
    if solver == "bo_rep":
        opts["solver_params"] = {"upper_lr": 0.3, "init_steps": 2, "lower_steps": 1, "lower_lr": 0.05,
                                 "neumann_terms": 3, "neumann_lr": 1e-3, "damping": 1.0}
    first, again = (select_worst_case(original, task, 9, opts) for _ in range(2))
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.weights, again.weights)
    assert len(first.indices) == 9 and len(np.unique(first.indices)) == 9
    assert first.weights.min() >= 0 and first.weights.max() <= 1 + 1e-6 and abs(first.weights.sum() - 9) < 1e-4
    random_init = {**opts, "init": "random", "seed": 4}
    np.testing.assert_array_equal(select_worst_case(original, task, 9, random_init).indices,
                                  select_worst_case(original, task, 9, random_init).indices)


def test_worst_case_set_is_harder_to_unlearn_than_random_sets_on_digits(digits):
    """The paper's claim, measured: forget accuracy after fine-tuning (5 epochs) on the rest, for the selected 10 %
    and for three random 10 % sets. Measured here: 1.000 for the selected set, 0.929–0.960 for the random ones."""
    task, original = digits
    forget = forget_set(task, {"kind": "worst_case", "percent": 10,
                               "selection": {"select_epochs": 3, "unlearn_epochs": 2}}, original)
    assert len(forget) == round(0.1 * len(task.train))

    def forget_accuracy(indices):
        unlearned = unlearn(original, task, indices, "finetune", {"epochs": 5})
        return float(unlearned.accuracy(task.train.x[indices], task.train.y[indices]).mean())

    worst = forget_accuracy(forget)
    randoms = [forget_accuracy(forget_indices(task, {"kind": "random", "percent": 10, "seed": s})) for s in range(3)]
    assert worst > max(randoms), (worst, randoms)


# --- the data layer and bad input ---------------------------------------------------------------------------------

def test_other_kinds_pass_through_and_worst_case_needs_the_models(tiny):
    task, original = tiny
    np.testing.assert_array_equal(forget_set(task, {"kind": "random", "percent": 10, "seed": 2}),
                                  forget_indices(task, {"kind": "random", "percent": 10, "seed": 2}))
    with pytest.raises(UnlearnkitError, match="pass the original"):
        forget_set(task, {"kind": "worst_case", "percent": 10})
    with pytest.raises(UnlearnkitError, match="worst_case.forget_set"):
        forget_indices(task, {"kind": "worst_case", "percent": 10})
    assert ForgetOptions(kind="worst_case", percent=5).selection == WorstCaseOptions()


@pytest.mark.parametrize("forget,words", [
    ({"kind": "worst_case"}, "needs percent"),
    ({"kind": "worst_case", "percent": 10, "selection": {"metod": "ga"}}, "unknown option 'selection.metod'; the "
                                                                          "options are method, solver"),
    ({"kind": "worst_case", "percent": 10, "selection": {"solver": "adam"}}, "'first_order' or 'bo_rep'"),
    ({"kind": "worst_case", "percent": 10, "selection": {"solver_params": {"upper_lr": 1}}}, "for solver 'bo_rep'"),
    ({"kind": "worst_case", "percent": 10, "selection": {"solver": "bo_rep", "solver_params": {"eta": 1}}},
     "no parameter 'eta'"),
    ({"kind": "random", "percent": 10, "selection": {}}, "does not use selection"),
    ({"kind": "worst_case", "percent": 10, "label": 3}, "does not use label"),
])
def test_bad_worst_case_options_are_one_line_errors(tiny, forget, words):
    task, original = tiny
    with pytest.raises(UnlearnkitError, match=words) as info:
        forget_set(task, forget, original)
    assert "\n" not in str(info.value)


def test_bad_selection_arguments_are_one_line_errors(tiny):
    task, original = tiny
    with pytest.raises(UnlearnkitError, match="members 3 is more than the ensemble's 2"):
        select_worst_case(original, task, 5, {"members": 3})
    with pytest.raises(UnlearnkitError, match="size 60 must be between 1 and 59"):
        select_worst_case(original, task, 60)
    with pytest.raises(UnlearnkitError, match="Neumann series would diverge"):
        select_worst_case(original, task, 5, {"solver": "bo_rep", "select_epochs": 1,
                                              "solver_params": {"init_steps": 0, "neumann_lr": 1e4}})
