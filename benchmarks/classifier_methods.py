"""Every classifier unlearner on N digits MLPs: UA, RA, TA, MIA-Efficacy, time, and the ε score against retraining.

The original members are the default ``ModelOptions()`` (MLP 64→128→128→10) trained with the default ``Recipe()``
(SGD, lr 0.1 cosine, 20 epochs) on the digits training split, seeds 0..N−1; the forget set is a random 10 % of it
(``forget_indices(task, {"percent": 10})``) or, with ``--forget class``, every example of class 3. Each method runs
with its defaults (below: the only parameters given) on all N members at once; ``retrain`` (the same seeds trained
without the forget set) is the reference. Reported, as means over the N members: UA = 100 − forget accuracy, RA, TA,
MIA-Efficacy (``unlearnkit.evaluation.metrics.classifier``), the method's wall-clock time as a fraction of the
reference's retraining time (both timed here, the retraining in an empty cache), and the NeurIPS 2023 competition's
forget quality F and final score F × RA/RA_retrain × TA/TA_retrain (``eps_score``) of the N unlearned against the N
retrained models. The ``retrain (other seeds)`` row is exact unlearning measured the same way: N more members
(seeds N..2N−1) retrained, against the reference; ``original`` is no unlearning at all.

Example::

    python benchmarks/classifier_methods.py --threads 1 --members 16
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from unlearnkit.classifier.data import forget_indices, load_task, retain_indices
from unlearnkit.classifier.ensemble import Recipe, train_ensemble
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.unlearn import unlearn
from unlearnkit.evaluation.metrics.classifier import classifier_scores
from unlearnkit.evaluation.metrics.eps_score import (
    final_score,
    forget_quality,
    logit_scaled_confidence,
)

RUNS = [  # (row, method, params): the defaults, except what a method needs given
    ("finetune", "finetune", {}),
    ("ga", "ga", {}),
    ("random_labels", "random_labels", {}),
    ("neggrad_plus", "neggrad_plus", {}),
    ("l1_sparse (α = 5e-4)", "l1_sparse", {"alpha": 5e-4}),
    ("prune 0.95 + finetune", "prune", {}),
    ("prune 0.5 + finetune", "prune", {"rate": 0.5}),
    ("salun", "salun", {}),
    ("scrub", "scrub", {}),
    ("boundary_shrink", "boundary_shrink", {}),
]


def evaluate(ensemble, task, forget, retain):
    splits = {"forget": (task.train.x[forget], task.train.y[forget]),
              "retain": (task.train.x[retain], task.train.y[retain]), "test": (task.test.x, task.test.y)}
    logits = {name: ensemble.logits(x).numpy() for name, (x, _) in splits.items()}
    scores = np.array([classifier_scores(*[(logits[s][m], splits[s][1]) for s in ("forget", "retain", "test")]
                                         ).values() for m in range(len(ensemble))])
    confidence = logit_scaled_confidence(logits["forget"], splits["forget"][1])
    return scores, confidence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--forget", choices=["random", "class"], default="random")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = load_task("digits")
    forget = forget_indices(task, {"percent": 10} if args.forget == "random" else {"kind": "class", "label": 3})
    retain = retain_indices(task, forget)
    seeds = list(range(args.members))
    with tempfile.TemporaryDirectory() as cache:
        original = train_ensemble(task, ModelOptions(), Recipe(), seeds, cache_dir=cache)
        start = time.perf_counter()
        retrained = unlearn(original, task, forget, "retrain", cache_dir=cache)
        retrain_time = time.perf_counter() - start
        start = time.perf_counter()
        other = train_ensemble(task, ModelOptions(), Recipe(), [s + args.members for s in seeds], forget=forget,
                               cache_dir=cache)
        other_time = time.perf_counter() - start
    reference, reference_conf = evaluate(retrained, task, forget, retain)
    rows = [("retrain (reference)", reference, reference_conf, 1.0)]
    for name, ensemble, seconds in [("retrain (other seeds)", other, other_time), ("original", original, 0.0)]:
        rows.append((name, *evaluate(ensemble, task, forget, retain), seconds / retrain_time))
    for name, method, params in RUNS:
        start = time.perf_counter()
        result = unlearn(original, task, forget, method, params)
        seconds = time.perf_counter() - start
        rows.append((name, *evaluate(result, task, forget, retain), seconds / retrain_time))
    print(f"digits MLP, N = {args.members}, forget = {args.forget} ({len(forget)} of {len(task.train)}), "
          f"retraining {retrain_time:.1f} s, {args.threads} thread(s)\n")
    print("| method | UA | RA | TA | MIA-Eff. | time / retrain | F (ε) | final score |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, scores, confidence, fraction in rows:
        ua, ra, ta, mia = scores.mean(0)
        if name == "retrain (reference)":
            quality = score = "—"
        else:
            f = forget_quality(confidence, reference_conf)
            quality = f"{f:.3f}"
            score = f"{final_score(f, scores[:, 1], reference[:, 1], scores[:, 2], reference[:, 2]):.3f}"
        print(f"| {name} | {ua:.1f} | {ra:.1f} | {ta:.1f} | {mia:.1f} | {fraction:.2f} | {quality} | {score} |")


if __name__ == "__main__":
    main()
