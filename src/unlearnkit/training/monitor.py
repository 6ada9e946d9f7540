"""Evaluation during training: a chosen metric subset every N steps and/or each epoch, and the best checkpoint kept.

A :class:`TrainingMonitor` is the training loop's ``on_step`` hook. At each due step it evaluates the model with
:meth:`unlearnkit.evaluation.evaluator.Evaluator.evaluate` (the TOFU or MUSE suite; only the chosen metrics and what
they depend on) and returns the values, which the loop stores in the step's log and its checkpoints. With a ``best`` criterion — e.g. the highest
forget_quality among checkpoints whose model_utility is at least 0.4 — the best model so far is written to
``best_dir`` (with ``best.json``), so a resumed run continues the same selection. Evaluation runs in every process
(it shares its work out across them and every process gets the same numbers); only the main one writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from unlearnkit.config import BestConfig, MonitorConfig
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import registry
from unlearnkit.runio import atomic_dir, write_json

BEST_FILE = "best.json"


def check_monitor(cfg: MonitorConfig, has_reference: bool, known: Sequence[str] | None = None) -> None:
    """Reject metric names the task's suite (``known``) does not have, and criteria that cannot be computed."""
    known = registry.names("tofu") if known is None else known
    named = set(cfg.metrics)
    if cfg.best is not None:
        named |= {cfg.best.metric, *cfg.best.at_least, *cfg.best.at_most}
    unknown = sorted(named - set(known))
    if unknown:
        raise UnlearnkitError(f"monitor: unknown metric(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    needs_reference = {name for name in named if registry.metric(name).reference}
    if needs_reference and not has_reference:
        raise UnlearnkitError(f"monitor: {', '.join(sorted(needs_reference))} need(s) a retain model: set model.retain "
                              "or let unlearnkit prepare one")
    if cfg.every_steps is None and not cfg.every_epoch:
        raise UnlearnkitError("monitor: set every_steps or every_epoch: true, or remove the monitor section")


def meets_bounds(values: dict, best: BestConfig) -> bool:
    for name, low in best.at_least.items():
        if values.get(name) is None or values[name] < low:
            return False
    for name, high in best.at_most.items():
        if values.get(name) is None or values[name] > high:
            return False
    return values.get(best.metric) is not None


def is_better(value: float, incumbent: float | None, mode: str) -> bool:
    if incumbent is None:
        return True
    return value > incumbent if mode == "max" else value < incumbent


class TrainingMonitor:
    """The ``on_step`` hook that evaluates during training and keeps the best model in ``best_dir``."""

    def __init__(self, cfg: MonitorConfig, steps_per_epoch: int, total_steps: int,
                 evaluate: Callable[[object], dict], save_model: Callable[[object, Path], None], best_dir: Path,
                 is_main: bool = True):
        self.cfg, self.steps_per_epoch, self.total_steps = cfg, steps_per_epoch, total_steps
        self.evaluate, self.save_model, self.best_dir, self.is_main = evaluate, save_model, Path(best_dir), is_main
        self.best = self._load_best()

    def _load_best(self) -> dict | None:
        path = self.best_dir / BEST_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def due(self, step: int) -> bool:
        by_steps = self.cfg.every_steps is not None and step % self.cfg.every_steps == 0
        by_epoch = self.cfg.every_epoch and step % self.steps_per_epoch == 0
        last = self.cfg.best is not None and step == self.total_steps  # the final model is always a candidate
        return by_steps or by_epoch or last

    def __call__(self, step: int, model, log: dict) -> dict | None:
        if not self.due(step):
            return None
        aggregates = self.evaluate(model)
        values = {name: aggregates.get(name) for name in self.cfg.metrics}
        record: dict = {"eval": values}
        best = self.cfg.best
        if best is not None:
            candidate = {**values, **{k: aggregates.get(k) for k in (best.metric, *best.at_least, *best.at_most)}}
            if meets_bounds(candidate, best) and is_better(candidate[best.metric],
                                                           self.best["value"] if self.best else None, best.mode):
                self.best = {"step": step, "metric": best.metric, "value": candidate[best.metric], "values": candidate}
                if self.is_main:
                    with atomic_dir(self.best_dir) as tmp:
                        self.save_model(model, tmp)
                        write_json(tmp / BEST_FILE, self.best)
                record["best_so_far"] = True
        return record


def monitor_curve(logs: list[dict]) -> list[dict]:
    """The evaluated steps of a training log: ``[{"step": s, metric: value, ...}, ...]``."""
    return [{"step": log["step"], **log["eval"]} for log in logs if "eval" in log]
