"""Typed options of the classifier track, checked before anything is loaded or trained.

Each source of a task has its own options model (``TASK_OPTIONS``), so a misspelt or misplaced option is named with
the options the source accepts. :func:`check` turns pydantic's report into one :class:`UnlearnkitError` line:
``classifier task 'digits': test_fraction must be < 1, got 1.5``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unlearnkit.errors import UnlearnkitError
from unlearnkit.sections import owning_section


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


class WorstCaseOptions(Options):
    """How the worst-case forget set is selected (``classifier/worst_case.py``; research/methods.md §15). The
    defaults are OPTML-Group/Unlearn-WorstCase's (data-wise ``arg_parser.py``) where it has one, else marked."""

    method: Literal["finetune", "ga", "neggrad_plus"] = Field(
        "finetune", description="the lower level: this unlearning method with per-example weights")
    solver: Literal["first_order", "bo_rep"] = Field(
        "first_order", description="first_order: the paper's projected step on the losses; bo_rep: BO-REP's step")
    select_epochs: int = Field(10, ge=1, description="upper iterations (the reference's select_epochs)")
    unlearn_epochs: int = Field(10, ge=1, description="lower level: passes over the training set per upper "
                                                      "iteration (the reference's unlearn_steps)")
    lr: float = Field(0.01, gt=0, description="lower level: SGD learning rate (the reference's theta_lr)")
    momentum: float = Field(0.9, ge=0, lt=1, description="lower level: SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="lower level: SGD weight decay")
    batch_size: int = Field(64, ge=1, description="lower level: examples per step and member")
    beta: float = Field(0.999, gt=0, lt=1, description="neggrad_plus: weight of the retain term")
    w_lr: float = Field(0.01, gt=0, description="upper level: step size on the weights (first_order)")
    gamma: float = Field(0.0, ge=0, description="upper level: weight of the ||w||^2 regulariser")
    binarize_every: int = Field(20, ge=1, description="replace w by its top-k indicator every this many upper "
                                                      "iterations (and always at the last)")
    init: Literal["uniform", "random"] = Field("uniform", description="w at the start: size/n everywhere, or the "
                                               "indicator of a random set (the reference's)")
    seed: int = Field(0, ge=0, description="random init: the seed of the draw")
    members: int | None = Field(None, ge=1, description="select on the first this many members (None: all)")
    solver_params: dict[str, Any] = Field(default_factory=dict, description="bo_rep: its parameters "
                                          "(optim/bilevel/bo_rep.py)")

    @model_validator(mode="after")
    def _solver_params_fit(self) -> WorstCaseOptions:
        if self.solver_params and self.solver != "bo_rep":
            raise ValueError(f"solver_params are for solver 'bo_rep', not {self.solver!r}: remove them")
        if self.solver == "bo_rep":  # its parameters checked here, at load: one line naming a bad one
            from unlearnkit.optim.bilevel import check_solver

            check_solver("bo_rep", self.solver_params)
        return self


class ForgetOptions(Options):
    """Which training examples to forget: a random ``percent``, every example of ``label``, the examples of
    ``label`` whose sub-class is ``subclass``, or the ``percent`` hardest to unlearn (``worst_case``, selected on
    the trained models as ``selection`` says: ``classifier/worst_case.py``)."""

    kind: Literal["random", "class", "subclass", "worst_case"] = "random"
    percent: float | None = Field(None, gt=0, lt=100, description="random / worst_case: share of the training "
                                                                  "set, in %")
    label: int | None = Field(None, ge=0, description="class / subclass: the class to forget (or that holds it)")
    subclass: int | None = Field(None, ge=0, description="subclass: the sub-class (fine label) to forget")
    seed: int = Field(0, ge=0, description="random: the seed of the draw")
    selection: WorstCaseOptions | None = Field(None, description="worst_case: how the set is selected")

    @model_validator(mode="after")
    def _fields_match_kind(self) -> ForgetOptions:
        if self.kind == "worst_case" and self.selection is None:
            object.__setattr__(self, "selection", WorstCaseOptions())
        needed = {"random": ["percent"], "class": ["label"], "subclass": ["label", "subclass"],
                  "worst_case": ["percent"]}[self.kind]
        unused = {"random": ["label", "subclass", "selection"], "class": ["percent", "subclass", "selection"],
                  "subclass": ["percent", "selection"], "worst_case": ["label", "subclass"]}[self.kind]
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
    owner = owning_section(model, err["loc"])  # the (nested) options model the problem's field belongs to
    if err["type"] == "extra_forbidden":
        return f"unknown option {name!r}; the options are {', '.join(owner.model_fields)}"
    if err["type"] == "missing":
        return f"option {name!r} is required ({owner.model_fields[str(err['loc'][-1])].description})"
    message = err["msg"].replace("Value error, ", "").replace("Input should be", "must be")
    if not name:
        return message
    return f"{name} {message}, got {err.get('input')!r}"
