"""Classifier tasks and forget sets: fixed disjoint splits, the forget set each kind defines, one-line errors."""

import importlib.util
import random

import numpy as np
import pytest
from sklearn.datasets import load_digits

from unlearnkit.classifier.data import forget_indices, load_task, retain_indices
from unlearnkit.errors import UnlearnkitError


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


def _rows(split):
    return {row.tobytes() for row in split.x.reshape(len(split), -1)}


def test_digits_split_is_fixed_disjoint_stratified_and_complete():
    task = load_task("digits")
    again = load_task("digits")
    assert task.fingerprint == again.fingerprint
    assert np.array_equal(task.train.x, again.train.x)
    assert (len(task.train), len(task.test), len(task.holdout)) == (1257, 360, 180)  # 70 / 20 / 10 % of 1,797
    assert task.input_shape == (1, 8, 8) and task.num_classes == 10
    # the three splits are the 1,797 images of sklearn, each once, pixels / 16
    images = load_digits().data / 16.0
    together = np.concatenate([s.x.reshape(len(s), -1) for s in (task.train, task.test, task.holdout)])
    assert np.allclose(np.sort(together, axis=0), np.sort(images, axis=0))
    assert not (_rows(task.train) & _rows(task.test)) and not (_rows(task.train) & _rows(task.holdout))
    # stratified: every class is in every split, in about the same share
    for split in (task.test, task.holdout):
        share = np.bincount(split.y, minlength=10) / len(split)
        assert np.abs(share - np.bincount(task.train.y) / len(task.train)).max() < 0.02
    assert load_task("digits", {"split_seed": 1}).fingerprint != task.fingerprint


def test_random_forget_set_has_the_percent_asked_and_depends_on_its_seed_only(digits):
    task = digits
    forget = forget_indices(task, {"kind": "random", "percent": 10})
    assert len(forget) == round(0.1 * 1257) and len(set(forget)) == len(forget)
    assert np.array_equal(forget, np.sort(forget)) and forget.max() < 1257
    assert np.array_equal(forget, forget_indices(task, {"kind": "random", "percent": 10}))
    assert not np.array_equal(forget, forget_indices(task, {"kind": "random", "percent": 10, "seed": 1}))
    retain = retain_indices(task, forget)
    assert len(retain) + len(forget) == 1257 and not set(retain) & set(forget)


def test_class_forget_set_is_every_training_example_of_the_class(digits):
    task = digits
    forget = forget_indices(task, {"kind": "class", "label": 3})
    assert np.array_equal(forget, np.flatnonzero(task.train.y == 3))
    assert 3 not in task.train.y[retain_indices(task, forget)]


def test_arrays_with_subclasses_and_own_test_set(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)), np.repeat([0, 1, 2], 20)
    sub = np.tile([0, 1], 30)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y, subclasses=sub, x_test=rng.normal(size=(9, 5)), y_test=np.repeat([0, 1, 2], 3))
    task = load_task("arrays", {"path": str(path), "holdout_fraction": 0.2})
    assert (len(task.train), len(task.test), len(task.holdout)) == (48, 9, 12)
    assert task.num_classes == 3 and task.input_shape == (5,)
    forget = forget_indices(task, {"kind": "subclass", "label": 1, "subclass": 0})
    assert len(forget) > 0
    assert (task.train.y[forget] == 1).all() and (task.train.subclasses[forget] == 0).all()
    others = np.setdiff1d(np.arange(48), forget)
    assert not ((task.train.y[others] == 1) & (task.train.subclasses[others] == 0)).any()


@pytest.mark.skipif(importlib.util.find_spec("mnist1d") is None, reason="mnist1d is not installed")
def test_mnist1d_is_generated_locally_and_leaves_the_global_generators_alone():
    random.seed(7)
    np.random.seed(7)
    expected = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    task = load_task("mnist1d", {"num_samples": 200})
    assert (random.random(), np.random.rand()) == expected
    assert (len(task.train), len(task.test), len(task.holdout)) == (144, 40, 16)  # 80 % train, 10 % of it held out
    assert task.input_shape == (1, 40) and task.num_classes == 10
    assert load_task("mnist1d", {"num_samples": 200}).fingerprint == task.fingerprint


