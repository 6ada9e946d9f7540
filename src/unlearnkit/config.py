"""The run configuration: one YAML file (or CLI flags), validated once at the edge.

Every section forbids unknown keys, so a typo is a one-line error naming the key and the valid ones, not a silently
ignored setting. ``method.params`` is checked against the chosen method's typed ``Params`` (its type, range and
meaning per parameter, :mod:`unlearnkit.methods.params`) here too, so ``beta: 0`` stops at load, before any model,
data or evaluation is touched. Inside the package the validated object is passed on as plain data.

Validation has two stages, so that most mistakes are reported in a fraction of a second: :func:`parse_structure`
(keys, types, ranges; no torch) and :func:`check_parameters` (method, optimizers and metrics, whose registries
import torch). ``unlearnkit run`` checks the data and model folders between the two.

``train:`` and ``prepare:`` are :class:`unlearnkit.training.config.TrainSettings`, the settings the training loop's
:class:`~unlearnkit.training.config.TrainConfig` is made of; the run's ``seed:`` is top-level and applies to both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unlearnkit.config_files import read_config_data, set_dotted
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.sections import owning_section
from unlearnkit.training.config import STRUCTURE_ONLY, TrainSettings


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ForgetSubsetConfig(Section):
    """Unlearn on a fraction of the forget set, evaluate on all of it (the coreset effect; data/subset.py):
    ``random`` (by ``seed``), or ``hardest`` / ``easiest`` by the target model's per-example forget NLL."""

    fraction: float = Field(gt=0, le=1)
    strategy: Literal["random", "hardest", "easiest"] = "random"
    seed: int = 0


class TaskConfig(Section):
    source: Literal["synthetic", "tofu", "custom", "corpus", "synthetic_corpus"] = "synthetic"
    options: dict[str, Any] = Field(default_factory=dict)
    forget_subset: ForgetSubsetConfig | None = None


class LoraSettings(Section):
    """``model.lora``: unlearn through LoRA adapters (models/lora.py): their rank, scale, dropout and layers."""

    r: int = Field(8, ge=1, description="rank of each adapter")
    alpha: float = Field(16.0, gt=0, description="scale numerator: the update is (alpha / r)·B·A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="names (last part) of the linear layers that get an adapter, e.g. [q_proj, v_proj]; "
                                  "all-linear: every linear layer but the output head")
    layers: Literal["all", "flexora"] = Field(
        "all", description="which transformer blocks get adapters: all, or those Flexora's search selects "
                           "(models/flexora.py; its settings: model.flexora)")


class FlexoraSettings(Section):
    """``model.flexora``: the search stage of ``model.lora.layers: flexora`` (models/flexora.py): per-layer gates on
    the LoRA updates, trained on held-out forget/retain slices, then LoRA on the selected layers only."""

    search_steps: int = Field(30, ge=1, description="iterations of the search (each: the lower step(s), one gate step)")
    gate_lr: float = Field(0.05, gt=0, description="Adam learning rate of the gates (the upper level)")
    lora_lr: float = Field(0.05, gt=0, description="SGD step size of the LoRA weights during the search (lower level)")
    unroll_steps: int = Field(1, ge=0, description="SGD steps on the training loss differentiated through (0: first "
                                                   "order)")
    val_forget: int = Field(4, ge=1, description="forget examples held out for the validation loss")
    val_retain: int = Field(4, ge=1, description="retain examples held out for the validation loss")
    batch_size: int = Field(4, ge=1, description="examples per training and per validation batch of the search")
    select: Literal["top_k", "threshold"] = Field("top_k", description="keep the k largest gates, or those above "
                                                                       "threshold")
    keep: int | None = Field(None, ge=1, description="top_k: how many layers keep LoRA (default: half, rounded up)")
    threshold: float = Field(1.0, description="threshold: keep the layers whose gate ends above it (gates start at 1)")
    seed: int | None = Field(None, description="seed of the held-out slices and the search's batches (default: the "
                                               "run's seed)")


