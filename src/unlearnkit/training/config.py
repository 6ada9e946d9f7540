"""The training loop's settings: one pydantic model, validated on construction (and on assignment).

:class:`TrainSettings` holds what a run config's ``train:`` and ``prepare:`` sections say (:mod:`unlearnkit.config`
uses it for both). :class:`TrainConfig`, what the loop takes, is those settings plus the two that a run sets once
for all of its training: ``seed`` (the run config's top-level ``seed:``, passed in by the pipeline) and
``save_every_epoch`` (a run always checkpoints every epoch, so that an interrupted run can resume). Keeping them out
of the sections keeps the YAML schema as it was: ``train: {seed: 3}`` is an unknown key, not a second seed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unlearnkit.errors import UnlearnkitError

Schedule = Literal["linear", "constant", "cosine"]


class TrainSettings(BaseModel):
    """How to train: the same settings serve unlearning and fine-tuning."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(5, ge=1, description="passes over the forget set (ignored when max_steps is set)")
    batch_size: int = Field(4, ge=1, description=(
        "examples per micro-batch and process; one optimizer step consumes batch_size × gradient_accumulation_steps "
        "× processes forget examples"))
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
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
            rule = err["msg"].replace("Input should be", "it must be")
            raise UnlearnkitError(f"training setting {name}={err.get('input')!r} is invalid: {rule}") from None

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        return self.max_steps if self.max_steps is not None else self.epochs * steps_per_epoch

    def resolved_warmup_steps(self, steps_per_epoch: int) -> int:
        """Warm-up steps: one epoch when unset, never more than ``total_steps - 1``."""
        wanted = steps_per_epoch if self.warmup_steps is None else self.warmup_steps
        return max(0, min(wanted, self.total_steps(steps_per_epoch) - 1))

    def to_dict(self) -> dict:
        return self.model_dump()
