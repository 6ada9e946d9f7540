"""Run a sweep's trials into ordinary run directories under ``<sweep>/runs/``; skip finished ones, resume the rest.

Before any trial runs, the target and retain models of every distinct (task, model, prepare) combination are
prepared once with the config's own seed (cached as for any run) and pinned into the trials' configs as
``model.target`` / ``model.retain``: the seeds of a sweep vary the unlearning, not the models being unlearned, and
every trial after the first reads the two baselines' evaluations from the store.

A trial whose run directory exists is finished and is not run again; one with a ``.partial`` directory (killed
mid-way) continues from its last checkpoint. ``workers > 1`` runs trials in that many spawned processes, each with
``cores / workers`` torch threads; ``backend: ray`` runs them as Ray tasks instead (a local Ray instance, or a
cluster at ``ray_address``). A trial that fails is recorded (and listed by the CLI); the others go on.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

from unlearnkit.errors import UnlearnkitError
from unlearnkit.runio import write_json
from unlearnkit.sweep.plan import SweepConfig, Trial, grid_configurations, label, make_trials, sweep_identity

MANIFEST = "sweep.json"
# what a Ray worker must see as this process does: where the cache and data are, offline mode, the import path
FORWARDED_ENV = ("UNLEARNKIT_CACHE", "UNLEARNKIT_TOFU_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                 "TOKENIZERS_PARALLELISM", "PYTHONPATH")


class Sweep:
    """A sweep directory: its manifest, its trials' run directories, the models they share."""

    def __init__(self, base: dict, settings: SweepConfig, directory: str | Path, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.base = {k: v for k, v in base.items() if k not in ("sweep", "output_dir")}
        self.settings = settings
        self.directory = Path(directory)
        self.runs = self.directory / "runs"
        self.progress = progress
        self.log = log
        self.failed: dict[str, str] = {}
        self._pinned: dict[str, dict] = {}
        self._check_manifest()

    def _check_manifest(self) -> None:
        path = self.directory / MANIFEST
        if not path.exists():
            return
        try:
            recorded = json.loads(path.read_text()).get("identity")
        except (OSError, json.JSONDecodeError):
            raise UnlearnkitError(f"{path} is unreadable: delete it to start the sweep in {self.directory} afresh") from None
        if recorded != sweep_identity(self.base, self.settings):
            raise UnlearnkitError(f"{self.directory} holds a different sweep (another config or grid): choose another "
                                  "--output-dir, or delete it")

    def write_manifest(self) -> None:
        write_json(self.directory / MANIFEST, {"identity": sweep_identity(self.base, self.settings),
                                               "base": self.base, "sweep": self.settings.model_dump()})

    def grid_trials(self) -> list[Trial]:
        return make_trials(self.base, grid_configurations(self.settings.grid), self.settings)

    def run_dir(self, trial: Trial) -> Path:
        return self.runs / trial.name

    def finished(self, trial: Trial) -> bool:
        return (self.run_dir(trial) / "results.json").is_file()

    def pin_models(self, trials: list[Trial]) -> None:
        """Prepare (or find cached) each distinct target/retain pair once; write their folders into the trials."""
        for trial in trials:
            model = trial.data.setdefault("model", {})
            if model.get("target"):
                continue
            key = json.dumps({s: trial.data.get(s) for s in ("task", "model", "prepare")}, sort_keys=True, default=str)
            if key not in self._pinned:
                self._pinned[key] = self._prepare(trial)
            model.update(self._pinned[key])

    def _prepare(self, trial: Trial) -> dict:
        from unlearnkit.config import parse_config
        from unlearnkit.data.sources import load_task
        from unlearnkit.models.prepare import resolve_models

        data = copy.deepcopy(trial.data)
        data["seed"] = self.base.get("seed", 0)
        cfg = parse_config(data, where="sweep")
        models = resolve_models(cfg, load_task(cfg.task.source, **cfg.task.options), progress=self.progress,
                                log=self.log)
        return {"target": str(models.target), "retain": str(models.retain)}

    def run(self, trials: list[Trial]) -> None:
        """Run the trials that are not finished yet (in workers when configured); record failures."""
        pending = [t for t in trials if not self.finished(t)]
        if len(pending) < len(trials):
            self.log(f"{len(trials) - len(pending)} of {len(trials)} trials already finished: kept")
        if not pending:
            return
        self.pin_models(pending)
        self.runs.mkdir(parents=True, exist_ok=True)
        workers = min(self.settings.workers, len(pending))
        if self.settings.backend == "ray":
            self._run_on_ray(pending)
            return
        if workers == 1:
            for trial in pending:
                self.log(f"trial {trial.name} ({label(trial.overrides)}, seed {trial.seed}): running")
                self._outcome(trial, lambda t=trial: run_trial(t.data, str(self.run_dir(t)), None, self.progress))
            return
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.log(f"running {len(pending)} trials in {workers} worker processes")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_trial, t.data, str(self.run_dir(t)), threads, False): t for t in pending}
            for future in as_completed(futures):
                self._outcome(futures[future], future.result)

    def _run_on_ray(self, pending: list[Trial]) -> None:
        """Each trial a Ray task with ``cores / workers`` CPUs; results stream back as tasks finish. The run
        directories are written by the workers, so on a multi-node cluster the sweep directory must be on a file
        system every node shares."""
        try:
            import ray
        except ImportError:
            raise UnlearnkitError("sweep.backend is ray but ray is not installed: pip install 'unlearnkit[ray]'") from None
        address = self.settings.ray_address
        started = not ray.is_initialized()
        if started:
            forwarded = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV}
            ray.init(address=address, num_cpus=None if address else self.settings.workers, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": forwarded})
        try:
            threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // self.settings.workers)
            task = ray.remote(num_cpus=threads)(run_trial)
            refs = {task.remote(t.data, str(self.run_dir(t).resolve()), threads, False): t for t in pending}
            self.log(f"running {len(pending)} trials as Ray tasks ({threads} CPUs each)")
            while refs:
                (ref,), _ = ray.wait(list(refs), num_returns=1)
                self._outcome(refs.pop(ref), lambda r=ref: ray.get(r))
        finally:
            if started:
                ray.shutdown()

    def _outcome(self, trial: Trial, run: Callable[[], None]) -> None:
        """Run (or collect) one trial; a failure is recorded with its message and the sweep goes on."""
        try:
            run()
        except UnlearnkitError as exc:
            self.failed[trial.name] = str(exc)
        except Exception as exc:  # a bug in one trial must not lose the others; its message is kept
            self.failed[trial.name] = f"{type(exc).__name__}: {exc}"
        outcome = f"failed: {self.failed[trial.name]}" if trial.name in self.failed else "done"
        self.log(f"trial {trial.name} ({label(trial.overrides)}, seed {trial.seed}): {outcome}")


def run_trial(data: dict, run_dir: str, threads: int | None, progress: bool) -> None:
    """One trial: its run config into ``run_dir`` (continuing a ``.partial`` one). Top-level, so workers can run it."""
    if threads is not None:  # a worker process: its share of the cores, and quiet (its parent reports)
        import torch
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(threads)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    from unlearnkit.config import parse_config
    from unlearnkit.pipeline import run

    cfg = parse_config({**data, "output_dir": run_dir}, where=f"trial {Path(run_dir).name}")
    run(cfg, resume=Path(run_dir + ".partial").exists(), progress=progress)


def run_sweep(base: dict, settings: SweepConfig, directory: str | Path, progress: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the sweep and write its leaderboard; returns the leaderboard (see leaderboard.build)."""
    from unlearnkit.sweep import leaderboard

    leaderboard.directions(settings.objectives)  # a bad objective is refused before anything runs
    sweep = Sweep(base, settings, directory, progress, log)
    if settings.search == "optuna":
        from unlearnkit.sweep.search import optuna_search

        trials = optuna_search(sweep)
    else:
        trials = sweep.grid_trials()  # every trial's config is checked here, before the first run
        sweep.write_manifest()
        sweep.run(trials)
    board = leaderboard.build(trials, sweep.runs, settings.objectives, settings.utility_floor, sweep.failed)
    leaderboard.write(board, sweep.directory)
    return board
