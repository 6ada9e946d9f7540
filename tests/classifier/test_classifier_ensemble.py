"""The batched ensemble equals N models trained one at a time, and its cache resumes instead of retraining.

The reference, ``train_alone``, is a deliberately plain loop: one ``nn.Module``, one torch optimizer, the batches of
``batch_order(seed, epoch, n)`` in turn, the learning rate of the cosine schedule written out here. Members share
with it only what defines a member (its initialisation ``init_member(seed)`` and its data order), never the training
code, so a member that saw another member's batch or gradient, or a wrong schedule, fails the comparison.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unlearnkit.classifier.ensemble as ensemble_module
from unlearnkit.classifier.data import load_task
from unlearnkit.classifier.ensemble import (
    Recipe,
    batch_order,
    init_member,
    train_ensemble,
)
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.errors import UnlearnkitError


@pytest.fixture(scope="module")
def task():
    full = load_task("digits")
    return dataclasses.replace(full, train=full.train.subset(np.arange(100)))  # 100 = 3 batches of 32 + one of 4


def train_alone(task, model, recipe, seed, keep):
    net = init_member(model, task, seed)
    x, y = torch.as_tensor(task.train.x[keep]), torch.as_tensor(task.train.y[keep])
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = math.ceil(len(y) / recipe.batch_size)
    total, step = recipe.epochs * steps, 0
    for epoch in range(recipe.epochs):
        order = batch_order(seed, epoch, len(y))
        for b in range(steps):
            batch = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            lr = recipe.lr if recipe.schedule == "constant" else recipe.lr * (1 + math.cos(math.pi * step / total)) / 2
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
            step += 1
    return net


def assert_members_equal_alone(ens, task, model, recipe, keep):
    for i, seed in enumerate(ens.seeds):
        alone = train_alone(task, model, recipe, seed, keep).state_dict()
        member = ens.member(i).state_dict()
        assert member.keys() == alone.keys()
        for name in alone:
            torch.testing.assert_close(member[name], alone[name], rtol=1e-4, atol=2e-5, msg=f"seed {seed} {name}")


@pytest.mark.parametrize("model, recipe", [
    (ModelOptions(kind="mlp", width=32), Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=2,
                                                batch_size=32, schedule="cosine")),
    (ModelOptions(kind="cnn", width=4), Recipe(optimizer="adam", lr=3e-3, epochs=1, batch_size=32,
                                               schedule="constant")),
    (ModelOptions(kind="resnet", width=8, depth=1), Recipe(optimizer="sgd", lr=0.05, epochs=1, batch_size=32)),
], ids=["mlp-sgd-cosine", "cnn-adam", "resnet-sgd"])
def test_batched_members_equal_models_trained_alone(task, model, recipe, tmp_path):
    ens = train_ensemble(task, model, recipe, [0, 5, 11], cache_dir=tmp_path)
    assert_members_equal_alone(ens, task, model, recipe, np.arange(100))
    # and they differ from one another: each has its own initialisation and data order
    first = next(iter(ens.params.values()))
    assert not torch.allclose(first[0], first[1])


def test_retrained_members_never_see_the_forget_set(task, tmp_path):
    model, recipe = ModelOptions(width=16), Recipe(epochs=2, batch_size=32)
    forget = np.arange(0, 100, 7)
    retrained = train_ensemble(task, model, recipe, [3, 4], forget=forget, cache_dir=tmp_path)
    assert_members_equal_alone(retrained, task, model, recipe, np.setdiff1d(np.arange(100), forget))
    original = train_ensemble(task, model, recipe, [3, 4], cache_dir=tmp_path)
    assert not torch.allclose(original.params["head.weight"], retrained.params["head.weight"])


def test_logits_and_accuracy_are_each_members_own(task, tmp_path):
    ens = train_ensemble(task, ModelOptions(width=16), Recipe(epochs=1), [1, 2], cache_dir=tmp_path)
    x = torch.as_tensor(task.test.x[:50])
    logits = ens.logits(x, batch_size=16)
    assert logits.shape == (2, 50, 10)
    for i in range(2):
        with torch.no_grad():
            torch.testing.assert_close(logits[i], ens.member(i)(x))
            torch.testing.assert_close(ens.logits(x, penultimate=True)[i], ens.member(i)(x, penultimate=True))
        expected = (ens.member(i)(x).argmax(1).numpy() == task.test.y[:50]).mean()
        assert ens.accuracy(x, task.test.y[:50])[i] == pytest.approx(expected)


def test_cache_trains_only_missing_members_and_reads_the_rest(task, tmp_path, monkeypatch):
    model, recipe = ModelOptions(width=16), Recipe(epochs=1)
    first = train_ensemble(task, model, recipe, [0, 1], cache_dir=tmp_path)
    trained = []
    real_fit = ensemble_module.fit

    def counting_fit(ens, x, y, rec):
        trained.extend(ens.seeds)
        return real_fit(ens, x, y, rec)

    monkeypatch.setattr(ensemble_module, "fit", counting_fit)
    second = train_ensemble(task, model, recipe, [1, 2, 0], cache_dir=tmp_path, chunk_size=1)
    assert trained == [2]
    assert second.seeds == [1, 2, 0]
    for name, stacked in first.params.items():
        assert torch.equal(second.params[name][0], stacked[1]) and torch.equal(second.params[name][2], stacked[0])
    train_ensemble(task, model, recipe, [0, 1, 2], cache_dir=tmp_path)
    assert trained == [2]  # nothing more to train
    train_ensemble(task, model, Recipe(epochs=2), [0], cache_dir=tmp_path)
    assert trained == [2, 0]  # another recipe is another cache entry
    train_ensemble(task, ModelOptions(width=128), recipe, [0], cache_dir=tmp_path)
    assert trained == [2, 0, 0]  # another width too
    train_ensemble(task, ModelOptions(), recipe, [5], cache_dir=tmp_path)
    train_ensemble(task, ModelOptions(width=128), recipe, [5], cache_dir=tmp_path)
    assert trained == [2, 0, 0, 5]  # the default width spelt out is the same entry
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".tmp")]


@pytest.mark.parametrize("seeds", [[], [1, 1], [-1]])
def test_bad_seeds_are_one_line_errors(task, tmp_path, seeds):
    with pytest.raises(UnlearnkitError, match="seeds must be distinct"):
        train_ensemble(task, {}, {}, seeds, cache_dir=tmp_path)


def test_bad_recipe_is_a_one_line_error(task, tmp_path):
    with pytest.raises(UnlearnkitError, match="classifier training recipe: unknown option 'epoch'"):
        train_ensemble(task, {}, {"epoch": 3}, [0], cache_dir=tmp_path)
