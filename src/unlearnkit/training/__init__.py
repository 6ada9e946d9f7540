"""One training loop for unlearning and fine-tuning (see :mod:`unlearnkit.training.loop`)."""

from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import TrainResult, train
from unlearnkit.training.objectives import FineTune

__all__ = ["FineTune", "TrainConfig", "TrainResult", "train"]
