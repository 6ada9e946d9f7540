"""The classifier unlearning methods: each member equals the method run on that model alone, and each method's
defining behaviour.

The reference loops below are written from the methods' definitions (module docstring of
``unlearnkit.classifier.unlearn``; OPTML-Group/Unlearn-Saliency ``unlearn/FT.py``, ``GA.py``, ``RL.py``; Kurmanji et
al. 2023 for NegGrad+): one ``nn.Module``, ``torch.optim.SGD``, ``F.cross_entropy`` means. They share with the library
only the per-member data order and random labels, which define which member sees what.
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from member_check import assert_each_member_is_its_own_run
from unlearnkit.classifier.data import retain_indices
from unlearnkit.classifier.ensemble import batch_order, train_ensemble
from unlearnkit.classifier.unlearn import PARAMS, random_labels, unlearn
from unlearnkit.errors import UnlearnkitError

OPTS = {"epochs": 2, "lr": 0.05, "batch_size": 16}


@pytest.fixture(scope="module")
def setup(digits120):
    task, original, forget, cache = digits120
    return task, original, forget, cache


def _sgd(net, o):
    return torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def _ce(net, x, index, labels):
    return F.cross_entropy(net(x[index]), labels[index])


def reference(method, net, seed, task, forget, o):
    net = copy.deepcopy(net)
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    retain = torch.as_tensor(retain_indices(task, forget))
    forget = torch.as_tensor(forget)
    opt = _sgd(net, o)

    def step(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    bs = o.batch_size
    forget_passes, pending = 0, []
    for epoch in range(o.epochs):
        if method == "finetune":
            order = retain[batch_order(seed, epoch, len(retain), 1)]
            for b in range(0, len(order), bs):
                step(_ce(net, x, order[b:b + bs], y))
        elif method == "ga":
            order = forget[batch_order(seed, epoch, len(forget), 1)]
            for b in range(0, len(order), bs):
                step(-_ce(net, x, order[b:b + bs], y))
        elif method == "random_labels":
            labels = y.clone()
            labels[forget] = random_labels(seed, epoch, len(forget), task.num_classes)
            both = torch.cat([forget, retain])
            order = both[batch_order(seed, epoch, len(both), 1)]
            for b in range(0, len(order), bs):
                step(_ce(net, x, order[b:b + bs], labels))
        else:  # neggrad_plus
            order = retain[batch_order(seed, epoch, len(retain), 1)]
            for b in range(0, len(order), bs):
                if not pending:
                    f_order = forget[batch_order(seed, forget_passes, len(forget), 3)]
                    pending = [f_order[i:i + bs] for i in range(0, len(f_order), bs)]
                    forget_passes += 1
                f_batch = pending.pop(0)
                step(o.beta * _ce(net, x, order[b:b + bs], y) - (1 - o.beta) * _ce(net, x, f_batch, y))
    return net


@pytest.mark.parametrize("method", ["finetune", "ga", "random_labels", "neggrad_plus"])
def test_each_member_equals_the_method_run_on_that_model_alone(setup, method):
    task, original, forget, _ = setup
    params = dict(OPTS, beta=0.7) if method == "neggrad_plus" else OPTS  # beta far from 1: the forget term counts
    opts = PARAMS[method](**params)
    assert_each_member_is_its_own_run(original, lambda: unlearn(original, task, forget, method, params),
                                      lambda model, seed: reference(method, model, seed, task, forget, opts), method)


def _forget_loss(ensemble, task, forget):
    logits = ensemble.logits(task.train.x[forget])
    y = torch.as_tensor(task.train.y[forget])
    return torch.stack([F.cross_entropy(member, y) for member in logits])


def test_gradient_ascent_raises_every_members_forget_loss(setup):
    task, original, forget, _ = setup
    result = unlearn(original, task, forget, "ga", {"epochs": 1, "lr": 0.05})
    assert (_forget_loss(result, task, forget) > _forget_loss(original, task, forget)).all()


@pytest.mark.parametrize("method", ["finetune", "retrain"])
def test_finetune_and_retrain_never_read_the_forget_examples(setup, method, tmp_path):
    task, original, forget, _ = setup
    noisy_x = task.train.x.copy()
    noisy_x[forget] = np.random.default_rng(0).normal(size=noisy_x[forget].shape)
    noisy = dataclasses.replace(task, train=dataclasses.replace(task.train, x=noisy_x))
    first = unlearn(original, task, forget, method, OPTS if method == "finetune" else {}, cache_dir=tmp_path / "a")
    second = unlearn(original, noisy, forget, method, OPTS if method == "finetune" else {}, cache_dir=tmp_path / "b")
    for k in first.params:
        torch.testing.assert_close(first.params[k], second.params[k], rtol=1e-5, atol=1e-6)


def test_retrain_is_training_from_scratch_without_the_forget_set(setup, tmp_path):
    task, original, forget, cache = setup
    retrained = unlearn(original, task, forget, "retrain", cache_dir=tmp_path)
    direct = train_ensemble(task, original.model, original.recipe, original.seeds, forget=forget, cache_dir=cache)
    for k in direct.params:
        torch.testing.assert_close(retrained.params[k], direct.params[k])
        assert not torch.allclose(retrained.params[k], original.params[k])


@pytest.mark.parametrize("method, params, words", [
    ("gradient_ascent", {}, "unknown classifier unlearning method 'gradient_ascent'"),
    ("ga", {"lr": -1}, "lr must be greater than 0"),
    ("neggrad_plus", {"beta": 1.0}, "beta must be less than 1"),
    ("finetune", {"epoch": 1}, "unknown option 'epoch'"),
])
def test_bad_method_or_parameters_are_one_line_errors(setup, method, params, words):
    task, original, forget, _ = setup
    with pytest.raises(UnlearnkitError, match=words):
        unlearn(original, task, forget, method, params)


def test_retrain_needs_the_original_recipe(setup):
    task, original, forget, _ = setup
    bare = dataclasses.replace(original, model=None, recipe=None)
    with pytest.raises(UnlearnkitError, match="retrain needs the original's model and recipe"):
        unlearn(bare, task, forget, "retrain")
