"""Oracle matching and datamodel matching on classifiers (``unlearnkit.classifier.dmm``): Georgiev et al. 2024,
arXiv 2410.23232, research/methods.md §8 (Adam, ExponentialLR per epoch, ``nn.MSELoss`` on logits over F and
retain_multiplier·|F| retain examples; OM targets: the mean logits of retrained oracles; DMM targets:
f_θ₀(x) − m·Σ_{i∈F} β_i(x)).

The references: one ``nn.Module`` per member with ``torch.optim.Adam``, ``ExponentialLR`` and ``nn.MSELoss``; the
targets recomputed here by a loop over oracles (one module each) or over forget indices and points. They share with
the library only each member's random retain subset and data order. Margins: ``evaluation.metrics.klom``.
"""

import dataclasses

import numpy as np
import pytest
import torch

from unlearnkit.classifier.data import load_task, retain_indices
from unlearnkit.classifier.dmm import ORDER_STREAM, SUBSET_STREAM
from unlearnkit.classifier.ensemble import Recipe, batch_order, member_generator, train_ensemble
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.unlearn import unlearn
from unlearnkit.errors import DataError, UnlearnkitError
from unlearnkit.evaluation.metrics.klom import margins

RECIPE = Recipe(epochs=10, batch_size=32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    full = load_task("digits")
    task = dataclasses.replace(full, train=full.train.subset(np.arange(150)))
    cache = tmp_path_factory.mktemp("cache")
    original = train_ensemble(task, ModelOptions(width=16), RECIPE, [2, 9], cache_dir=cache)
    forget = np.flatnonzero(task.train.y == 3)  # a class: the oracles' outputs on it differ from the originals'
    return task, original, forget, cache


def points_alone(seed, forget, retain, multiplier):
    k = min(len(retain), round(multiplier * len(forget)))
    pick = torch.randperm(len(retain), generator=member_generator(seed, 0, SUBSET_STREAM))[:k]
    return np.concatenate([forget, retain[np.sort(pick.numpy())]])


def match_alone(net, seed, x, points, targets, o):
    """targets: (len(points), classes), row i the target of x[points[i]]."""
    start = {k: p.detach().clone() for k, p in net.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=o["lr"])
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=o["lr_decay"])
    mse = torch.nn.MSELoss()
    x = torch.as_tensor(x)
    for epoch in range(o["epochs"]):
        order = batch_order(seed, epoch, len(points), ORDER_STREAM)
        for b in range(0, len(order), o["batch_size"]):
            slot = order[b:b + o["batch_size"]]
            loss = mse(net(x[points[slot.numpy()]]), targets[slot])
            loss = loss + o["wd_lambda"] * sum(((p - start[k]) ** 2).sum() for k, p in net.named_parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    return net


OPTS = {"epochs": 3, "lr": 5e-3, "lr_decay": 0.8, "batch_size": 16, "retain_multiplier": 2.0, "wd_lambda": 0.1}


def test_oracle_matching_equals_the_loop_on_each_model(setup):
    task, original, forget, cache = setup
    o = dict(OPTS, num_oracles=2, oracle_seed=500)
    result = unlearn(original, task, forget, "oracle_matching", o, cache_dir=cache)
    oracles = train_ensemble(task, ModelOptions(width=16), RECIPE, [500, 501], forget=forget, cache_dir=cache)
    retain = retain_indices(task, forget)
    x = torch.as_tensor(task.train.x)
    for m, seed in enumerate(original.seeds):
        points = points_alone(seed, forget, retain, 2.0)
        assert len(points) == 3 * len(forget) and len(set(points)) == len(points)
        with torch.no_grad():
            targets = sum(oracles.member(k)(x[points]) for k in range(2)) / 2
        expected = match_alone(original.member(m), seed, task.train.x, points, targets, o).state_dict()
        got = result.member(m).state_dict()
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5, msg=k)


