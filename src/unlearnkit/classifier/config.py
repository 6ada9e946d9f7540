"""The classifier track's run configuration: one YAML file, validated at load, beside the LLM track's ``RunConfig``.

A config belongs to the classifier track when its ``task.source`` is a classifier source (digits, mnist1d, arrays,
torchvision; ``unlearnkit.config.CLASSIFIER_SOURCES``) or it says ``track: classifier``; every other config is an
LLM config, read by :class:`unlearnkit.config.RunConfig` exactly as before. Example::

    task:
      source: digits            # digits | mnist1d | arrays | torchvision; options: task.options
      forget: {kind: random, percent: 10, seed: 0}   # or {kind: class, label: 3}, {kind: subclass, ...}
    model: {kind: mlp, recipe: {epochs: 20}}          # mlp | cnn | resnet (+ width, depth), and how to train it
    ensemble: {members: 16, seed: 0}
    method: {name: finetune, params: {epochs: 5}}     # or methods: [{name: ..., params: ..., label: ...}, ...]
    output_dir: runs/digits-finetune

The members are seeds ``seed .. seed+N−1`` (the originals, unlearned by each method); the reference they are scored
against is N members retrained without the forget set from seeds ``seed+N .. seed+2N−1``, so that the ``retrain``
method (the originals' own seeds retrained) is an independent sample of exact unlearning (its ε score is the best a
method can expect at this N). Every problem is a one-line :class:`~unlearnkit.errors.ConfigError`: unknown keys,
an unknown source or method, a method parameter out of range, a source's bad option, and a torchvision task
without torchvision installed, all before anything is trained.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unlearnkit.classifier.data import load_task
from unlearnkit.classifier.ensemble import Recipe
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.options import TASK_OPTIONS, ForgetOptions, check
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.sections import owning_section

LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")  # a method's row name, also its logits file's name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifierTaskConfig(_Section):
    """``task:``: the source, its options (``classifier.options.TASK_OPTIONS``) and the forget set."""

    source: Literal["digits", "mnist1d", "arrays", "torchvision"] = "digits"
    options: dict[str, Any] = Field(default_factory=dict)
    forget: ForgetOptions = Field(default_factory=lambda: ForgetOptions(percent=10))


class ClassifierModelConfig(ModelOptions):
    """``model:``: the architecture (``ModelOptions``: kind, width, depth) and ``recipe``, how each member trains."""

    recipe: Recipe = Field(default_factory=Recipe)

    def options(self) -> ModelOptions:
        return ModelOptions(**self.model_dump(exclude={"recipe"}))


class EnsembleConfig(_Section):
    """``ensemble:``: N members per side (the ε score needs 3 or more; the competition used 512) and the first seed."""

    members: int = Field(16, ge=3, description="models per side: originals, and retrained references")
    seed: int = Field(0, ge=0, description="the originals are seeds seed..seed+N-1, the references the next N")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.members))

    @property
    def reference_seeds(self) -> list[int]:
        return list(range(self.seed + self.members, self.seed + 2 * self.members))


class ClassifierMethodConfig(_Section):
    """One method to run: its name (``classifier.unlearn.PARAMS``), its parameters, and its row's label."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # default: the name; give one to run a method twice with different parameters

    @property
    def row(self) -> str:
        return self.label or self.name


