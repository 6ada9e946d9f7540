"""The full ε evaluation on digits, N models per side: train N originals, retrain N without the forget set, unlearn
the N originals with one method, score (issue #18: goal ≤ 10 minutes for N = 512 on 2 cores).

Stages, each timed: the N original members (default ``ModelOptions()``: MLP 64→128→128→10, default ``Recipe()``:
SGD lr 0.1 cosine, 20 epochs; seeds 0..N−1) on the digits training split; the N retrained members (the same seeds
and recipe without the forget set: ``unlearn(..., "retrain")``); the method on all N originals at once (its own
extra cost included: oracle_matching trains its ``num_oracles`` oracles, seeds 1,000,000 on); the scores:

- the NeurIPS 2023 competition's forget quality F (per-example ε over the forget set, ``eps_score.forget_quality``)
  and final score F × RA/RA_retrain × TA/TA_retrain, of the N unlearned against the N retrained;
- KLOM (``klom.klom``) on every forget point and on 200 retain and 200 test points: mean and median;
- for comparison, the same scores of the originals themselves (no unlearning).

Everything runs in one process with ``--threads`` intra-op threads; members are cached in a temporary folder (or
``--cache``), so a second run with the same ``--cache`` skips the training it finds. Each stage's wall-clock time
and the process's CPU time (summed over its threads) are printed: on a shared machine the CPU time is the steadier
measure of the work.

Example::

    python benchmarks/eps_evaluation.py --members 512 --threads 2 --method oracle_matching \
        --params '{"epochs": 40, "lr": 0.01, "batch_size": 128}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from unlearnkit.classifier.data import forget_indices, load_task, retain_indices
from unlearnkit.classifier.ensemble import Recipe, train_ensemble
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.unlearn import unlearn
from unlearnkit.evaluation.metrics.eps_score import final_score, forget_quality, logit_scaled_confidence
from unlearnkit.evaluation.metrics.klom import klom, margins


def accuracy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (logits.argmax(-1) == y).mean(1)


def scores(ensemble, retrained_logits, splits, points) -> dict[str, float]:
    logits = {name: ensemble.logits(x).numpy() for name, (x, _) in splits.items()}
    fx, fy = splits["forget"]
    f = forget_quality(logit_scaled_confidence(logits["forget"], fy),
                       logit_scaled_confidence(retrained_logits["forget"], fy))
    ra, ta = accuracy(logits["retain"], splits["retain"][1]), accuracy(logits["test"], splits["test"][1])
    ra_r = accuracy(retrained_logits["retain"], splits["retain"][1])
    ta_r = accuracy(retrained_logits["test"], splits["test"][1])
    row = {"F": f, "final": final_score(f, ra, ra_r, ta, ta_r), "UA": 100 * (1 - accuracy(logits["forget"], fy).mean()),
           "RA": 100 * ra.mean(), "TA": 100 * ta.mean()}
    for name, index in points.items():
        y = splits[name][1][index]
        value = klom(margins(logits[name][:, index], y), margins(retrained_logits[name][:, index], y))
        row[f"KLOM {name}"] = (float(np.nanmean(value)), float(np.nanmedian(value)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=512)
    parser.add_argument("--method", default="finetune")
    parser.add_argument("--params", default="{}", help="the method's parameters, as JSON")
    parser.add_argument("--forget", choices=["random", "class"], default="random")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None, help="cache folder (default: a new temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = load_task("digits")
    forget = forget_indices(task, {"percent": 10} if args.forget == "random" else {"kind": "class", "label": 3})
    retain = retain_indices(task, forget)
    seeds = list(range(args.members))
    times: dict[str, tuple[float, float]] = {}  # stage -> (wall, CPU) seconds
    clock = [time.perf_counter(), time.process_time()]

    def lap(stage: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        times[stage] = (now[0] - clock[0], now[1] - clock[1])
        clock[:] = now

    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or scratch
        begin = list(clock)
        original = train_ensemble(task, ModelOptions(), Recipe(), seeds, cache_dir=cache)
        lap("train originals")
        retrained = unlearn(original, task, forget, "retrain", cache_dir=cache)
        lap("retrain")
        unlearned = unlearn(original, task, forget, args.method, json.loads(args.params), cache_dir=cache)
        lap(f"unlearn ({args.method})")
        splits = {"forget": (task.train.x[forget], task.train.y[forget]),
                  "retain": (task.train.x[retain], task.train.y[retain]), "test": (task.test.x, task.test.y)}
        pick = np.random.default_rng(0)
        points = {"forget": np.arange(len(forget)),
                  "retain": np.sort(pick.choice(len(retain), min(200, len(retain)), replace=False)),
                  "test": np.sort(pick.choice(len(task.test), min(200, len(task.test)), replace=False))}
        retrained_logits = {name: retrained.logits(x).numpy() for name, (x, _) in splits.items()}
        rows = {args.method: scores(unlearned, retrained_logits, splits, points)}
        lap("score")
        times["total"] = (clock[0] - begin[0], clock[1] - begin[1])
        rows["original (no unlearning)"] = scores(original, retrained_logits, splits, points)
    print(f"digits MLP, N = {args.members} per side, forget = {args.forget} ({len(forget)} of {len(task.train)}), "
          f"{args.method} {args.params}, {args.threads} thread(s)\n")
    print("| stage | wall s | CPU s (all threads) |\n| --- | --- | --- |")
    for name, (wall, cpu) in times.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    print("\n| models | UA | RA | TA | F (ε) | final score | KLOM forget (mean / median) | KLOM retain | KLOM test |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        kl = " | ".join(f"{r[f'KLOM {s}'][0]:.3f} / {r[f'KLOM {s}'][1]:.3f}" for s in ("forget", "retain", "test"))
        print(f"| {name} | {r['UA']:.1f} | {r['RA']:.1f} | {r['TA']:.1f} | {r['F']:.3f} | {r['final']:.3f} | {kl} |")


if __name__ == "__main__":
    main()
