"""The training loop's settings: one pydantic model, validated on construction (and on assignment).

:class:`TrainSettings` holds what a run config's ``train:`` and ``prepare:`` sections say (:mod:`unlearnkit.config`
uses it for both). :class:`TrainConfig`, what the loop takes, is those settings plus the two that a run sets once
for all of its training: ``seed`` (the run config's top-level ``seed:``, passed in by the pipeline) and
``save_every_epoch`` (a run always checkpoints every epoch, so that an interrupted run can resume). Keeping them out
of the sections keeps the YAML schema as it was: ``train: {seed: 3}`` is an unknown key, not a second seed.

``optimizer: {name: lion, beta1: 0.95}`` (:class:`OptimizerSettings`) picks a registered optimizer
(:mod:`unlearnkit.optim`) and its parameters, checked on construction; ``learning_rate`` and ``weight_decay`` stay
settings of their own and go to whichever optimizer is chosen.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from unlearnkit.errors import ConfigError, UnlearnkitError

Schedule = Literal["linear", "constant", "cosine"]
DEFAULT_OPTIMIZER = {"name": "adamw"}
STRUCTURE_ONLY = "structure_only"  # validation context key: leave the optimizer's parameters for later (no torch)


class OptimizerSettings(BaseModel):
    """A registered optimizer's ``name`` and its parameters, given beside it (``{name: lion, beta1: 0.95}``).

    Checked on construction against the optimizer's typed ``Params``: an unknown name or parameter, or a bad value,
    is a validation error of type ``optimizer`` whose message is one line naming the parameter, its type and range.
    A bare name (``optimizer: lion``) means ``{name: lion}``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field("adamw", description="a registered optimizer (see `unlearnkit optimizers`)")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "OptimizerSettings":
        if info.context and info.context.get(STRUCTURE_ONLY):
            return self  # checked by check() once the cheap checks passed: the optimizers' registry imports torch
        try:
            self.check()
        except UnlearnkitError as exc:
            raise PydanticCustomError("optimizer", "{message}", {"message": str(exc)}) from None
        return self

    def check(self) -> None:
        """The optimizer exists and its parameters fit its ``Params``; else a one-line :class:`UnlearnkitError`."""
        from unlearnkit.optim.registry import check_optimizer

        check_optimizer(self.name, self.params())

    def params(self) -> dict[str, Any]:
        """The parameters given beside ``name`` (the optimizer's defaults fill in the rest)."""
        return dict(self.model_extra or {})


