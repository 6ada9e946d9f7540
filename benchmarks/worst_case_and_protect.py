"""Worst-case forget sets against random ones, and protected (unlearnable) digits, measured (docs/benchmarks.md).

Part 1 (``--part worst_case``): N default digits MLPs (``ModelOptions()``, ``Recipe()``, seeds 0..N−1). Forget sets
of 10 % of the training split: the worst case selected on the N members (``select_worst_case``: finetune lower level,
the reference's defaults: 10 upper iterations × 10 lower epochs; once with ``solver: first_order`` and once with
``solver: bo_rep``) and five random sets (seeds 0..4). Each set is unlearned by retrain, finetune and random_labels
(their defaults) on the N members; reported: forget accuracy (= 100 − UA) and test accuracy, means over the members, in
%, and the selection's time.

Part 2 (``--part protect``): the full digits training split protected at several ℓ∞ budgets with each embedding
(``protect``, 200 steps, lr 0.03); reported: the Bayes-error estimate before and after, and the test accuracy of two
default MLPs trained on the clean and on the protected set.

    python benchmarks/worst_case_and_protect.py --part worst_case --members 4
    python benchmarks/worst_case_and_protect.py --part protect
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from unlearnkit.classifier.data import forget_indices, load_task
from unlearnkit.classifier.ensemble import Recipe, train_ensemble
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.protect import protect, protection_accuracy
from unlearnkit.classifier.unlearn import unlearn
from unlearnkit.classifier.worst_case import select_worst_case


def worst_case(members: int, cache: str) -> None:
    task = load_task("digits")
    original = train_ensemble(task, ModelOptions(), Recipe(), list(range(members)), cache_dir=cache)
    size = round(0.1 * len(task.train))
    sets = []
    for solver in ("first_order", "bo_rep"):
        start = time.perf_counter()
        params = {"solver": solver}
        if solver == "bo_rep":
            params["solver_params"] = {"upper_lr": 0.5, "damping": 1.0, "neumann_lr": 1e-3}
        chosen = select_worst_case(original, task, size, params).indices
        sets.append((f"worst case ({solver}, {time.perf_counter() - start:.0f} s)", chosen))
    sets += [(f"random (seed {s})", forget_indices(task, {"kind": "random", "percent": 10, "seed": s}))
             for s in range(5)]
    print(f"{members} members; forget sets of {size} examples; overlap of the two worst-case sets: "
          f"{len(set(sets[0][1]) & set(sets[1][1]))}")
    print("| forget set | retrain: forget acc. | finetune: forget acc. | random_labels: forget acc. | "
          "finetune: test acc. |")
    print("| --- | --- | --- | --- | --- |")
    for name, forget in sets:
        cells = []
        for method in ("retrain", "finetune", "random_labels"):
            unlearned = unlearn(original, task, forget, method, cache_dir=cache)
            cells.append(100 * unlearned.accuracy(task.train.x[forget], task.train.y[forget]).mean())
            if method == "finetune":
                test = 100 * unlearned.accuracy(task.test.x, task.test.y).mean()
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {test:.1f} |", flush=True)


def protection(cache: str) -> None:
    task = load_task("digits")
    print("| embedding | epsilon | BER clean → protected | test acc. clean | test acc. protected | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for embedding in ("model", "input"):
        for epsilon in (8 / 255, 0.1, 0.2, 0.3):
            start = time.perf_counter()
            result = protect(task, {"epsilon": epsilon, "steps": 200, "lr": 0.03, "embedding": embedding},
                             cache_dir=cache)
            seconds = time.perf_counter() - start
            accuracy = protection_accuracy(task, result.x, seeds=[0, 1], cache_dir=cache)
            print(f"| {embedding} | {epsilon:.3f} | {result.bayes_error[0]:.3f} → {result.bayes_error[-1]:.3f} | "
                  f"{100 * accuracy['clean']:.1f} | {100 * accuracy['protected']:.1f} | {seconds:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["worst_case", "protect"], required=True)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.set_printoptions(precision=3)
    with tempfile.TemporaryDirectory() as cache:
        worst_case(args.members, cache) if args.part == "worst_case" else protection(cache)


if __name__ == "__main__":
    main()
