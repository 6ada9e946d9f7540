"""N digits MLPs trained as one batched model (``unlearnkit.classifier.ensemble.fit``) against a Python loop.

Both sides train the same members: the default ``ModelOptions()`` (MLP 64→128→128→10) with the default ``Recipe()``
(SGD, momentum 0.9, lr 0.1 with a cosine schedule, 20 epochs of batches of 64) on the digits training split, each
member initialised by ``init_member(seed)`` and visiting the data in ``batch_order(seed, epoch, n)``. The loop side
is one ``nn.Module`` and one ``torch.optim.SGD`` per member, trained in turn: what one would write without batching.

The loop's time per member is measured on ``--loop-members`` members (each costs the same: same sizes, same number
of steps) and multiplied by N, since a loop over 256 members takes many minutes on a shared CPU; the batched side
trains all N. The script also checks that the loop's members equal the batched ones (largest weight difference) and
prints the batched members' test accuracy. Timing is wall-clock, setup (initialisation, stacking) included.

With ``--accuracy``, instead: the default recipe's test accuracy and training time for each model on digits and
mnist1d (``--members`` members each, batched; the ResNet for ``--resnet-epochs`` epochs).

Examples::

    python benchmarks/ensemble_training.py --threads 1 --members 256 --loop-members 16
    python benchmarks/ensemble_training.py --threads 1 --accuracy --members 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from unlearnkit.classifier.data import load_task
from unlearnkit.classifier.ensemble import Recipe, batch_order, fit, init_member, stack
from unlearnkit.classifier.models import ModelOptions


def train_loop(task, model, recipe, seed):
    net = init_member(model, task, seed)
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    steps = math.ceil(len(y) / recipe.batch_size)
    total, step = recipe.epochs * steps, 0
    for epoch in range(recipe.epochs):
        order = batch_order(seed, epoch, len(y))
        for b in range(steps):
            batch = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            for group in opt.param_groups:
                group["lr"] = recipe.lr_at(step, total)
            opt.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
            step += 1
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--loop-members", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="batched runs (median)")
    parser.add_argument("--accuracy", action="store_true", help="the accuracy table instead of the speed-up")
    parser.add_argument("--resnet-epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.accuracy:
        accuracy_table(args.members, args.resnet_epochs)
        return
    task, model, recipe = load_task("digits"), ModelOptions(), Recipe()
    assert recipe.optimizer == "sgd"
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    seeds = list(range(args.members))

    batched_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ensemble = fit(stack([init_member(model, task, s) for s in seeds], seeds), x, y, recipe)
        batched_times.append(time.perf_counter() - start)
    batched = statistics.median(batched_times)

    start = time.perf_counter()
    loop_members = [train_loop(task, model, recipe, s) for s in seeds[:args.loop_members]]
    per_member = (time.perf_counter() - start) / args.loop_members
    loop = per_member * args.members

    largest = max((ensemble.params[k][i] - net.state_dict()[k]).abs().max().item()
                  for i, net in enumerate(loop_members) for k in ensemble.params)
    accuracy = ensemble.accuracy(task.test.x, task.test.y)
    steps = recipe.epochs * math.ceil(len(y) / recipe.batch_size)
    print(f"digits MLP, {args.members} members, {recipe.epochs} epochs ({steps} steps each), "
          f"{args.threads} thread(s)")
    print(f"batched: {batched:.1f} s ({', '.join(f'{t:.1f}' for t in batched_times)})")
    print(f"loop:    {per_member:.2f} s per member over {args.loop_members} -> {loop:.1f} s for {args.members}")
    print(f"speed-up: {loop / batched:.1f}x")
    print(f"largest |batched - loop| weight difference over {args.loop_members} members: {largest:.2e}")
    print(f"test accuracy of the batched members: mean {np.mean(accuracy):.4f}, min {np.min(accuracy):.4f}, "
          f"max {np.max(accuracy):.4f}")


def accuracy_table(members: int, resnet_epochs: int) -> None:
    print(f"{'task':8} {'model':7} {'epochs':>6} {'seconds':>8}  test accuracy of {members} members")
    for source in ("digits", "mnist1d"):
        task = load_task(source)
        x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
        for kind in ("mlp", "cnn", "resnet"):
            model = ModelOptions(kind=kind)
            recipe = Recipe(epochs=resnet_epochs) if kind == "resnet" else Recipe()
            seeds = list(range(members))
            start = time.perf_counter()
            ensemble = fit(stack([init_member(model, task, s) for s in seeds], seeds), x, y, recipe)
            seconds = time.perf_counter() - start
            accuracy = ", ".join(f"{a:.3f}" for a in ensemble.accuracy(task.test.x, task.test.y))
            print(f"{source:8} {kind:7} {recipe.epochs:>6} {seconds:>8.1f}  {accuracy}", flush=True)


if __name__ == "__main__":
    main()
