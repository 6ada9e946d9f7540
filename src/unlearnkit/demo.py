"""The demo's built-in configuration: the synthetic task, the ``tiny`` base, NPO — offline, a few minutes on 2 cores."""

from __future__ import annotations

DEMO_CONFIG: dict = {
    "task": {"source": "synthetic", "options": {"seed": 0}},
    "model": {"base": "tiny", "max_length": 128},
    "method": {"name": "npo", "params": {"beta": 0.1}},
    "train": {"epochs": 5, "batch_size": 8, "learning_rate": 1e-3, "weight_decay": 0.0, "warmup_steps": 0,
              "schedule": "constant"},
    "eval": {"batch_size": 64, "max_new_tokens": 64},
    "output_dir": "runs/demo",
}