def test_oracle_matching_brings_the_forget_outputs_and_margins_to_the_oracles(setup):
    task, original, forget, cache = setup
    o = {"num_oracles": 4, "oracle_seed": 700, "epochs": 40, "lr": 1e-2, "batch_size": 32}
    result = unlearn(original, task, forget, "oracle_matching", o, cache_dir=cache)
    oracles = train_ensemble(task, ModelOptions(width=16), RECIPE, list(range(700, 704)), forget=forget,
                             cache_dir=cache)
    x, y = task.train.x[forget], task.train.y[forget]
    target = oracles.logits(x).mean(0)
    gap = lambda ens: ((ens.logits(x) - target) ** 2).mean().item()  # noqa: E731
    assert gap(result) < gap(original) / 20  # measured: 4.4 → 0.018
    # the margins (KLOM's statistic) of each forget point move to the oracles' mean margin
    oracle_margin = margins(oracles.logits(x).numpy(), y).mean(0)
    before = np.abs(margins(original.logits(x).numpy(), y) - oracle_margin).mean()
    after = np.abs(margins(result.logits(x).numpy(), y) - oracle_margin).mean()
    assert after < before / 5  # measured: 5.7 → 0.24
    # KLOM itself is not asserted here: with a handful of models its 20 bins are mostly empty (two sets of 8
    # retrained models score about 7 against each other), so it only approaches 0 with hundreds of models


def test_dmm_targets_and_run_equal_the_loop(setup, tmp_path):
    task, original, forget, _ = setup
    n, c = len(task.train), task.num_classes
    beta = np.random.default_rng(0).normal(0, 0.05, (n, n, c)).astype(np.float32)
    np.save(tmp_path / "beta.npy", beta)
    o = dict(OPTS, datamodels=str(tmp_path / "beta.npy"), dm_multiplier=0.7)
    result = unlearn(original, task, forget, "dmm", o)
    retain = retain_indices(task, forget)
    x = torch.as_tensor(task.train.x)
    for m, seed in enumerate(original.seeds):
        points = points_alone(seed, forget, retain, 2.0)
        net = original.member(m)
        with torch.no_grad():
            own = net(x[points])
        targets = torch.stack([own[j] - 0.7 * torch.as_tensor(sum(beta[i, p].astype(np.float64) for i in forget),
                                                              dtype=torch.float32) for j, p in enumerate(points)])
        expected = match_alone(net, seed, task.train.x, points, targets, o).state_dict()
        got = result.member(m).state_dict()
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5, msg=k)


def test_dmm_with_exact_datamodels_is_oracle_matching(setup, tmp_path):
    """β that predicts the oracles exactly for a model (Σ_{i∈F} β_i = f_θ₀ − mean oracle) turns DMM into OM."""
    task, original, forget, cache = setup
    one = dataclasses.replace(original, params={k: v[:1] for k, v in original.params.items()},
                              buffers={k: v[:1] for k, v in original.buffers.items()}, seeds=original.seeds[:1])
    oracles = train_ensemble(task, ModelOptions(width=16), RECIPE, [500, 501], forget=forget, cache_dir=cache)
    beta = np.zeros((len(task.train), len(task.train), task.num_classes), np.float32)
    beta[forget[0]] = (one.logits(task.train.x)[0] - oracles.logits(task.train.x).mean(0)).numpy()
    np.save(tmp_path / "beta.npy", beta)
    o = dict(OPTS, epochs=2)
    via_dm = unlearn(one, task, forget, "dmm", dict(o, datamodels=str(tmp_path / "beta.npy")))
    via_om = unlearn(one, task, forget, "oracle_matching", dict(o, num_oracles=2, oracle_seed=500), cache_dir=cache)
    for k in via_om.params:
        torch.testing.assert_close(via_dm.params[k], via_om.params[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make, words", [
    (None, "datamodels file .* not found"),
    (lambda p: np.save(p, np.zeros((3, 3, 10), np.float32)),
     r"have shape \(3, 3, 10\); the task needs \(150, 150, 10\)"),
    (lambda p: p.write_bytes(b"not an array"), "is not a .npy array"),
])
def test_bad_datamodels_are_one_line_data_errors(setup, tmp_path, make, words):
    task, original, forget, _ = setup
    path = tmp_path / "beta.npy"
    if make:
        make(path)
    with pytest.raises(DataError, match=words) as info:
        unlearn(original, task, forget, "dmm", {"datamodels": str(path)})
    assert "\n" not in str(info.value)


def test_dmm_needs_its_datamodels_option(setup):
    task, original, forget, _ = setup
    with pytest.raises(UnlearnkitError, match="option 'datamodels' is required"):
        unlearn(original, task, forget, "dmm", {})