class L1Settings(BaseModel):
    """``train.l1``: the decaying ℓ1 penalty on the trainable weights added to the method's loss
    (:mod:`unlearnkit.training.l1`, research/methods.md §14)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(gt=0, description="α: the penalty's weight at the first step (Unlearn-Sparse: --alpha)")
    schedule: Literal["linear", "constant"] = Field("linear", description=(
        "linear: α_t = α·(1 − t/(T − no_l1_steps)), the paper's decay; constant: α_t = α; 0 in the last "
        "no_l1_steps steps either way"))
    no_l1_steps: int = Field(0, ge=0, description="the last optimizer steps trained without the penalty")


class TrainSettings(BaseModel):
    """How to train: the same settings serve unlearning and fine-tuning."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(5, ge=1, description="passes over the forget set (ignored when max_steps is set)")
    batch_size: int = Field(4, ge=1, description=(
        "examples per micro-batch and process; one optimizer step consumes batch_size × gradient_accumulation_steps "
        "× processes forget examples"))
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate of the optimizer")
    weight_decay: float = Field(0.01, ge=0, description=(
        "weight decay, in the chosen optimizer's form (decoupled for adamw, lion, signsgd, sign_adam; L2 for sgd)"))
    warmup_steps: int | None = Field(None, ge=0, description=(
        "linear warm-up from 0 to learning_rate; null means one epoch of optimizer steps, as in the NPO TOFU config. "
        "Always capped at total_steps - 1 so that the peak is reached"))
    schedule: Schedule = Field("linear", description=(
        "after warm-up: linear (decay to 0, the Hugging Face default the NPO code uses), constant, or cosine "
        "(cosine decay to 0)"))
    max_grad_norm: float | None = Field(None, gt=0, description=(
        "clip the global gradient 2-norm to this value; null disables clipping"))
    bf16: bool = Field(False, description=(
        "bfloat16 autocast of the forward passes (CPU or GPU); weights and optimizer stay in their dtype"))
    max_steps: int | None = Field(None, ge=1, description=(
        "when set, train exactly this many optimizer steps (cycling through the forget set as many epochs as "
        "needed) and ignore epochs, as the Hugging Face Trainer does"))
    gradient_checkpointing: bool = Field(False, description=(
        "recompute each decoder layer's activations in the backward pass instead of keeping them (less memory, "
        "about one more forward pass of time; the same gradients)"))
    tokenization: Literal["separate", "joint"] = Field("separate", description=(
        "how a QA training example becomes tokens (data/formatting.py): separate (prompt and answer tokenized on "
        "their own) or joint (OpenUnlearning's sequences: prompt + answer as one string, labels after the "
        "prompt's token length)"))
    optimizer: OptimizerSettings = Field(default_factory=lambda: OptimizerSettings.model_construct(**DEFAULT_OPTIMIZER), description=(
        "the optimizer and its parameters: {name: adamw} (torch's AdamW, the default), sgd, signsgd, sign_adam, "
        "lion; or one that evaluates the loss itself: zo, adazo, zo_hybrid, es, sam, smoothing, rolling_ball; see "
        "`unlearnkit optimizers NAME`"))
    l1: L1Settings | None = Field(None, description=(
        "ℓ1-sparse unlearning: {weight: α, schedule: linear|constant, no_l1_steps: 0} adds α_t·‖θ‖₁ over the "
        "trainable weights to any method's loss (Jia et al., 2023); null: no penalty"))

    @model_validator(mode="after")
    def _clipping_needs_one_gradient(self, info: ValidationInfo) -> "TrainSettings":
        if info.context and info.context.get(STRUCTURE_ONLY):
            return self  # checked by check_clipping() with the optimizer's parameters: the registry imports torch
        try:
            self.check_clipping()
        except UnlearnkitError as exc:
            raise PydanticCustomError("optimizer", "{message}", {"message": str(exc)}) from None
        return self

    def check_clipping(self, uses_closure=None) -> None:
        """Gradient clipping is asked for only with an optimizer that takes one gradient per step (``uses_closure``:
        optimizer name -> bool, by default the registry's, which imports torch)."""
        if self.max_grad_norm is None:
            return  # nothing to clip, nothing to import
        if uses_closure is None:
            from unlearnkit.optim.registry import uses_closure

        if uses_closure(self.optimizer.name):
            raise ConfigError(
                f"max_grad_norm clips the one gradient of a first-order step, and optimizer {self.optimizer.name!r} "
                "evaluates the loss several times per step (clipping would be ignored): set max_grad_norm: null")


class TrainConfig(TrainSettings):
    """Everything the training loop needs: :class:`TrainSettings` plus the run's seed and checkpoint policy."""

    seed: int = Field(0, description="seeds data order, the per-step randomness and the method's preparation")
    save_every_epoch: bool = Field(True, description=(
        "checkpoint at the end of every epoch; the end of training is always checkpointed"))

    @classmethod
    def checked(cls, **values: Any) -> "TrainConfig":
        """``TrainConfig(**values)``, but a bad value is a one-line :class:`UnlearnkitError` naming the setting
        (for settings a user gave through an API call rather than a validated run config)."""
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(map(str, err["loc"]))
            if err["type"] == "optimizer":
                raise ConfigError(f"training setting {name}: {err['msg']}") from None
            rule = err["msg"].replace("Input should be", "it must be")
            raise ConfigError(f"training setting {name}={err.get('input')!r} is invalid: {rule}") from None

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        return self.max_steps if self.max_steps is not None else self.epochs * steps_per_epoch

    def resolved_warmup_steps(self, steps_per_epoch: int) -> int:
        """Warm-up steps: one epoch when unset, never more than ``total_steps - 1``."""
        wanted = steps_per_epoch if self.warmup_steps is None else self.warmup_steps
        return max(0, min(wanted, self.total_steps(steps_per_epoch) - 1))

    def to_dict(self) -> dict:
        """The settings as plain data. The default optimizer (and tokenization) is left out, so that checkpoints and prepared-model
        keys of default runs are the same as before the optimizer was a setting (and old checkpoints resume)."""
        data = self.model_dump()
        if data["optimizer"] == DEFAULT_OPTIMIZER:
            del data["optimizer"]
        if data["tokenization"] == "separate":  # likewise: keys and checkpoints from before the setting stay valid
            del data["tokenization"]
        if data["l1"] is None:  # likewise: runs without the penalty keep their keys and checkpoints
            del data["l1"]
        del data["gradient_checkpointing"]  # how memory is spent, not what is computed: not part of any key
        return data
