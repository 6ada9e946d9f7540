"""One classifier run, start to finish: task → original and reference ensembles → each method → scores → run directory.

:func:`run_classifier` reads as its stages. Everything that can be wrong with the input (the config, the data, the
forget set, an existing output folder) is found before anything is written or trained. The run is written into
``<output_dir>.partial`` and renamed to ``<output_dir>`` when complete (``config.yaml``, ``results.json``,
``report.html``, and with ``eval.save_logits`` every ensemble's logits in ``logits/<row>.safetensors``: tensors
``forget``, ``retain``, ``test`` of shape (members, examples, classes), from which every number of ``results.json``
can be recomputed). Ensembles are cached by ``classifier.ensemble.train_ensemble`` (per task, model, recipe, seed and
forget set), so an interrupted run costs only the unlearning again: ``--resume`` starts the ``.partial`` folder anew.

Time: each method's wall-clock seconds (unlearning only, not scoring), and its fraction of the reference's retraining
time when the reference was trained in this run (a reference read from the cache has no training time to divide by).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from unlearnkit import __version__
from unlearnkit.classifier.config import (ClassifierRunConfig, dump_classifier_config, load_classifier_task)
from unlearnkit.classifier.data import ClassifierTask, retain_indices
from unlearnkit.classifier.ensemble import _cache_folder, train_ensemble
from unlearnkit.classifier.scoring import (Reference, describe_reference, ensemble_logits, score_row, split_data)
from unlearnkit.classifier.unlearn import PARAMS, unlearn
from unlearnkit.classifier.worst_case import forget_set
from unlearnkit.classifier.options import check
from unlearnkit.errors import RunDirectoryError, UnlearnkitError
from unlearnkit.report.classifier import write_classifier_report
from unlearnkit.runio import write_json

log = logging.getLogger("unlearnkit")
LOGITS = "logits"


@dataclass
class ClassifierRunResult:
    run_dir: Path
    results: dict


def run_classifier(cfg: ClassifierRunConfig, resume: bool = False, progress: bool = True) -> ClassifierRunResult:
    """Run every method of ``cfg`` on the same ensemble, score each against the reference, write the run directory."""
    started = time.time()
    final = Path(cfg.output_dir)
    partial = final.with_name(final.name + ".partial")
    if final.exists():
        raise RunDirectoryError(f"output directory {final} already exists: choose another (--output-dir) or delete it")
    if partial.exists() and not resume:
        raise RunDirectoryError(f"{partial} holds an interrupted run: pass --resume to continue it, or delete it")
    task, forget = load_classifier_task(cfg)
    device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    if forget is None:  # a worst-case set: selected on the original ensemble (cached, so _run reads it back)
        original = train_ensemble(task, cfg.model.options(), cfg.model.recipe, cfg.ensemble.seeds, device=device)
        log.info("selecting the worst-case forget set on the original members")
        forget = forget_set(task, cfg.task.forget, original)
    retain = retain_indices(task, forget)

    shutil.rmtree(partial, ignore_errors=True)  # a resumed run starts its folder anew: the ensembles are cached
    partial.mkdir(parents=True)
    try:
        (partial / "config.yaml").write_text(dump_classifier_config(cfg))
        results = _run(cfg, task, forget, retain, device, partial)
    except UnlearnkitError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    results["seconds"] = round(time.time() - started, 1)
    write_json(partial / "results.json", results)
    write_classifier_report(partial / "report.html", results, dump_classifier_config(cfg))
    os.replace(partial, final)
    return ClassifierRunResult(final, results)


def _run(cfg: ClassifierRunConfig, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray, device: str,
         partial: Path) -> dict:
    model, recipe, seeds = cfg.model.options(), cfg.model.recipe, cfg.ensemble.seeds
    splits = split_data(task, forget, retain)
    labels = {name: y for name, (_, y) in splits.items()}
    resamples = cfg.eval.n_resamples if cfg.eval.intervals else None

    log.info("training (or loading) %d original members", len(seeds))
    original = train_ensemble(task, model, recipe, seeds, device=device)
    cached = _is_cached(task, model, recipe, cfg.ensemble.reference_seeds, forget)
    log.info("%s %d reference members without the forget set", "loading" if cached else "retraining", len(seeds))
    start = time.perf_counter()
    retrained = train_ensemble(task, model, recipe, cfg.ensemble.reference_seeds, forget=forget, device=device)
    retrain_seconds = None if cached else time.perf_counter() - start
    reference_logits = ensemble_logits(retrained, splits)
    reference = Reference(reference_logits, labels)
    _save_logits(cfg, partial, "reference", reference_logits)
    original_logits = ensemble_logits(original, splits)
    _save_logits(cfg, partial, "original", original_logits)

    rows = {}
    for run in cfg.runs:
        params = check(PARAMS[run.name], dict(run.params), f"classifier method {run.name!r}")
        was_cached = run.name == "retrain" and _is_cached(task, model, recipe, seeds, forget)
        log.info("unlearning with %s", run.row)
        start = time.perf_counter()
        unlearned = unlearn(original, task, forget, run.name, run.params)
        seconds = time.perf_counter() - start
        logits = ensemble_logits(unlearned, splits)
        _save_logits(cfg, partial, run.row, logits)
        row = score_row(logits, reference, resamples, cfg.eval.confidence)
        row.update({"name": run.name, "params": params.model_dump(mode="json"), "seconds": round(seconds, 3),
                    "cached": was_cached,
                    "time_fraction": None if retrain_seconds is None or was_cached else seconds / retrain_seconds})
        rows[run.row] = row
    baseline = score_row(original_logits, reference, resamples, cfg.eval.confidence)
    return {
        "unlearnkit_version": __version__,
        "track": "classifier",
        "task": {"name": task.name, "source": cfg.task.source, "num_classes": task.num_classes,
                 "train": len(task.train), "test": len(task.test), "holdout": len(task.holdout),
                 "forget": len(forget), "retain": len(retain), "forget_set": cfg.task.forget.model_dump(),
                 "forget_indices": forget.tolist(), "fingerprint": task.fingerprint},
        "model": {**model.model_dump(), "width": model.channels}, "recipe": recipe.model_dump(),
        "ensemble": {"members": len(seeds), "seeds": seeds, "reference_seeds": cfg.ensemble.reference_seeds,
                     "device": device},
        "reference": {**describe_reference(reference, resamples, cfg.eval.confidence),
                      "retrain_seconds": None if retrain_seconds is None else round(retrain_seconds, 3),
                      "cached": cached},
        "original": baseline,
        "methods": rows,
        "leaderboard": leaderboard(rows),
        "logits": f"{LOGITS}/<row>.safetensors" if cfg.eval.save_logits else None,
    }


def leaderboard(rows: dict) -> list[str]:
    """The rows, best first: the competition's final score (higher), then Avg. Gap (lower)."""
    return sorted(rows, key=lambda r: (-rows[r]["aggregates"]["final_score"], rows[r]["aggregates"]["avg_gap"]))


def _is_cached(task, model, recipe, seeds: list[int], forget: np.ndarray | None) -> bool:
    folder = _cache_folder(task, model, recipe, forget, None)
    return all((folder / f"member-{s}.safetensors").exists() for s in seeds)


def _save_logits(cfg: ClassifierRunConfig, partial: Path, row: str, logits: dict[str, np.ndarray]) -> None:
    if cfg.eval.save_logits:
        (partial / LOGITS).mkdir(exist_ok=True)
        save_file({name: np.ascontiguousarray(v) for name, v in logits.items()}, str(partial / LOGITS /
                                                                                       f"{row}.safetensors"))
