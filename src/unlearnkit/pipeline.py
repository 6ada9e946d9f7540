"""One unlearning run, start to finish: task → models → unlearn → evaluate → results.json and report.html.

A run is written into ``<output_dir>.partial`` and renamed to ``<output_dir>`` only when everything is written, so
a finished run directory is always complete. Bad input is found before anything is created. A killed run leaves
its ``.partial`` folder with the epoch checkpoints; ``resume=True`` continues it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from unlearnkit import __version__
from unlearnkit.config import RunConfig, dump_config
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.idk import assign_idk
from unlearnkit.data.sources import load_task
from unlearnkit.data.types import Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.cache import evaluate_cached, model_fingerprint
from unlearnkit.evaluation.suite import EvalResult, evaluate_tofu, with_reference
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.registry import get_method
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.prepare import PreparedModels, default_cache_dir, prepare_models
from unlearnkit.report.html import write_report
from unlearnkit.runio import write_json
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import train

log = logging.getLogger("unlearnkit")


@dataclass
class RunResult:
    run_dir: Path
    results: dict


def train_config(settings, seed: int) -> TrainConfig:
    return TrainConfig(**settings.model_dump(), seed=seed)


def resolve_models(cfg: RunConfig, task: Task, progress: bool = True) -> PreparedModels:
    """The target and retain model folders: given in the config, or prepared (and cached) from the base."""
    if cfg.model.target and cfg.model.retain:
        return PreparedModels(Path(cfg.model.target), Path(cfg.model.retain), key="given")
    if cfg.model.target and not cfg.model.retain:
        return PreparedModels(Path(cfg.model.target), None, key="given")  # type: ignore[arg-type]
    recipe = train_config(cfg.prepare, cfg.seed) if cfg.prepare else None
    if _world_size() > 1 and not _prepared_exists(cfg, task, recipe):
        raise UnlearnkitError("the target and retain models are not prepared yet: run `unlearnkit prepare CONFIG` "
                              "once in a single process, then launch the run with several processes")
    return prepare_models(task, cfg.model.base, recipe, max_length=cfg.model.max_length, template=cfg.model.template,
                          seed=cfg.seed, cache_dir=default_cache_dir(), trust_remote_code=cfg.model.trust_remote_code,
                          progress=progress, log=log.info)


def _prepared_exists(cfg: RunConfig, task: Task, recipe) -> bool:
    from unlearnkit.models.prepare import default_recipe, prepare_key

    recipe = recipe or default_recipe(cfg.model.base)
    key = prepare_key(task, cfg.model.base, recipe, cfg.model.max_length, cfg.model.template, cfg.seed)
    root = default_cache_dir() / "prepared" / key
    return (root / "target" / "config.json").exists() and (root / "retain" / "config.json").exists()


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_method_inputs(method: UnlearningMethod, task: Task) -> None:
    if method.uses_idk and not task.idk_answers:
        raise UnlearnkitError(f"method {method.name!r} needs refusal answers but the task has none: "
                              "give the task an idk file (task.options.idk)")


def run(cfg: RunConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Run one unlearning job as configured; return the finished run directory and its results."""
    started = time.time()
    if _world_size() > 1:  # join the process group first, so the ranks can agree before anything is written
        PartialState(cpu=not torch.cuda.is_available())
    final = Path(cfg.output_dir)
    partial = final.with_name(final.name + ".partial")
    if final.exists():
        raise UnlearnkitError(f"output directory {final} already exists: choose another output_dir or delete it")
    if partial.exists() and not resume:
        raise UnlearnkitError(f"{partial} holds an interrupted run: pass --resume to continue it, or delete it")

    # everything that can be wrong with the input is found before anything is written
    method = get_method(cfg.method.name, **cfg.method.params)
    train_settings = train_config(cfg.train, cfg.seed)
    train_settings.validate()
    task = load_task(cfg.task.source, **cfg.task.options)
    check_method_inputs(method, task)
    models = resolve_models(cfg, task, progress)

    model, tokenizer = load_causal_lm(models.target, trust_remote_code=cfg.model.trust_remote_code)
    formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length, template=cfg.model.template)
    created = not partial.exists()
    _barrier()  # every rank has checked the output folder before the main one creates it
    if _is_main():
        partial.mkdir(parents=True, exist_ok=True)
    _barrier()
    try:
        if _is_main():
            (partial / "config.yaml").write_text(dump_config(cfg))
        forget = [formatter.encode(e.question, e.answer) for e in task.forget]
        retain = [formatter.encode(e.question, e.answer) for e in task.retain]
        idk = None
        if method.uses_idk:
            refusals = assign_idk(len(task.forget), task.idk_answers, seed=cfg.seed)
            idk = [formatter.encode(e.question, r) for e, r in zip(task.forget, refusals)]

        def reference_model():
            ref, _ = load_causal_lm(models.target, trust_remote_code=cfg.model.trust_remote_code)
            return ref

        log.info("unlearning with %s: %d forget, %d retain examples", method.name, len(forget), len(retain))
        trained = train(model, method, forget, retain, idk, formatter.pad_token_id, train_settings, partial,
                        resume=resume, progress=progress, reference_model_factory=reference_model)
    except UnlearnkitError:
        if created and not resume and _is_main():
            shutil.rmtree(partial, ignore_errors=True)
        raise
    _finish_distributed()
    if not _is_main():
        return RunResult(final, {})

    model.eval()
    save_model(model, tokenizer, partial / "model")
    results = evaluate_models(cfg, task, model, formatter, models, progress)
    results = {
        "unlearnkit_version": __version__,
        "task": task_summary(task),
        "method": {"name": method.name, "params": method.params(), "citation": method.citation},
        "training": {"steps": trained.steps, "logs": trained.logs},
        "forget_samples": [{"question": e.question, "answer": e.answer} for e in task.eval_forget[:10]],
        **results,
        "seconds": round(time.time() - started, 1),
    }
    write_json(partial / "results.json", results)
    write_report(partial / "report.html", results, cfg)
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)  # resumption state; the model is in model/
    os.replace(partial, final)
    return RunResult(final, results)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _finish_distributed() -> None:
    """Wait for every rank, then leave the process group: evaluation runs in the main process alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def task_summary(task: Task) -> dict:
    return {"name": task.name, **{split: len(getattr(task, split)) for split in
            ("forget", "retain", "holdout", "eval_forget", "eval_retain", "real_authors", "world_facts")}}


def evaluate_models(cfg: RunConfig, task: Task, unlearned, formatter: QAFormatter, models: PreparedModels,
                    progress: bool = True) -> dict:
    """Evaluate the unlearned model beside the target and retain models (those two cached per model)."""
    settings = {"batch_size": cfg.eval.batch_size, "max_new_tokens": cfg.eval.max_new_tokens}
    out: dict = {"models": {}}
    reference = None
    if models.retain is not None:
        log.info("evaluating the retain model")
        retain_result = evaluate_cached(models.retain, task, formatter, settings, cfg.model.trust_remote_code, progress)
        reference = retain_result.reference_stats()
        out["models"]["retain"] = with_reference(retain_result, reference).to_dict()
    log.info("evaluating the target model")
    target_result = evaluate_cached(models.target, task, formatter, settings, cfg.model.trust_remote_code, progress)
    out["models"]["target"] = with_reference(target_result, reference).to_dict()
    log.info("evaluating the unlearned model")
    unlearned_result = evaluate_tofu(unlearned, formatter, task, reference=reference, progress=progress, **settings)
    out["models"] = {"unlearned": unlearned_result.to_dict(), **out["models"]}
    return out