class ClassifierEvalConfig(_Section):
    """``eval:``: the bootstrap intervals (over members, or over forget examples for F and KLOM) and what is saved."""

    intervals: bool = True
    n_resamples: int = Field(1000, ge=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    save_logits: bool = True  # every model's logits on forget/retain/test in logits/<row>.safetensors


class ClassifierRunConfig(_Section):
    track: Literal["classifier"] = "classifier"
    task: ClassifierTaskConfig = Field(default_factory=ClassifierTaskConfig)
    model: ClassifierModelConfig = Field(default_factory=ClassifierModelConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    method: ClassifierMethodConfig | None = None
    methods: list[ClassifierMethodConfig] = Field(default_factory=list)
    eval: ClassifierEvalConfig = Field(default_factory=ClassifierEvalConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "runs/classifier"

    @model_validator(mode="after")
    def _one_list_of_methods(self) -> ClassifierRunConfig:
        if (self.method is None) == (not self.methods):
            raise ValueError("give either method: {name: ...} or methods: [{name: ...}, ...] (exactly one of them)")
        rows = [m.row for m in self.runs]
        for row in rows:
            if not LABEL.match(row):
                raise ValueError(f"method label {row!r} must be letters, digits, '_', '.', '+' or '-'")
        duplicates = sorted({r for r in rows if rows.count(r) > 1} | {r for r in rows if r in RESERVED})
        if duplicates:
            raise ValueError(f"method rows {duplicates} are given twice or reserved ({', '.join(RESERVED)}): "
                             "give each a distinct label")
        return self

    @property
    def runs(self) -> list[ClassifierMethodConfig]:
        return [self.method] if self.method is not None else list(self.methods)


RESERVED = ("original", "reference")  # the rows of the original members and of the retrained references


def parse_classifier_config(data: dict | None, where: str = "config") -> ClassifierRunConfig:
    """The validated classifier run config of ``data``, its method parameters and task options checked too."""
    try:
        cfg = ClassifierRunConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_explain(exc)}") from None
    check_classifier_config(cfg, where)
    return cfg


def check_classifier_config(cfg: ClassifierRunConfig, where: str = "config") -> None:
    """What the structure cannot say: each method exists and its parameters fit; the source's options are its own;
    torchvision is installed for a torchvision task. Loads no data and trains nothing."""
    from unlearnkit.classifier.unlearn import PARAMS

    for i, run in enumerate(cfg.runs):
        key = "method" if cfg.method is not None else f"methods.{i}"
        if run.name not in PARAMS:
            raise ConfigError(f"{where}: {key}.name: unknown classifier method {run.name!r}: use one of "
                              f"{', '.join(PARAMS)}")
        try:
            check(PARAMS[run.name], dict(run.params), f"classifier method {run.name!r}")
        except UnlearnkitError as exc:
            raise ConfigError(f"{where}: {key}.params: {exc}") from None
    source = cfg.task.source
    try:
        check(TASK_OPTIONS[source], dict(cfg.task.options), f"classifier task {source!r}")
    except UnlearnkitError as exc:
        raise ConfigError(f"{where}: task.options: {exc}") from None
    if source == "torchvision" and importlib.util.find_spec("torchvision") is None:
        raise ConfigError(f"{where}: task.source 'torchvision' needs torchvision, which is not installed: "
                          "pip install torchvision (or save the data as a .npz and use the 'arrays' source)")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: device 'cuda' but no CUDA device is available: use device: auto or cpu")


def load_classifier_task(cfg: ClassifierRunConfig, where: str = "config"):
    """The task and its forget indices (data read, forget set drawn; ``None`` for a ``worst_case`` set, which is
    selected on the trained original ensemble); a problem is a one-line ConfigError."""
    from unlearnkit.classifier.data import forget_indices

    try:
        task = load_task(cfg.task.source, cfg.task.options)
        if cfg.task.forget.kind == "worst_case":
            return task, None
        return task, forget_indices(task, cfg.task.forget)
    except ConfigError:
        raise
    except UnlearnkitError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _explain(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        section = owning_section(ClassifierRunConfig, err["loc"])
        return f"unknown config key {key!r}: valid keys here are {', '.join(section.model_fields)}"
    message = err["msg"].replace("Value error, ", "")
    if not key:
        return message
    return f"{key}: {message} (got {err.get('input')!r})"


def dump_classifier_config(cfg: ClassifierRunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)


# --- the demo -----------------------------------------------------------------------------------------------------

DEMO_MEMBERS = 64
DEMO_WIDTH = 64  # hidden units of the demo's MLP: a third of the default's multiply-adds, for the 5-minute budget
DEMO_PARAMS = {"l1_sparse": {"alpha": 5e-4}}  # methods without a default for every parameter (docs/benchmarks.md §14)


def demo_config(output_dir: str) -> ClassifierRunConfig:
    """``unlearnkit demo --track classifier``: digits, an MLP of width 64 with the default recipe, N = 64, a random
    10 % forgotten, every classifier method of ``classifier.unlearn`` with its defaults (``DEMO_PARAMS`` given)."""
    from unlearnkit.classifier.unlearn import PARAMS

    methods = [{"name": name, "params": DEMO_PARAMS.get(name, {})} for name in PARAMS
               if _has_defaults(PARAMS[name], DEMO_PARAMS.get(name, {}))]
    left_out = [name for name in PARAMS if name not in {m["name"] for m in methods}]
    if left_out:
        logging.getLogger("unlearnkit").warning("the demo leaves out %s: no default for a required parameter",
                                                ", ".join(left_out))
    return parse_classifier_config({"task": {"source": "digits", "forget": {"kind": "random", "percent": 10}},
                                    "model": {"kind": "mlp", "width": DEMO_WIDTH},
                                    "ensemble": {"members": DEMO_MEMBERS, "seed": 0}, "methods": methods,
                                    "output_dir": output_dir}, where="demo")


def _has_defaults(params: type[BaseModel], given: dict) -> bool:
    """Whether the method's options are complete with ``given`` (a method added later may need a value we lack)."""
    return all(name in given or not field.is_required() for name, field in params.model_fields.items())
