"""Experiment tracking (unlearnkit/tracking.py): a run with ``tracking: {backend: tensorboard}`` writes each step's
training numbers and the final aggregates into event files in its run directory; a backend whose package is
missing is refused before anything is written."""

import importlib.util

import pytest

import unlearnkit
from unlearnkit.errors import UnlearnkitError

SMALL = {
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "ga"},
    "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 32, "max_new_tokens": 8, "intervals": False},
}


def test_tensorboard_holds_every_step_and_the_final_aggregates(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = unlearnkit.unlearn({**SMALL, "output_dir": str(tmp_path / "run"),
                                 "tracking": {"backend": "tensorboard", "run_name": "ga-run"}}, progress=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard" / "ga-run"))
    events.Reload()
    logs = result.results["training"]["logs"]
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [log["step"] for log in logs]
    assert [e.value for e in loss] == pytest.approx([log["loss"] for log in logs], rel=1e-6)
    final = events.Scalars("final/forget_Q_A_Prob")
    assert final[0].value == pytest.approx(result.results["models"]["unlearned"]["aggregates"]["forget_Q_A_Prob"],
                                           rel=1e-6)


def test_a_backend_that_is_not_installed_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UnlearnkitError, match=r"tracking.backend mlflow needs the mlflow package.*unlearnkit\[tracking\]"):
        unlearnkit.unlearn({**SMALL, "output_dir": str(tmp_path / "run"), "tracking": {"backend": "mlflow"}},
                           progress=False)
    assert not any(tmp_path.iterdir())
