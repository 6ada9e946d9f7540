"""Worst-case forget sets: the training examples that an unlearning method finds hardest to erase.

Paper: Fan, Liu, Hero and Liu, "Challenging Forgets: Unveiling the Worst-Case Forget Sets in Machine Unlearning",
ECCV 2024 (arXiv:2403.07362); research/methods.md §15. Reference code: OPTML-Group/Unlearn-WorstCase, data-wise
(``main_selmu.py``, ``unlearn/impl.py: optimize_select``, ``utils.py: bisection``, ``unlearn/FT.py: w_FT_iter``).

The bi-level problem, over weights w ∈ [0, 1]^n with Σ w = k (the capped simplex; k = the forget set's size):

    upper:  min_w  U(w) = Σ_i w_i ℓ_i(θ*(w)) + γ ||w||²          ℓ_i = CE of training example i
    lower:  θ*(w) = a few epochs of the unlearning method from θ0, with per-example weights c_i(w)

The examples the upper level keeps (high w) are those whose loss stays lowest after unlearning them: the ones the
method fails to erase. The lower level's weights (``method``), each a per-example factor on the cross-entropy of a
pass over the whole training set (in batches, per member, as ``steps.py``'s engine):

- ``finetune``: c_i = 1 − w_i (fine-tune on the retain part: the reference's ``w_FT``);
- ``ga``: c_i = −w_i (gradient ascent on the forget part);
- ``neggrad_plus``: c_i = β(1 − w_i) − (1 − β) w_i.

**first_order** (the paper's solver). Each of ``select_epochs`` iterations: reload θ0, run ``unlearn_epochs`` of the
weighted method (SGD, the engine of ``steps.py``), compute ℓ on the whole training set, step
w ← Π(w − w_lr (ℓ + 2γ w)) — the gradient of U in w with θ*(w) held fixed, no implicit term — and project onto the
capped simplex (``simplex.py``: exact, where the reference bisects on the shift to 1e-5). Every ``binarize_every``
iterations and at the last one, w is replaced by the indicator of its top k; the forget set is that top k.

**bo_rep** (issue #21; ``optim/bilevel/bo_rep.py``). x = w, y = the members' weights, f = U, g = the weighted
lower loss Σ_m (1/n) Σ_i c_i(w) CE_mi (full batch, no weight decay). BO-REP keeps y across iterations (refined at
the start, then ``lower_steps`` gradient steps every ``period`` iterations) and adds the implicit term
−∇²_wθ g [∇²_θθ g + λI]⁻¹ ∇_θ f by a Neumann series of Hessian-vector products; its normalized-momentum step is
followed by the same projection onto the capped simplex [choice: BO-REP is unconstrained; a projected step is the
usual extension]. ``select_epochs`` is its number of iterations; the top k of the final w is the forget set. The
lower problem of a neural network is not strongly convex: raise ``damping`` if the series diverges (one-line error).

Choices [this toolkit's], where the reference differs:

- the lower level runs SGD with momentum and weight decay (the engine every classifier method uses); the reference
  uses sign-SGD (each weight moves by ±lr) and the sum over a batch rather than the mean;
- ``init: uniform`` (w = k/n everywhere, the reference's commented-out alternative) is the default, so the result
  does not depend on a random starting set; ``init: random`` is the reference's (the indicator of k random examples);
- an ensemble's members (the first ``members``) are unlearned together, each with its own data order, and ℓ_i is the
  mean of their losses: one forget set that is hard for all of them. One member is the paper's setting.

Cost: first_order: select_epochs × (unlearn_epochs passes of forward + backward over the training set + one forward
pass over it), per member. bo_rep: per iteration one gradient of f, Q − 1 + 1 Hessian-vector products (each about a
backward of the graph of ∇_θ g), plus the lower steps, each full-batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vmap

from unlearnkit.classifier.data import ClassifierTask, forget_indices
from unlearnkit.classifier.ensemble import Ensemble, call
from unlearnkit.classifier.options import ForgetOptions, WorstCaseOptions, check
from unlearnkit.classifier.simplex import project_capped_simplex, top_k
from unlearnkit.classifier.steps import IterativeParams, batches, descend, orders
from unlearnkit.errors import UnlearnkitError


@dataclass
class Selection:
    """The selected forget set (sorted indices into ``task.train``), the last continuous weights before the final
    binarization, and U(w) = Σ w_i ℓ_i + γ||w||² at each iteration's w before its step (first_order: ℓ after the
    iteration's lower level; bo_rep: ℓ at the current θ, before the iteration's lower steps)."""

    indices: np.ndarray
    weights: np.ndarray
    objective: list[float] = field(default_factory=list)


def forget_set(task: ClassifierTask, options: ForgetOptions | dict[str, Any], original: Ensemble | None = None,
               ) -> np.ndarray:
    """The forget set of ``options``: ``worst_case`` selected on ``original``, any other kind by ``forget_indices``."""
    if not isinstance(options, ForgetOptions):
        options = check(ForgetOptions, dict(options), "forget set")
    if options.kind != "worst_case":
        return forget_indices(task, options)
    if original is None:
        raise UnlearnkitError("a 'worst_case' forget set is selected on the trained models: pass the original "
                              "ensemble")
    return select_worst_case(original, task, size_of(task, options.percent), options.selection).indices


def size_of(task: ClassifierTask, percent: float) -> int:
    n = len(task.train)
    count = round(percent / 100 * n)
    if not 1 <= count < n:
        raise UnlearnkitError(f"forget set: {percent}% of {n} training examples is {count} examples; choose a "
                              f"percent that gives between 1 and {n - 1}")
    return count


def coefficients(method: str, w, beta: float):
    """c_i(w), the lower level's per-example factor on CE (numpy or torch, differentiable in w)."""
    if method == "finetune":
        return 1 - w
    if method == "ga":
        return -w
    return beta * (1 - w) - (1 - beta) * w