class ModelConfig(Section):
    base: str = "tiny"  # "tiny", "smollm2-135m", a local folder or a hub id
    target: str | None = None  # an already fine-tuned target model folder: skip preparing it
    retain: str | None = None  # an already fine-tuned retain model folder: skip preparing it
    trust_remote_code: bool = False
    max_length: int = Field(256, ge=16)
    template: Literal["auto", "chat", "plain"] = "auto"
    lora: LoraSettings | None = None  # unlearn through LoRA adapters instead of every weight
    flexora: FlexoraSettings | None = None  # the layer search of lora.layers: flexora (its defaults if absent)


class MethodConfig(Section):
    """A registered method's name and the parameters given (checked against its ``Params`` by :func:`parse_config`;
    the defaults fill in the rest when the method is built)."""

    name: str = "npo"
    params: dict[str, Any] = Field(default_factory=dict)


class EvalConfig(Section):
    """How models are evaluated: scoring batch size, greedy answer length, tokenization, bootstrap intervals."""

    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(200, ge=1)  # TOFU's, and current OpenUnlearning's default (docs/parity.md)
    # how a (question, answer) pair becomes tokens (data/formatting.py): "separate" (prompt and answer tokenized on
    # their own) or "joint" (OpenUnlearning's: prompt + answer as one string, label mask from the prompt's length)
    tokenization: Literal["separate", "joint"] = "separate"
    # OpenUnlearning's jailbreak variant (tofu-JB): every prompt ends with "Sure, here is the answer:", the start
    # of the assistant's turn that the answers (scored and generated) continue; QA tasks only
    jailbreak: bool = False
    # opt-in metrics computed besides the default ones, e.g. OpenUnlearning's default forget/retain_Q_A_PARA_ROUGE
    # and _PERT_ROUGE, mia_gradnorm, forget_Q_A_gibberish (docs/parity.md)
    extra_metrics: list[str] = Field(default_factory=list)
    intervals: bool = True  # a percentile-bootstrap confidence interval for every aggregate
    n_resamples: int = Field(1000, ge=1)
    confidence: float = Field(0.95, gt=0, lt=1)


class BestConfig(Section):
    """Which evaluated checkpoint to keep: the best ``metric`` among those meeting every bound."""

    metric: str = "forget_quality"
    mode: Literal["max", "min"] = "max"
    at_least: dict[str, float] = Field(default_factory=dict)  # e.g. {model_utility: 0.4}
    at_most: dict[str, float] = Field(default_factory=dict)


class MonitorConfig(Section):
    """Evaluation during training: a metric subset every N steps and/or each epoch; optionally keep the best."""

    every_steps: int | None = Field(None, ge=1)
    every_epoch: bool = True
    metrics: list[str] = Field(default_factory=lambda: ["forget_quality", "model_utility", "forget_Q_A_Prob",
                                                        "forget_Q_A_ROUGE"])
    best: BestConfig | None = None


class RepresentationConfig(Section):
    """Representation-level evaluation: features at one layer (hidden_states index; None = the middle), pooled over
    the answer tokens or all tokens of a QA pair (``pool``); a raw-text task's chunks always pool all tokens."""

    layer: int | None = None
    pool: Literal["answer", "all"] = "answer"


class RelearnAttackConfig(Section):
    """Fine-tune on k forget examples for n steps (Microscope protocol defaults: 100 steps, batch 4, lr 2e-5)."""

    examples: int = Field(8, ge=1)
    steps: int = Field(100, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    eval_every: int = Field(10, ge=1)
    control: bool = True  # also relearn the unlearned model on retain examples (what generic fine-tuning restores)
    curve_generation: bool = False  # generate answers at every curve point (default: at the first and last only)


class QuantizeAttackConfig(Section):
    schemes: list[Literal["int8", "fp4", "nf4"]] = Field(default_factory=lambda: ["int8", "fp4"])
    kernel: Literal["auto", "bitsandbytes"] = "auto"  # auto: dequantized float weights where they equal bitsandbytes


class LatentAttackConfig(Section):
    """Residual-stream probe: ε as fractions of the layer's mean hidden-state norm (relative) by default."""

    layer: int | None = None  # None: the middle layer
    epsilons: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0])
    relative: bool = True
    steps: int = Field(20, ge=1)
    scope: Literal["universal", "per_example"] = "universal"


