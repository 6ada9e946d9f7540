"""Datamodel matching (DMM) and oracle matching (OM) (Georgiev, Rinberg, Park, Garg, Ilyas, Madry, Neel:
"Attribute-to-Delete: Machine Unlearning via Datamodel Matching", 2024, arXiv 2410.23232; unlearnkit research notes:
methods.md §8, from the paper's code: ``oracle_matching``, ``dm_matching``, ``DatamodelWrappedModel``).

Both fine-tune each model to output, on the forget set F and on a random retain subset, the logits a model
retrained without F would give:

- ``oracle_matching`` (OM): the targets are the mean logits of ``num_oracles`` real retrained models (the oracles:
  ``train_ensemble(..., forget=F)`` with the original's model and recipe, seeds ``oracle_seed``,
  ``oracle_seed + 1``, ...; cached like ``retrain``). OM needs retraining itself; in the paper it shows what
  matching the true targets achieves, and DMM replaces the oracles by the datamodels' predictions.
- ``dmm``: the targets are *predicted* by datamodels, f̂(x) = f_θ₀(x) − m · Σ_{i∈F} β_i(x), with f_θ₀ the model being
  unlearned and β[i, j, c] the datamodel score of training example i on the logit c of training example j (e.g.
  TRAK scores), read from the user's ``datamodels`` .npy file of shape (train size, train size, classes).
  unlearnkit does not estimate datamodels: ``dmm`` needs that file.

Fine-tuning, per model: the data are F and ``retain_multiplier`` · |F| retain examples drawn at random (without
replacement; all of the retain set if fewer); the loss is the mean squared error between logits and targets (mean
over the batch and the classes, ``nn.MSELoss``), plus ``wd_lambda`` · ‖θ − θ₀‖²; Adam (lr 5e-4), the learning rate
multiplied by ``lr_decay`` = 0.95 after each epoch (``ExponentialLR``), 5 epochs, batch 512 (the code's defaults as
recorded in research/methods.md §8; ``num_oracles`` = 10 likewise).

[choices] The retain subset is drawn once per model, from its seed (stream 4), not per epoch; each epoch visits that
model's F ∪ subset in its own order (stream 5). The oracle seeds default to 1,000,000 onwards, so that the oracles are
not the retrained models an evaluation compares with (seeds 0..N−1 in the benchmarks): matching the very models
a score is measured against would be circular. The code's AMP autocast is left out (CPU, float32). Its
``forget_multiplier`` (F repeated) is not implemented (its default, 1, is the behaviour here).

Every member's loss is its own (summed over members) and Adam acts element by element, so member i is the method run
on model i alone. Cost: the oracles' training (OM, cached; or reading β for DMM), a forward of the originals (DMM) or
the oracles (OM) for the targets, then per epoch one forward and backward of each member over (1 + 3)·|F| examples.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch.func import vmap

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble, batch_order, call, member_generator, train_ensemble
from unlearnkit.classifier.options import Options
from unlearnkit.errors import DataError, UnlearnkitError

SUBSET_STREAM, ORDER_STREAM = 4, 5  # the random streams of the retain subset and of the data order


class MatchingParams(Options):
    epochs: int = Field(5, ge=1, description="passes over the matched examples")
    lr: float = Field(5e-4, gt=0, description="Adam learning rate of the first epoch")
    lr_decay: float = Field(0.95, gt=0, le=1, description="learning rate multiplied by this after each epoch")
    batch_size: int = Field(512, ge=1, description="examples per step and member")
    retain_multiplier: float = Field(3.0, ge=0, description="retain examples matched, as a multiple of |forget|")
    wd_lambda: float = Field(0.0, ge=0, description="weight of ‖θ − θ₀‖² in the loss")


class OracleMatchingParams(MatchingParams):
    num_oracles: int = Field(10, ge=1, description="retrained models whose mean logits are the targets")
    oracle_seed: int = Field(1_000_000, ge=0, description="seed of the first oracle (the others follow)")


class DMMParams(MatchingParams):
    datamodels: str = Field(description=".npy of datamodel scores β, shape (train size, train size, classes)")
    dm_multiplier: float = Field(1.0, description="m in f̂(x) = f_θ₀(x) − m · Σ_{i∈F} β_i(x)")


def matched_points(seeds: list[int], forget: np.ndarray, retain: np.ndarray, multiplier: float) -> np.ndarray:
    """Each member's examples to match: F then its random retain subset, (members, |F| + k) indices into train."""
    k = min(len(retain), round(multiplier * len(forget)))
    rows = []
    for seed in seeds:
        pick = torch.randperm(len(retain), generator=member_generator(seed, 0, SUBSET_STREAM))[:k].numpy()
        rows.append(np.concatenate([forget, retain[np.sort(pick)]]))
    return np.stack(rows)


