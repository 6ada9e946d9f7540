"""One training loop for unlearning and fine-tuning (see :mod:`unlearnkit.training.loop`).

The loop (torch, transformers, accelerate) is imported on first use, so that reading a run config, which needs only
:mod:`unlearnkit.training.config`, stays light.
"""

from unlearnkit.training.config import TrainConfig

__all__ = ["FineTune", "TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "train"):
        from unlearnkit.training import loop

        return getattr(loop, name)
    if name == "FineTune":
        from unlearnkit.training.objectives import FineTune

        return FineTune
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