class SuffixAttackConfig(Section):
    """GCG universal suffix (Zou et al. 2023) over k forget questions, optimised on one model and evaluated on all."""

    examples: int = Field(8, ge=1)
    suffix_length: int = Field(10, ge=1)
    steps: int = Field(50, ge=1)
    top_k: int = Field(64, ge=1)
    candidates: int = Field(64, ge=1)
    optimize_on: Literal["unlearned", "target"] = "unlearned"  # "target": the transfer setting


class AttacksConfig(Section):
    """``unlearnkit attack`` (or a run's ``attacks:`` block): which attacks, and each one's budget."""

    run: list[Literal["relearn", "quantize", "suffix", "latent"]] = Field(
        default_factory=lambda: ["relearn", "quantize", "latent"])  # suffix: minutes even on the tiny model, opt-in
    relearn: RelearnAttackConfig = Field(default_factory=RelearnAttackConfig)
    quantize: QuantizeAttackConfig = Field(default_factory=QuantizeAttackConfig)
    latent: LatentAttackConfig = Field(default_factory=LatentAttackConfig)
    suffix: SuffixAttackConfig = Field(default_factory=SuffixAttackConfig)
    metrics: list[str] = Field(default_factory=lambda: ["forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio",
                                                        "extraction_strength", "model_utility"])
    reuse: bool = True  # keep each model's relearning/quantization outcome in the store (shared target/retain: once)


class TrackingConfig(Section):
    """``tracking:``: log the run to an experiment tracker (unlearnkit/tracking.py); offline by default."""

    backend: Literal["tensorboard", "mlflow", "wandb", "trackio"] = "tensorboard"
    project: str = "unlearnkit"
    run_name: str | None = None  # default: the run directory's name


class RunConfig(Section):
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prepare: TrainSettings | None = None  # None: the base's built-in fine-tuning recipe (models/prepare.py)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    monitor: MonitorConfig | None = None
    representation: RepresentationConfig | None = None
    attacks: AttacksConfig | None = None
    tracking: TrackingConfig | None = None
    output_dir: str = "runs/run"
    seed: int = 0


def _explain(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        valid = ", ".join(owning_section(RunConfig, err["loc"]).model_fields)
        return f"{where}: unknown config key {key!r}: valid keys here are {valid}"
    if err["type"] == "optimizer":  # already one line naming the optimizer's parameter, type and range
        return f"{where}: {key}: {err['msg']}"
    return f"{where}: {key}: {err['msg']} (got {err.get('input')!r})"


def check_method(method: MethodConfig, where: str = "config") -> None:
    """The method exists and its params fit its ``Params``; else a one-line error naming the parameter, its type
    and range. Imports the methods (and torch), no model or data."""
    from unlearnkit.methods.registry import method_class

    try:
        cls = method_class(method.name)
    except UnlearnkitError as exc:
        raise ConfigError(f"{where}: method.name: {exc}") from None
    cls.Params.check(method.params, cls.name, where)


def check_extra_metrics(cfg: RunConfig, where: str = "config") -> None:
    """Every name in ``eval.extra_metrics`` is a metric of the task's suite; else a one-line error listing them."""
    if not cfg.eval.extra_metrics:
        return
    from unlearnkit.evaluation.metrics import registry

    suite = "muse" if cfg.task.source in ("corpus", "synthetic_corpus") else "tofu"
    try:
        registry.resolve(suite, cfg.eval.extra_metrics)
    except UnlearnkitError as exc:
        raise ConfigError(f"{where}: eval.extra_metrics: {exc}") from None


def parse_config(data: dict | None, where: str = "config", parameters: bool = True) -> RunConfig:
    """The validated run configuration of ``data``: its structure (:func:`parse_structure`), then, unless
    ``parameters`` is false, the parameters of the method and optimizers (:func:`check_parameters`)."""
    cfg = parse_structure(data, where)
    if parameters:
        check_parameters(cfg, where)
    return cfg


def parse_structure(data: dict | None, where: str = "config") -> RunConfig:
    """Keys, types and ranges of every section, without the registries of methods, optimizers and metrics (which
    import torch): a config error here costs a fraction of a second. :func:`check_parameters` does the rest."""
    if is_classifier(data or {}):
        raise ConfigError(f"{where}: task.source {(data or {}).get('task', {}).get('source', 'classifier')!r} is a "
                          "classifier task, which this command does not take: run it with `unlearnkit run CONFIG`")
    try:
        cfg = RunConfig.model_validate(data or {}, context={STRUCTURE_ONLY: True})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, where)) from None
    if cfg.eval.jailbreak and cfg.task.source in ("corpus", "synthetic_corpus"):
        raise ConfigError(f"{where}: eval.jailbreak puts OpenUnlearning's jailbreak start in front of QA answers, "
                              f"and task source {cfg.task.source!r} is raw text: remove eval.jailbreak")
    check_flexora(cfg, where)
    return cfg