def upper_objective(w: np.ndarray, losses: np.ndarray, gamma: float) -> float:
    return float(np.dot(w, losses) + gamma * np.dot(w, w))


def upper_direction(w: np.ndarray, losses: np.ndarray, gamma: float) -> np.ndarray:
    """∂U/∂w with θ held fixed (the first-order step's direction): ℓ + 2γw."""
    return losses + 2 * gamma * w


def select_worst_case(original: Ensemble, task: ClassifierTask, size: int,
                      options: WorstCaseOptions | dict[str, Any] | None = None) -> Selection:
    """The ``size`` training examples hardest to unlearn for ``original`` (module docstring)."""
    if not isinstance(options, WorstCaseOptions):
        options = check(WorstCaseOptions, dict(options or {}), "worst-case selection")
    n = len(task.train)
    if not 1 <= size < n:
        raise UnlearnkitError(f"worst-case selection: size {size} must be between 1 and {n - 1}")
    if options.members is not None and options.members > len(original):
        raise UnlearnkitError(f"worst-case selection: members {options.members} is more than the ensemble's "
                              f"{len(original)}; lower it or leave it out (all members)")
    models = first_members(original, options.members or len(original))
    w = initial_weights(n, size, options)
    if options.solver == "bo_rep":
        return _bo_rep(models, task, size, w, options)
    return _first_order(models, task, size, w, options)


def first_members(ensemble: Ensemble, count: int) -> Ensemble:
    result = copy.copy(ensemble)
    result.params = {k: v[:count] for k, v in ensemble.params.items()}
    result.buffers = {k: v[:count] for k, v in ensemble.buffers.items()}
    result.seeds = list(ensemble.seeds[:count])
    return result


def initial_weights(n: int, size: int, options: WorstCaseOptions) -> np.ndarray:
    if options.init == "uniform":
        return np.full(n, size / n)
    w = np.zeros(n)
    w[np.random.default_rng(options.seed).choice(n, size=size, replace=False)] = 1.0
    return w


