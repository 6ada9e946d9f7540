"""Classifier tasks: fixed train / test / held-out splits, and the forget sets drawn from the training split.

Sources (``load_task(source, options)``, options in ``options.TASK_OPTIONS``):

- ``digits``: scikit-learn's bundled 8×8 digits, pixels / 16, shape (n, 1, 8, 8); test and held-out sets cut from
  the one pool by a class-stratified split (``test_fraction``, ``holdout_fraction``, ``split_seed``).
- ``mnist1d``: MNIST-1D generated locally with ``mnist1d.data.make_dataset`` (the package's ``get_dataset`` would
  download a pickle; ``make_dataset`` only computes), shape (n, 1, 40), already standardised by the generator. Its
  test set is the generator's own tail split; the held-out set is cut from its training part.
- ``arrays``: the user's .npz (``x``, ``y``; optional ``x_test``/``y_test``, ``x_holdout``/``y_holdout``, and
  ``subclasses``/``subclasses_test``/``subclasses_holdout`` for sub-class forget sets), used as given (layout
  (n, C, ...) for the CNN and ResNet).
- ``torchvision``: MNIST, FashionMNIST, CIFAR-10/100 from files already on disk (never downloaded), scaled to
  [0, 1] and standardised per channel by the training split's statistics.

Forget sets (:func:`forget_indices`): a random ``percent`` of the training split, one class, or one sub-class; sorted
indices into ``task.train``. The ``worst_case`` kind needs the trained models: ``worst_case.forget_set`` selects it
(and hands every other kind to :func:`forget_indices`). Every problem is a one-line :class:`UnlearnkitError` raised before any training.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from sklearn.model_selection import train_test_split

from unlearnkit.classifier.options import (
    TASK_OPTIONS,
    ArraysOptions,
    DigitsOptions,
    ForgetOptions,
    Mnist1dOptions,
    SplitOptions,
    TorchvisionOptions,
    check,
)
from unlearnkit.errors import UnlearnkitError


@dataclass(frozen=True)
class Split:
    """Examples ``x`` (float32, (n, *input_shape)), labels ``y`` (int64), optional fine labels ``subclasses``."""

    x: np.ndarray
    y: np.ndarray
    subclasses: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Split:
        sub = None if self.subclasses is None else self.subclasses[indices]
        return Split(self.x[indices], self.y[indices], sub)


@dataclass(frozen=True)
class ClassifierTask:
    """A classification task with its fixed splits. ``fingerprint`` identifies the data (for caches)."""

    name: str
    train: Split
    test: Split
    holdout: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @cached_property
    def fingerprint(self) -> str:
        digest = xxhash.xxh3_64(self.name.encode())
        for split in (self.train, self.test, self.holdout):
            for array in (split.x, split.y, split.subclasses):
                if array is not None:
                    digest.update(str(array.shape).encode())
                    digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def load_task(source: str, options: dict[str, Any] | None = None) -> ClassifierTask:
    """The task of ``source`` (digits, mnist1d, arrays, torchvision) with ``options`` checked against its options."""
    if source not in TASK_OPTIONS:
        raise UnlearnkitError(f"unknown classifier task source {source!r}: use one of {', '.join(TASK_OPTIONS)}")
    opts = check(TASK_OPTIONS[source], dict(options or {}), f"classifier task {source!r}")
    return _LOADERS[source](opts)


def forget_indices(task: ClassifierTask, options: ForgetOptions | dict[str, Any]) -> np.ndarray:
    """Sorted indices into ``task.train`` of the examples to forget; the rest is the retain set."""
    if not isinstance(options, ForgetOptions):
        options = check(ForgetOptions, dict(options), "forget set")
    y, n = task.train.y, len(task.train)
    if options.kind == "random":
        count = round(options.percent / 100 * n)
        if not 1 <= count < n:
            raise UnlearnkitError(f"forget set: {options.percent}% of {n} training examples is {count} examples; "
                                  f"choose a percent that gives between 1 and {n - 1}")
        chosen = np.random.default_rng(options.seed).choice(n, size=count, replace=False)
        return np.sort(chosen).astype(np.int64)
    if options.kind == "worst_case":  # selected on trained models, which this layer does not have
        raise UnlearnkitError("a 'worst_case' forget set is selected on the trained models: call "
                              "unlearnkit.classifier.worst_case.forget_set(task, options, original)")
    if options.label >= task.num_classes:
        raise UnlearnkitError(f"forget set: label {options.label} is not a class of {task.name!r} "
                              f"(labels 0..{task.num_classes - 1})")
    keep = y == options.label
    if options.kind == "subclass":
        if task.train.subclasses is None:
            raise UnlearnkitError(f"forget set: task {task.name!r} has no sub-class labels; use the arrays source "
                                  "with a 'subclasses' array, or a 'random' or 'class' forget set")
        keep &= task.train.subclasses == options.subclass
    chosen = np.flatnonzero(keep)
    if len(chosen) == 0:
        what = f"class {options.label}" + (f" sub-class {options.subclass}" if options.kind == "subclass" else "")
        raise UnlearnkitError(f"forget set: no training example of {task.name!r} is in {what}; choose another")
    if len(chosen) == n:
        raise UnlearnkitError(f"forget set: every training example of {task.name!r} would be forgotten")
    return chosen.astype(np.int64)


def retain_indices(task: ClassifierTask, forget: np.ndarray) -> np.ndarray:
    """Sorted indices into ``task.train`` of every example not in ``forget`` (checked: distinct, in range, not all)."""
    forget = np.asarray(forget)
    n = len(task.train)
    if forget.ndim != 1 or not np.issubdtype(forget.dtype, np.integer) or len(np.unique(forget)) != len(forget):
        raise UnlearnkitError(f"forget indices must be distinct integers, got {forget.dtype} {forget.shape}")
    if len(forget) and (forget.min() < 0 or forget.max() >= n):
        raise UnlearnkitError(f"forget indices must index the {n} training examples of {task.name!r} (0..{n - 1}), "
                              f"got {forget.min()}..{forget.max()}")
    if len(forget) == n:
        raise UnlearnkitError(f"the forget set is every training example of {task.name!r}: nothing would be retained")
    mask = np.ones(n, dtype=bool)
    mask[forget] = False
    return np.flatnonzero(mask)


# --- sources ------------------------------------------------------------------------------------------------------

def _digits(opts: DigitsOptions) -> ClassifierTask:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    train, test, holdout = _split_pool(Split(x, bunch.target.astype(np.int64)), opts)
    return ClassifierTask("digits", train, test, holdout, 10)


def _mnist1d(opts: Mnist1dOptions) -> ClassifierTask:
    if importlib.util.find_spec("mnist1d") is None:
        raise UnlearnkitError("task source 'mnist1d' needs the mnist1d package: pip install 'unlearnkit[classifier]'")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = opts.num_samples, opts.data_seed, 1.0 - opts.test_fraction
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset seeds (and so overwrites) the global random generators: give the caller's back
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    pool = Split(data["x"][:, None, :].astype(np.float32), data["y"].astype(np.int64))
    test = Split(data["x_test"][:, None, :].astype(np.float32), data["y_test"].astype(np.int64))
    train, holdout = _cut(pool, opts.holdout_fraction, opts.split_seed)
    return ClassifierTask("mnist1d", train, test, holdout, 10)


def _arrays(opts: ArraysOptions) -> ClassifierTask:
    path = Path(opts.path)
    if not path.is_file():
        raise UnlearnkitError(f"classifier task 'arrays': {path} is not a file; give the path of a .npz with x and y")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise UnlearnkitError(f"classifier task 'arrays': cannot read {path} as a .npz ({exc})") from None
    known = {"x", "y", "subclasses", "x_test", "y_test", "subclasses_test", "x_holdout", "y_holdout",
             "subclasses_holdout"}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise UnlearnkitError(f"classifier task 'arrays': {path} has unknown arrays {unknown}; "
                              f"the names are {', '.join(sorted(known))}")
    pool = _read_split(arrays, "", path, required=True)
    test = _read_split(arrays, "_test", path)
    holdout = _read_split(arrays, "_holdout", path)
    for name, given in (("test_fraction", test), ("holdout_fraction", holdout)):
        if given is not None and name in opts.model_fields_set:
            raise UnlearnkitError(f"classifier task 'arrays': {name} is set but {path} has its own "
                                  f"{name.split('_')[0]} arrays; remove one of them")
    if test is None and holdout is None:
        train, test, holdout = _split_pool(pool, opts)
    elif test is None:
        train, test = _cut(pool, opts.test_fraction, opts.split_seed)
    elif holdout is None:
        train, holdout = _cut(pool, opts.holdout_fraction, opts.split_seed)
    else:
        train = pool
    shapes = {s.x.shape[1:] for s in (train, test, holdout)}
    if len(shapes) > 1:
        raise UnlearnkitError(f"classifier task 'arrays': the splits in {path} have different example shapes "
                              f"{sorted(shapes)}; give every x the same shape after the first axis")
    num_classes = int(max(s.y.max() for s in (train, test, holdout))) + 1
    return ClassifierTask(f"arrays:{path.name}", train, test, holdout, num_classes)


def _read_split(arrays: dict[str, np.ndarray], suffix: str, path: Path, required: bool = False) -> Split | None:
    x, y, sub = arrays.get("x" + suffix), arrays.get("y" + suffix), arrays.get("subclasses" + suffix)
    if x is None and y is None:
        if required:
            raise UnlearnkitError(f"classifier task 'arrays': {path} has no 'x' and 'y' arrays; save them with "
                                  "np.savez(path, x=..., y=...)")
        if sub is not None:
            raise UnlearnkitError(f"classifier task 'arrays': {path} has subclasses{suffix} without x{suffix}")
        return None
    if x is None or y is None:
        raise UnlearnkitError(f"classifier task 'arrays': {path} has only one of x{suffix} and y{suffix}; "
                              "give both")
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 2:
        raise UnlearnkitError(f"classifier task 'arrays': x{suffix} in {path} must be numbers shaped "
                              f"(examples, features...), got {x.dtype} {x.shape}")
    for name, labels in (("y", y), ("subclasses", sub)):
        if labels is None:
            continue
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(x),) or (labels < 0).any():
            raise UnlearnkitError(f"classifier task 'arrays': {name}{suffix} in {path} must be {len(x)} integers "
                                  f">= 0 (one per example of x{suffix}), got {labels.dtype} {labels.shape}")
    if not np.isfinite(x).all():
        raise UnlearnkitError(f"classifier task 'arrays': x{suffix} in {path} has NaN or infinite values")
    return Split(x.astype(np.float32), y.astype(np.int64), None if sub is None else sub.astype(np.int64))


def _torchvision(opts: TorchvisionOptions) -> ClassifierTask:
    if importlib.util.find_spec("torchvision") is None:
        raise UnlearnkitError("task source 'torchvision' needs torchvision: pip install torchvision "
                              "(or save the data as a .npz and use the 'arrays' source)")
    import torchvision

    root = Path(opts.root)
    dataset_class = getattr(torchvision.datasets, opts.name)
    try:
        sets = [dataset_class(str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise UnlearnkitError(f"classifier task 'torchvision': {opts.name} is not in {root} ({exc}); "
                              f"download it there once with torchvision.datasets.{opts.name}(root, download=True)"
                              ) from None
    pool, test = (_torchvision_split(s) for s in sets)
    mean = pool.x.mean(axis=(0, *range(2, pool.x.ndim)), keepdims=True)
    std = pool.x.std(axis=(0, *range(2, pool.x.ndim)), keepdims=True)
    pool, test = (Split(((s.x - mean) / std).astype(np.float32), s.y) for s in (pool, test))
    train, holdout = _cut(pool, opts.holdout_fraction, opts.split_seed)
    return ClassifierTask(opts.name, train, test, holdout, len(sets[0].classes))


def _torchvision_split(dataset) -> Split:
    data = np.asarray(dataset.data, dtype=np.float32) / 255.0
    data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # greyscale (n,H,W); colour (n,H,W,C)
    return Split(data, np.asarray(dataset.targets, dtype=np.int64))


_LOADERS = {"digits": _digits, "mnist1d": _mnist1d, "arrays": _arrays, "torchvision": _torchvision}


# --- splitting ----------------------------------------------------------------------------------------------------

def _cut(pool: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A class-stratified cut of ``fraction`` of ``pool``: (the rest, the cut), each in the pool's order."""
    index = np.arange(len(pool))
    counts = np.bincount(pool.y)
    stratify = pool.y if counts[counts > 0].min() >= 2 else None
    try:
        rest, cut = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # fewer cut examples than classes: stratification is impossible
        rest, cut = train_test_split(index, test_size=fraction, random_state=seed)
    return pool.subset(np.sort(rest)), pool.subset(np.sort(cut))


def _split_pool(pool: Split, opts: SplitOptions) -> tuple[Split, Split, Split]:
    """(train, test, holdout): test and holdout are ``test_fraction`` and ``holdout_fraction`` of the whole pool."""
    rest, test = _cut(pool, opts.test_fraction, opts.split_seed)
    train, holdout = _cut(rest, opts.holdout_fraction / (1 - opts.test_fraction), opts.split_seed)
    return train, test, holdout


__all__ = ["ClassifierTask", "Split", "forget_indices", "load_task", "retain_indices"]