@pytest.mark.parametrize("source, options, words", [
    ("digitz", {}, "unknown classifier task source 'digitz'"),
    ("digits", {"test_frac": 0.1}, "unknown option 'test_frac'"),
    ("digits", {"test_fraction": 0.9}, "test_fraction must be less than 0.5"),
    ("arrays", {}, "option 'path' is required"),
    ("arrays", {"path": "/nonexistent.npz"}, "is not a file"),
    ("torchvision", {"name": "SVHN", "root": "/x"}, "name must be"),
])
def test_bad_task_options_are_one_line_errors(source, options, words):
    with pytest.raises(UnlearnkitError, match=words) as caught:
        load_task(source, options)
    assert "\n" not in str(caught.value)


def test_bad_arrays_are_named(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((4, 3)), y=np.array([0.5, 1, 0, 1]))
    with pytest.raises(UnlearnkitError, match="y in .* must be 4 integers"):
        load_task("arrays", {"path": str(path)})
    np.savez(path, x=np.zeros((10, 3)), y=np.arange(10) % 2, x_test=np.zeros((2, 3)), y_test=np.array([0, 1]))
    with pytest.raises(UnlearnkitError, match="test_fraction is set but .* has its own test arrays"):
        load_task("arrays", {"path": str(path), "test_fraction": 0.3})


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_without_the_package_says_how_to_install_it():
    with pytest.raises(UnlearnkitError, match="needs torchvision: pip install torchvision"):
        load_task("torchvision", {"name": "CIFAR10", "root": "/data"})


@pytest.mark.parametrize("options, words", [
    ({"kind": "random"}, "'random' forget set needs percent"),
    ({"kind": "class", "label": 3, "percent": 5}, "does not use percent"),
    ({"kind": "class", "label": 10}, "label 10 is not a class"),
    ({"kind": "subclass", "label": 1, "subclass": 0}, "has no sub-class labels"),
    ({"kind": "random", "percent": 0.01}, "between 1 and 1256"),
])
def test_bad_forget_sets_are_one_line_errors(digits, options, words):
    with pytest.raises(UnlearnkitError, match=words):
        forget_indices(digits, options)


@pytest.mark.parametrize("forget, words", [
    (np.array([1, 1]), "distinct integers"),
    (np.array([0.5]), "distinct integers"),
    (np.array([5, 1257]), r"index the 1257 training examples of 'digits' \(0..1256\)"),
    (np.arange(1257), "nothing would be retained"),
])
def test_bad_forget_indices_are_one_line_errors(digits, forget, words):
    with pytest.raises(UnlearnkitError, match=words):
        retain_indices(digits, forget)


def test_torchvision_datasets_become_channels_first_standardised_splits(monkeypatch):
    """A stand-in for torchvision (not needed to run the suite): CIFAR-like (n, H, W, C) uint8 images."""
    import importlib.machinery
    import sys
    import types

    rng = np.random.default_rng(0)

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            assert download is False
            self.classes = [str(i) for i in range(10)]
            n = 50 if train else 20
            self.data = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
            self.targets = list(np.arange(n) % 10)

    fake = types.ModuleType("torchvision")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    fake.datasets = types.SimpleNamespace(CIFAR10=FakeCIFAR10)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    task = load_task("torchvision", {"name": "CIFAR10", "root": "/data", "holdout_fraction": 0.2})
    assert (len(task.train), len(task.test), len(task.holdout)) == (40, 20, 10)
    assert task.input_shape == (3, 4, 4) and task.num_classes == 10
    pool = np.concatenate([task.train.x, task.holdout.x])
    assert np.allclose(pool.mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(pool.std(axis=(0, 2, 3)), 1, atol=1e-4)