def lower_level(original: Ensemble, task: ClassifierTask, w: np.ndarray, options: WorstCaseOptions,
                iteration: int = 0) -> Ensemble:
    """θ*(w): ``unlearn_epochs`` passes of the weighted method from ``original`` (each member in its own order)."""
    opts = IterativeParams(epochs=options.unlearn_epochs, lr=options.lr, momentum=options.momentum,
                           weight_decay=options.weight_decay, batch_size=options.batch_size)
    c = torch.as_tensor(coefficients(options.method, w, options.beta), dtype=torch.float32)
    y = torch.as_tensor(task.train.y)
    everything = np.arange(len(w))

    def steps():
        for epoch in range(options.unlearn_epochs):
            for index in batches(orders(original.seeds, iteration * options.unlearn_epochs + epoch, everything),
                                 options.batch_size):
                yield index, y[index], c[index] / index.shape[1]
    return descend(original, task.train.x, steps(), opts)


def example_losses(ensemble: Ensemble, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ℓ_i: the members' mean cross-entropy on each example, float64 (n,)."""
    logits = ensemble.logits(x).cpu()
    members = logits.shape[0]
    per = F.cross_entropy(logits.flatten(0, 1), torch.as_tensor(y).repeat(members), reduction="none")
    return per.view(members, -1).double().mean(0).numpy()


def _first_order(original: Ensemble, task: ClassifierTask, size: int, w: np.ndarray,
                 options: WorstCaseOptions) -> Selection:
    objective = []
    every = min(options.binarize_every, options.select_epochs)
    for iteration in range(options.select_epochs):
        losses = example_losses(lower_level(original, task, w, options, iteration), task.train.x, task.train.y)
        objective.append(upper_objective(w, losses, options.gamma))
        w = project_capped_simplex(w - options.w_lr * upper_direction(w, losses, options.gamma), size)
        if (iteration + 1) % every == 0 and iteration + 1 < options.select_epochs:
            w = indicator(len(w), top_k(w, size))
    return Selection(top_k(w, size), w, objective)


def indicator(n: int, indices: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    out[indices] = 1.0
    return out


def _bo_rep(original: Ensemble, task: ClassifierTask, size: int, w0: np.ndarray,
            options: WorstCaseOptions) -> Selection:
    from unlearnkit.optim.bilevel import BilevelProblem, get_solver

    device = next(iter(original.params.values())).device
    x = torch.as_tensor(task.train.x, device=device)
    y = torch.as_tensor(task.train.y, device=device)
    w = torch.tensor(w0, dtype=torch.float32, device=device, requires_grad=True)
    names = list(original.params)
    theta = [original.params[k].detach().clone().requires_grad_(True) for k in names]
    run = vmap(call(original.template, False), in_dims=(0, 0, None))
    members = len(original)

    def per_example() -> torch.Tensor:  # (members, n) cross-entropies at the current θ
        logits = run(dict(zip(names, theta)), original.buffers, x)
        return F.cross_entropy(logits.flatten(0, 1), y.repeat(members), reduction="none").view(members, -1)

    def f(_batch) -> torch.Tensor:
        return (w * per_example().mean(0)).sum() + options.gamma * (w * w).sum()

    def g(_batch) -> torch.Tensor:
        return (coefficients(options.method, w, options.beta) * per_example()).sum() / len(y)

    problem = BilevelProblem(upper=[w], lower=theta, f=f, g=g)
    solver = get_solver("bo_rep", **options.solver_params)
    objective = []
    for _ in range(options.select_epochs):
        with torch.no_grad():
            objective.append(float(f(None)))
        solver.step(problem)
        with torch.no_grad():
            w.copy_(torch.as_tensor(project_capped_simplex(w.detach().cpu().double().numpy(), size)))
    final = w.detach().cpu().double().numpy()
    return Selection(top_k(final, size), final, objective)


__all__ = ["Selection", "forget_set", "select_worst_case", "upper_direction", "upper_objective"]
