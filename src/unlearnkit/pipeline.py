"""One unlearning run, start to finish: task → models → unlearn → evaluate → results.json and report.html.

The task is a QA task (TOFU suite) or a raw-text corpus (MUSE suite: the methods train on ``max_length`` token
windows of the forget and retain texts; :mod:`unlearnkit.evaluation.task_suite`).

A run is written into ``<output_dir>.partial`` and renamed to ``<output_dir>`` only when everything is written, so
a finished run directory is always complete. Bad input is found before anything is created. A killed run leaves
its ``.partial`` folder with the epoch checkpoints; ``resume=True`` continues it.
"""

from __future__ import annotations

import json
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
from unlearnkit.data.corpus import CorpusTask, training_items
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.idk import assign_idk
from unlearnkit.data.sources import load_task
from unlearnkit.data.types import Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.intervals import aggregate_intervals
from unlearnkit.evaluation.pooling import FeatureSpec
from unlearnkit.evaluation.representation_run import feature_spec, representation_results
from unlearnkit.evaluation.suite import EvalResult, with_reference
from unlearnkit.evaluation.task_suite import evaluate_task, evaluate_task_cached, is_corpus, suite_metrics
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.registry import get_method
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.prepare import PreparedModels, default_cache_dir, prepare_models
from unlearnkit.monitor import BEST_FILE, TrainingMonitor, check_monitor, monitor_curve
from unlearnkit.report.html import write_report
from unlearnkit.runio import write_json
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import train
from unlearnkit.training.sharding import steps_per_epoch

log = logging.getLogger("unlearnkit")


@dataclass
class RunResult:
    run_dir: Path
    results: dict


def train_config(settings, seed: int) -> TrainConfig:
    return TrainConfig(**settings.model_dump(), seed=seed)


def resolve_models(cfg: RunConfig, task: Task | CorpusTask, progress: bool = True) -> PreparedModels:
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


def _prepared_exists(cfg: RunConfig, task: Task | CorpusTask, recipe) -> bool:
    from unlearnkit.models.prepare import default_recipe, prepare_key

    recipe = recipe or default_recipe(cfg.model.base)
    key = prepare_key(task, cfg.model.base, recipe, cfg.model.max_length, cfg.model.template, cfg.seed)
    root = default_cache_dir() / "prepared" / key
    return (root / "target" / "config.json").exists() and (root / "retain" / "config.json").exists()


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_method_inputs(method: UnlearningMethod, task: Task | CorpusTask) -> None:
    if method.uses_idk and is_corpus(task):
        raise UnlearnkitError(f"method {method.name!r} trains on refusal answers to questions, and a raw-text task has "
                              "no questions: choose a method that works on text (ga, graddiff, npo, simnpo, rmu)")
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
        raise UnlearnkitError(f"output directory {final} already exists: choose another (--output-dir) or delete it")
    if partial.exists() and not resume:
        raise UnlearnkitError(f"{partial} holds an interrupted run: pass --resume to continue it, or delete it")

    # everything that can be wrong with the input is found before anything is written
    method = get_method(cfg.method.name, **cfg.method.params)
    train_settings = train_config(cfg.train, cfg.seed)
    task = load_task(cfg.task.source, **cfg.task.options)
    check_method_inputs(method, task)
    check_corpus_run(cfg, task)
    if cfg.monitor is not None:
        check_monitor(cfg.monitor, has_reference=bool(cfg.model.retain or not cfg.model.target),
                      known=suite_metrics(task))
    models = resolve_models(cfg, task, progress)
    model, tokenizer = load_causal_lm(models.target, trust_remote_code=cfg.model.trust_remote_code)
    formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length, template=cfg.model.template)
    settings = {"batch_size": cfg.eval.batch_size, "max_new_tokens": cfg.eval.max_new_tokens}
    # representation features come out of each model's scoring pass (a bad layer is found before training)
    spec = None
    if cfg.representation is not None and models.retain is not None:
        spec = feature_spec(model.config, cfg.representation, texts=is_corpus(task))
    baselines, reference, features = evaluate_baselines(cfg, task, formatter, models, settings, progress, spec)
    if spec is not None:  # the report's inputs (split sizes, k-NN's k) are checked on the baselines, before training
        representation_results({"target": features["target"], "retain": features["retain"]}, spec)
    forget, retain = training_items(task.forget, formatter), training_items(task.retain, formatter)
    if not forget:
        raise UnlearnkitError("the forget set gives no training example (a raw text needs at least two tokens): "
                              "give longer forget texts")

    created = not partial.exists()
    _barrier()  # every rank has checked the output folder before the main one creates it
    if _is_main():
        partial.mkdir(parents=True, exist_ok=True)
    _barrier()
    try:
        if _is_main():
            (partial / "config.yaml").write_text(dump_config(cfg))
        idk = None
        if method.uses_idk:
            refusals = assign_idk(len(task.forget), task.idk_answers, seed=cfg.seed)
            idk = [formatter.encode(e.question, r) for e, r in zip(task.forget, refusals)]

        def reference_model():
            ref, _ = load_causal_lm(models.target, trust_remote_code=cfg.model.trust_remote_code)
            return ref

        monitor = None
        if cfg.monitor is not None:
            per_epoch = steps_per_epoch(len(forget), cfg.train.batch_size * cfg.train.gradient_accumulation_steps
                                        * _world_size())
            monitor = TrainingMonitor(
                cfg.monitor, per_epoch, train_settings.total_steps(per_epoch),
                evaluate=lambda m: evaluate_task(m, formatter, task, reference, settings, progress=False,
                                                 metrics=set(cfg.monitor.metrics) | _best_metrics(cfg)).aggregates,
                save_model=lambda m, folder: save_model(m, tokenizer, folder),
                best_dir=partial / "best", is_main=_is_main())
        log.info("unlearning with %s: %d forget, %d retain examples", method.name, len(forget), len(retain))
        trained = train(model, method, forget, retain, idk, formatter.pad_token_id, train_settings, partial,
                        resume=resume, progress=progress, reference_model_factory=reference_model, on_step=monitor)
    except UnlearnkitError:
        if created and not resume and _is_main():
            shutil.rmtree(partial, ignore_errors=True)
        raise
    _barrier()  # the main process has written the last checkpoint (and the best model) before anyone reads them
    selection = {"selected": "final"}
    best_file = partial / "best" / BEST_FILE
    if cfg.monitor is not None and cfg.monitor.best is not None:
        if best_file.exists():
            model, _ = load_causal_lm(partial / "best", trust_remote_code=cfg.model.trust_remote_code)
            selection = {"selected": "best", "best": json.loads(best_file.read_text())}
        else:
            selection = {"selected": "final", "best": None,
                         "note": "no evaluated checkpoint met the best-checkpoint bounds; the final model is kept"}
    model.eval()
    log.info("evaluating the unlearned model")
    unlearned = evaluate_task(model, formatter, task, reference, settings, progress=progress,
                              store_root=default_cache_dir() / "scores", features=spec)
    _finish_distributed()  # evaluation shared its work across the processes; the rest is the main one's
    if not _is_main():
        return RunResult(final, {})
    unlearned = with_intervals(unlearned, reference)
    representation = None
    if spec is not None:
        representation = representation_results({"unlearned": unlearned.features, **features}, spec)
    save_model(model, tokenizer, partial / "model")
    results = {
        "unlearnkit_version": __version__,
        "task": task_summary(task),
        "method": {"name": method.name, "params": method.params(), "citation": method.citation},
        "training": {"steps": trained.steps, "logs": trained.logs},
        "monitor": {"curve": monitor_curve(trained.logs), **selection} if cfg.monitor is not None else None,
        "forget_samples": forget_samples(task),
        "models": {"unlearned": unlearned.to_dict(), **baselines},
        "representation": representation,
        "seconds": round(time.time() - started, 1),
    }
    write_json(partial / "results.json", results)
    write_report(partial / "report.html", results, cfg)
    for scratch in ("checkpoints", "best"):  # resumption state; the kept model is in model/
        shutil.rmtree(partial / scratch, ignore_errors=True)
    os.replace(partial, final)
    if cfg.attacks is not None:
        from unlearnkit.attacks.suite import run_attacks

        results["robustness"] = run_attacks(final, cfg.attacks, progress=progress)
    return RunResult(final, results)


