"""The training loop's settings: one plain dataclass, checked once before training starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from unlearnkit.errors import UnlearnkitError

Schedule = Literal["linear", "constant", "cosine"]
SCHEDULES = ("linear", "constant", "cosine")


@dataclass
class TrainConfig:
    """How to train: the same settings serve unlearning and fine-tuning.

    - ``batch_size`` is per process; one optimizer step consumes
      ``batch_size × gradient_accumulation_steps × processes`` forget examples.
    - ``warmup_steps``: linear warm-up from 0 to ``learning_rate``; ``None`` means one epoch of optimizer steps,
      as in the NPO TOFU config. Always capped at ``total_steps - 1`` so that the peak is reached.
    - ``schedule``: ``linear`` (decay to 0 after warm-up, the Hugging Face default the NPO code uses), ``constant``
      (constant after warm-up) or ``cosine`` (cosine decay to 0 after warm-up).
    - ``max_grad_norm``: clip the global gradient 2-norm to this value; ``None`` disables clipping.
    - ``bf16``: bfloat16 autocast of the forward passes (CPU or GPU); weights and optimizer stay in their dtype.
    - ``max_steps``: when set, train exactly this many optimizer steps (cycling through the forget set as many
      epochs as needed) and ignore ``epochs``, as the Hugging Face Trainer does.
    - ``save_every_epoch``: checkpoint at the end of every epoch; the end of training is always checkpointed.
    """

    epochs: int = 5
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    schedule: Schedule = "linear"
    max_grad_norm: float | None = None
    bf16: bool = False
    seed: int = 0
    max_steps: int | None = None
    save_every_epoch: bool = True

    def validate(self) -> None:
        """Raise :class:`UnlearnkitError` naming the first setting that cannot work."""
        def bad(name: str, rule: str) -> UnlearnkitError:
            return UnlearnkitError(f"training setting {name}={getattr(self, name)!r} is invalid: it must be {rule}")

        for name in ("epochs", "batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a whole number >= 1")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "a number > 0")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", "a number >= 0")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise bad("warmup_steps", "a whole number >= 0, or null for one epoch")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", "one of " + ", ".join(SCHEDULES))
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise bad("max_grad_norm", "a number > 0, or null to disable clipping")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise bad("max_steps", "a whole number >= 1, or null to train for `epochs`")

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        return self.max_steps if self.max_steps is not None else self.epochs * steps_per_epoch

    def resolved_warmup_steps(self, steps_per_epoch: int) -> int:
        """Warm-up steps: one epoch when unset, never more than ``total_steps - 1``."""
        wanted = steps_per_epoch if self.warmup_steps is None else self.warmup_steps
        return max(0, min(wanted, self.total_steps(steps_per_epoch) - 1))

    def to_dict(self) -> dict:
        return asdict(self)