def match(original: Ensemble, x: np.ndarray, points: np.ndarray, targets: torch.Tensor,
          opts: MatchingParams) -> Ensemble:
    """Adam on Σ_m MSE(f_m(x[points[m]]), targets[m]) (+ wd_lambda · ‖θ_m − θ_m,0‖²): ``targets`` is
    (members, points, classes), aligned with ``points`` (members, points)."""
    device = next(iter(original.params.values())).device
    result = copy.copy(original)
    start = {k: v.detach().clone() for k, v in original.params.items()}
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=opts.lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=opts.lr_decay)
    x, points, targets = torch.as_tensor(x, device=device), torch.as_tensor(points), targets.to(device)
    run = vmap(call(original.template, False))
    for epoch in range(opts.epochs):
        order = torch.stack([batch_order(s, epoch, points.shape[1], ORDER_STREAM) for s in original.seeds])
        for b in range(0, order.shape[1], opts.batch_size):
            slot = order[:, b:b + opts.batch_size]  # positions in each member's row of points
            index = torch.gather(points, 1, slot).to(device)
            goal = torch.gather(targets, 1, slot.to(device)[..., None].expand(-1, -1, targets.shape[-1]))
            logits = run(params, original.buffers, x[index])
            loss = ((logits - goal) ** 2).flatten(1).mean(1).sum()  # each member's nn.MSELoss, summed
            if opts.wd_lambda:
                loss = loss + opts.wd_lambda * sum(((p - start[k]) ** 2).sum() for k, p in params.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
    result.params = {k: v.detach() for k, v in params.items()}
    return result


def oracle_targets(original: Ensemble, task: ClassifierTask, forget: np.ndarray, opts: OracleMatchingParams,
                   cache_dir: Path | None) -> Ensemble:
    """The oracles: ``num_oracles`` models retrained without ``forget`` (the original's model and recipe)."""
    if original.model is None or original.recipe is None:
        raise UnlearnkitError("oracle_matching trains retrained oracles with the original's model and recipe: "
                              "train the original with train_ensemble")
    seeds = list(range(opts.oracle_seed, opts.oracle_seed + opts.num_oracles))
    return train_ensemble(task, original.model, original.recipe, seeds, forget=forget, cache_dir=cache_dir,
                          device=next(iter(original.params.values())).device)


def oracle_matching(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
                    opts: OracleMatchingParams, cache_dir: Path | None = None) -> Ensemble:
    oracles = oracle_targets(original, task, forget, opts, cache_dir)
    points = matched_points(original.seeds, forget, retain, opts.retain_multiplier)
    unique, where = np.unique(points, return_inverse=True)
    mean = oracles.logits(task.train.x[unique]).mean(0)  # (unique points, classes)
    return match(original, task.train.x, points, mean[torch.as_tensor(where.reshape(points.shape))], opts)


def read_datamodels(path: str, n: int, classes: int) -> np.ndarray:
    """The β array of ``path`` (memory-mapped), checked to be (n, n, classes)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"dmm: datamodels file {str(file)!r} not found: give a .npy of shape ({n}, {n}, {classes})")
    try:
        beta = np.load(file, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"dmm: datamodels file {str(file)!r} is not a .npy array ({exc})") from None
    if beta.shape != (n, n, classes):
        raise DataError(f"dmm: datamodels in {str(file)!r} have shape {beta.shape}; the task needs ({n}, {n}, "
                        f"{classes}): β[i, j, c], training example i's score on logit c of training example j")
    return beta


def datamodel_targets(original: Ensemble, x: np.ndarray, beta: np.ndarray, forget: np.ndarray,
                      points: np.ndarray, multiplier: float) -> torch.Tensor:
    """f̂_m(x_j) = f_θ₀,m(x_j) − multiplier · Σ_{i∈F} β[i, j] for each member m and its points j."""
    unique, where = np.unique(points, return_inverse=True)
    shift = np.zeros((len(unique), beta.shape[2]))
    for i in forget:  # one row of β at a time: the file may be large
        shift += np.asarray(beta[i][unique], dtype=np.float64)
    logits = original.logits(x[unique])  # (members, unique points, classes)
    predicted = logits - multiplier * torch.as_tensor(shift, dtype=logits.dtype, device=logits.device)
    return torch.stack([predicted[m, torch.as_tensor(where.reshape(points.shape)[m])] for m in range(len(points))])


def dmm(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray,
        opts: DMMParams) -> Ensemble:
    beta = read_datamodels(opts.datamodels, len(task.train), task.num_classes)
    points = matched_points(original.seeds, forget, retain, opts.retain_multiplier)
    targets = datamodel_targets(original, task.train.x, beta, forget, points, opts.dm_multiplier)
    return match(original, task.train.x, points, targets, opts)