def check_flexora(cfg: RunConfig, where: str = "config") -> None:
    """``model.flexora`` selects the layers of a LoRA run: without ``model.lora`` (or with ``layers: all``) it would
    be ignored, so either is a one-line error."""
    lora, flexora = cfg.model.lora, cfg.model.flexora
    if flexora is not None and lora is None:
        raise ConfigError(f"{where}: model.flexora selects which layers get LoRA adapters, and there is no model.lora "
                          "block: add model.lora (with layers: flexora), or remove model.flexora")
    if flexora is not None and lora.layers != "flexora":
        raise ConfigError(f"{where}: model.flexora is set but model.lora.layers is {lora.layers!r}: set "
                          "model.lora.layers: flexora, or remove model.flexora")
    if flexora is not None and flexora.select == "threshold" and flexora.keep is not None:
        raise ConfigError(f"{where}: model.flexora.keep counts the layers select: top_k keeps, and select is "
                          "threshold: remove keep, or set select: top_k")


def check_parameters(cfg: RunConfig, where: str = "config") -> None:
    """What needs the registries (and so torch): the optimizers and their parameters, the method and its
    parameters, ``eval.extra_metrics``, and whether the optimizer can train the method."""
    for section in ("prepare", "train"):  # the order of RunConfig's fields, as when validated in one pass
        settings = getattr(cfg, section)
        if settings is None:
            continue
        try:
            settings.optimizer.check()
        except UnlearnkitError as exc:
            raise ConfigError(f"{where}: {section}.optimizer: {exc}") from None
        try:
            settings.check_clipping()
        except UnlearnkitError as exc:
            raise ConfigError(f"{where}: {section}: {exc}") from None
    check_method(cfg.method, where)
    check_extra_metrics(cfg, where)
    check_optimizer_serves_method(cfg, where)