def _best_metrics(cfg: RunConfig) -> set[str]:
    best = cfg.monitor.best if cfg.monitor is not None else None
    return set() if best is None else {best.metric, *best.at_least, *best.at_most}


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _finish_distributed() -> None:
    """Wait for every rank, then leave the process group: evaluation runs in the main process alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def check_corpus_run(cfg: RunConfig, task: Task | CorpusTask) -> None:
    """What a raw-text run cannot do yet is refused before anything is written."""
    if not is_corpus(task):
        return
    if cfg.attacks is not None:
        raise UnlearnkitError(f"the robustness attacks read QA answers, and task source {cfg.task.source!r} is raw "
                              "text: remove the attacks: section for this task (they run on QA tasks)")


def task_summary(task: Task | CorpusTask) -> dict:
    splits = (("forget", "retain", "holdout", "forget_qa", "retain_qa") if is_corpus(task) else
              ("forget", "retain", "holdout", "eval_forget", "eval_retain", "real_authors", "world_facts"))
    return {"name": task.name, "kind": "corpus" if is_corpus(task) else "qa",
            **{split: len(getattr(task, split)) for split in splits}}


def forget_samples(task: Task | CorpusTask) -> list[dict]:
    """The questions shown in the report beside each model's answers (KnowMem's forget questions for a corpus)."""
    examples = task.forget_qa if is_corpus(task) else task.eval_forget
    return [{"question": e.question, "answer": e.answer} for e in examples[:10]]


def with_intervals(result: EvalResult, reference: dict | None) -> EvalResult:
    """``result`` with a 95% bootstrap confidence interval for every aggregate (seeded: reproducible)."""
    result.intervals = aggregate_intervals(result.aggregates, result.per_example, reference)
    return result


def evaluate_baselines(cfg: RunConfig, task: Task | CorpusTask, formatter: QAFormatter, models: PreparedModels, settings: dict,
                       progress: bool = True, features: FeatureSpec | None = None) -> tuple[dict, dict | None, dict]:
    """The retain and target models' results (cached per model), the retain model's reference statistics, and
    each model's pooled representation features (empty unless ``features``)."""
    out: dict = {}
    pooled: dict = {}
    reference = None
    if models.retain is not None:
        log.info("evaluating the retain model")
        retain_result = evaluate_task_cached(models.retain, task, formatter, settings, cfg.model.trust_remote_code,
                                             progress, features=features)
        reference = retain_result.reference_stats(required=False) or None
        out["retain"] = with_intervals(with_reference(retain_result, reference), reference).to_dict()
        pooled["retain"] = retain_result.features
    log.info("evaluating the target model")
    target_result = evaluate_task_cached(models.target, task, formatter, settings, cfg.model.trust_remote_code,
                                         progress, features=features)
    out["target"] = with_intervals(with_reference(target_result, reference), reference).to_dict()
    pooled["target"] = target_result.features
    return out, reference, (pooled if features is not None else {})
