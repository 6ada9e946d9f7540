"""Typed options of the classifier track, checked before anything is loaded or trained.

Each source of a task has its own options model (``TASK_OPTIONS``), so a misspelt or misplaced option is named with
the options the source accepts. :func:`check` turns pydantic's report into one :class:`UnlearnkitError` line:
``classifier task 'digits': test_fraction must be < 1, got 1.5``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unlearnkit.errors import UnlearnkitError


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HoldoutOptions(Options):
    """How the fixed held-out set is cut from the training data (stratified by class)."""

    holdout_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the data kept as the held-out set")
    split_seed: int = Field(0, ge=0, description="seed of the fixed, class-stratified split")


class SplitOptions(HoldoutOptions):
    """How the fixed test and held-out sets are cut from data that comes as one pool (stratified by class)."""

    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="share of the data kept as the test set")


class DigitsOptions(SplitOptions):
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""


class Mnist1dOptions(SplitOptions):
    """MNIST-1D (Greydanus 2020), generated locally by ``mnist1d.data.make_dataset``: no download. Its own split
    keeps the last ``test_fraction`` of the generated examples as the test set (0.2: the package default)."""

    num_samples: int = Field(5000, ge=100, description="examples generated (the package's default is 5000)")
    data_seed: int = Field(42, ge=0, description="seed of the generator (42: the package default)")


class ArraysOptions(SplitOptions):
    """The user's arrays in one .npz: ``x``, ``y`` (and optionally ``x_test``/``y_test``, ``x_holdout``/``y_holdout``,
    ``subclasses``: a fine label per training example, for sub-class forget sets)."""

    path: str = Field(description="the .npz file")


class TorchvisionOptions(HoldoutOptions):
    """A torchvision dataset read from files already on disk (``download`` is never attempted)."""

    name: Literal["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"] = Field(description="torchvision dataset class")
    root: str = Field(description="the folder holding the dataset's files")


TASK_OPTIONS: dict[str, type[Options]] = {
    "digits": DigitsOptions, "mnist1d": Mnist1dOptions, "arrays": ArraysOptions, "torchvision": TorchvisionOptions,
}


class ForgetOptions(Options):
    """Which training examples to forget: a random ``percent``, every example of ``label``, or the examples of
    ``label`` whose sub-class is ``subclass``."""

    kind: Literal["random", "class", "subclass"] = "random"
    percent: float | None = Field(None, gt=0, lt=100, description="random: share of the training set, in %")
    label: int | None = Field(None, ge=0, description="class / subclass: the class to forget (or that holds it)")
    subclass: int | None = Field(None, ge=0, description="subclass: the sub-class (fine label) to forget")
    seed: int = Field(0, ge=0, description="random: the seed of the draw")

    @model_validator(mode="after")
    def _fields_match_kind(self) -> ForgetOptions:
        needed = {"random": ["percent"], "class": ["label"], "subclass": ["label", "subclass"]}[self.kind]
        unused = {"random": ["label", "subclass"], "class": ["percent", "subclass"], "subclass": ["percent"]}[self.kind]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind!r} forget set needs {' and '.join(missing)}")
        extra = [name for name in unused if getattr(self, name) is not None]
        if extra:
            raise ValueError(f"a {self.kind!r} forget set does not use {' or '.join(extra)}: remove it")
        return self


def check(model: type[Options], values: dict[str, Any], what: str) -> Options:
    """``values`` validated by ``model``; a bad one is one :class:`UnlearnkitError` line prefixed by ``what``."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise UnlearnkitError(f"{what}: {explain(exc, model)}") from None


def explain(exc: ValidationError, model: type[Options]) -> str:
    """The first problem of a pydantic error as one line naming the field, the problem and the accepted values."""
    err = exc.errors()[0]
    name = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown option {name!r}; the options are {', '.join(model.model_fields)}"
    if err["type"] == "missing":
        return f"option {name!r} is required ({model.model_fields[name].description})"
    message = err["msg"].replace("Value error, ", "").replace("Input should be", "must be")
    if not name:
        return message
    return f"{name} {message}, got {err.get('input')!r}"