def check_catalogued(cfg: RunConfig, where: str = "config") -> None:
    """What :func:`check_parameters` checks that the static catalogue knows (:mod:`unlearnkit.catalogue`: names,
    typed parameters, which optimizers use a closure, metric names), in its order and with its messages, without
    importing torch. ``check_parameters`` still runs after it, for what the catalogue cannot say."""
    from unlearnkit import catalogue
    from unlearnkit.registry import unknown_name

    for section in ("prepare", "train"):
        settings = getattr(cfg, section)
        if settings is None:
            continue
        name, names = settings.optimizer.name, catalogue.optimizer_names()
        if names is not None and name not in names:
            raise ConfigError(f"{where}: {section}.optimizer: {unknown_name('optimizer', name, names, 'optimizers')}")
        params, closure = catalogue.optimizer_params(name), catalogue.uses_closure(name)
        try:
            if params is not None:
                params.check(settings.optimizer.params(), name)
        except UnlearnkitError as exc:
            raise ConfigError(f"{where}: {section}.optimizer: {exc}") from None
        try:
            if closure is not None:
                settings.check_clipping(uses_closure=lambda _: closure)
        except UnlearnkitError as exc:
            raise ConfigError(f"{where}: {section}: {exc}") from None
    names = catalogue.method_names()
    if names is not None and cfg.method.name not in names:
        raise ConfigError(f"{where}: method.name: {unknown_name('method', cfg.method.name, names, 'methods')}")
    params = catalogue.method_params(cfg.method.name)
    if params is not None:
        params.check(cfg.method.params, cfg.method.name, where)
    suite = "muse" if cfg.task.source in ("corpus", "synthetic_corpus") else "tofu"
    table = catalogue.metric_names(suite)
    unknown = sorted(set(cfg.eval.extra_metrics) - set(table or cfg.eval.extra_metrics))
    if unknown:  # the metric registry's message (evaluation/metrics/registry.py: resolve)
        raise ConfigError(f"{where}: eval.extra_metrics: unknown {suite.upper()} metric(s) {unknown}: choose from "
                          f"{', '.join(table)}")


def check_optimizer_serves_method(cfg: RunConfig, where: str = "config") -> None:
    """``train.optimizer`` can train ``method`` (e.g. SAM on the forget term needs the terms apart); else one line
    with the reason. Builds the method object only (no model or data)."""
    from unlearnkit.methods.registry import method_class
    from unlearnkit.optim.registry import check_serves

    method = method_class(cfg.method.name)(**cfg.method.params)
    try:
        check_serves(cfg.train.optimizer.name, cfg.train.optimizer.params(), method)
    except UnlearnkitError as exc:
        raise ConfigError(f"{where}: train.optimizer: {exc}") from None
    if cfg.train.gradient_checkpointing and method.alters_activations:
        raise ConfigError(f"{where}: train.gradient_checkpointing: method {method.name!r} changes activations "
                              "through a hook during its forward pass, which the backward pass's recomputation "
                              "would not see: set train.gradient_checkpointing to false for this method")


def load_config(path: str | Path, overrides: dict | None = None, parameters: bool = True) -> RunConfig:
    """Read a YAML config, apply dotted-key overrides (``{"train.learning_rate": 1e-4}``) and validate (the
    structure only when ``parameters`` is false: see :func:`parse_config`)."""
    return parse_config(_run_data(path, overrides), where=str(path), parameters=parameters)


def _run_data(path: str | Path, overrides: dict | None) -> dict:
    data = read_config_data(path)
    if "sweep" in data:
        raise ConfigError(f"{path} has a sweep: block, which `unlearnkit run` does not read: run the sweep with "
                              f"`unlearnkit sweep {path}`, or remove the block to run one configuration")
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return data


# --- the classifier track (unlearnkit/classifier/config.py): told apart by its task source, or ``track: classifier``

CLASSIFIER_SOURCES = ("digits", "mnist1d", "arrays", "torchvision")


def is_classifier(data: dict) -> bool:
    """Whether config ``data`` (not yet validated) is a classifier-track config rather than an LLM one."""
    task = data.get("task")
    return data.get("track") == "classifier" or (isinstance(task, dict) and task.get("source") in CLASSIFIER_SOURCES)


def load_any_config(path: str | Path, overrides: dict | None = None, parameters: bool = True):
    """:func:`load_config` for an LLM config, or the validated ``ClassifierRunConfig`` of a classifier config (whose
    method parameters are always checked: they need no model registry)."""
    data = _run_data(path, overrides)
    if is_classifier(data):
        from unlearnkit.classifier.config import parse_classifier_config

        return parse_classifier_config(data, where=str(path))
    return parse_config(data, where=str(path), parameters=parameters)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
