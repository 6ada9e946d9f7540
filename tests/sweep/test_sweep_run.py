"""A real sweep on the synthetic task with the tiny base: trials are ordinary run directories, a killed sweep resumes
without rerunning finished trials, the leaderboard is written, and an Optuna search continues its stored study."""

import importlib
import json

import pytest

from unlearnkit.sweep.plan import sweep_settings
from unlearnkit.sweep.runner import run_sweep

BASE = {
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "ga"},
    "train": {"epochs": 1, "batch_size": 4, "learning_rate": 5e-4, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 32, "max_new_tokens": 8, "intervals": False},
}


class CountingRun:
    """pipeline.run, counted; raises KeyboardInterrupt (a kill) at call number ``interrupt_at``."""

    def __init__(self, monkeypatch, interrupt_at=None):
        self.calls, self.configs, self.interrupt_at = 0, [], interrupt_at
        # the module the runner will import now (other tests drop unlearnkit.pipeline from sys.modules)
        pipeline = importlib.import_module("unlearnkit.pipeline")
        self.real = pipeline.run
        monkeypatch.setattr(pipeline, "run", self)

    def __call__(self, cfg, resume=False, progress=True):
        self.calls += 1
        self.configs.append(cfg)
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.real(cfg, resume=resume, progress=progress)


def test_a_killed_grid_sweep_resumes_and_writes_its_leaderboard(tmp_path, monkeypatch):
    settings = sweep_settings(None, ["train.learning_rate=1e-4,1e-3"])
    counting = CountingRun(monkeypatch, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(BASE, settings, tmp_path / "sw", progress=False, log=lambda *_: None)
    runs = sorted(p.name for p in (tmp_path / "sw" / "runs").iterdir())
    assert len(runs) == 1 and (tmp_path / "sw" / "runs" / runs[0] / "results.json").is_file()

    counting = CountingRun(monkeypatch)
    board = run_sweep(BASE, settings, tmp_path / "sw", progress=False, log=lambda *_: None)
    assert counting.calls == 1 and counting.configs[0].train.learning_rate == 1e-3  # the finished trial is kept
    assert counting.configs[0].model.target  # the prepared models are pinned, shared by every trial
    assert {r["overrides"]["train.learning_rate"] for r in board["rows"]} == {1e-4, 1e-3}
    assert board["best"] in board["pareto_front"]
    for row in board["rows"]:
        results = json.loads((tmp_path / "sw" / "runs" / f"c{row['config_id']}-seed0" / "results.json").read_text())
        assert row["metrics"]["forget_quality"]["mean"] == results["models"]["unlearned"]["aggregates"]["forget_quality"]
    page = (tmp_path / "sw" / "leaderboard.html").read_text()
    assert "<svg" in page and "Pareto front" in page
    assert "★" in (tmp_path / "sw" / "leaderboard.md").read_text()


def test_an_optuna_search_continues_its_study_after_a_kill(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    space = {"space": {"train.learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}}, "search": "optuna"}
    run_sweep(BASE, sweep_settings(space, trials=1), tmp_path / "sw", progress=False, log=lambda *_: None)

    killed = CountingRun(monkeypatch, interrupt_at=1)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(BASE, sweep_settings(space, trials=2), tmp_path / "sw", progress=False, log=lambda *_: None)
    counting = CountingRun(monkeypatch)
    board = run_sweep(BASE, sweep_settings(space, trials=2), tmp_path / "sw", progress=False, log=lambda *_: None)
    assert counting.calls == 1  # the first configuration is not rerun
    retried = counting.configs[0].train.learning_rate
    assert retried == killed.configs[0].train.learning_rate  # the killed configuration is queued again, same value
    assert len(board["rows"]) == 2 and 1e-4 <= retried <= 1e-3


def test_trials_run_as_tasks_of_a_local_ray_instance_with_two_workers(tmp_path):
    pytest.importorskip("ray")
    settings = sweep_settings({"backend": "ray", "workers": 2}, ["train.learning_rate=1e-4,1e-3"])
    board = run_sweep(BASE, settings, tmp_path / "sw", progress=False, log=lambda *_: None)
    assert not board["failed"] and len(board["rows"]) == 2
    assert all((tmp_path / "sw" / "runs" / f"c{r['config_id']}-seed0" / "results.json").is_file() for r in board["rows"])
