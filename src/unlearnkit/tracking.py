"""Experiment tracking through accelerate's trackers: ``tracking: {backend, project, run_name}`` in a run config.

The run logs, at every optimizer step, the training loop's numbers (loss, learning rate, gradient norm, the
method's own terms) and the monitor's evaluations when it ran at that step, then the unlearned model's final
aggregates (as ``final/<metric>``); the resolved config goes in as hyper-parameters. Backends, each an
``accelerate.tracking`` tracker, offline by default:

- ``tensorboard`` (``TensorBoardTracker``): event files in the run directory's ``tensorboard/<run_name>/``.
- ``mlflow`` (``MLflowTracker``): a file store in the run directory's ``mlruns/`` unless ``MLFLOW_TRACKING_URI`` is set.
- ``wandb`` (``WandBTracker``): ``WANDB_MODE=offline`` unless set, files under the run directory.
- ``trackio`` (``TrackioTracker``): trackio's local store.

The packages are optional (``pip install 'unlearnkit[tracking]'``); a backend whose package is missing is refused
when the config is checked, before anything is written.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

from unlearnkit.errors import UnlearnkitError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}


def check_tracking(backend: str) -> None:
    """The backend's package is installed; else a one-line error naming the extra to install."""
    package = PACKAGES[backend]
    if importlib.util.find_spec(package) is None:
        raise UnlearnkitError(f"tracking.backend {backend} needs the {package} package, which is not installed: "
                              f"pip install 'unlearnkit[tracking]' (or pip install {package}), or remove tracking:")


def flat(values: dict, prefix: str = "") -> dict:
    """``{"train.learning_rate": 1e-4, …}``: nested config values as dotted scalars (lists and None as text)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class RunTracker:
    """One run's tracker: opened in the run directory, fed each step's log and the final aggregates, then closed."""

    def __init__(self, backend: str, project: str, run_name: str, run_dir: Path, config: dict):
        check_tracking(backend)
        from accelerate import tracking

        if backend == "tensorboard":
            self.tracker = tracking.TensorBoardTracker(run_name, logging_dir=str(run_dir / "tensorboard"))
        elif backend == "mlflow":
            uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_TRACKING_URI", uri)
            self.tracker = tracking.MLflowTracker(experiment_name=project, logging_dir=str(run_dir / "mlruns"),
                                                  run_name=run_name)
        elif backend == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
            self.tracker = tracking.WandBTracker(project, name=run_name, dir=str(run_dir))
        else:
            self.tracker = tracking.TrackioTracker(project, name=run_name)
        self.tracker.start()
        self.tracker.store_init_configuration(flat(config))

    def log_step(self, step: int, log: dict) -> None:
        self.tracker.log(numbers({k: v for k, v in log.items() if k != "step"}), step=step)

    def log_final(self, aggregates: dict, step: int) -> None:
        self.tracker.log({f"final/{k}": v for k, v in numbers(aggregates).items()}, step=step)

    def finish(self) -> None:
        self.tracker.finish()
