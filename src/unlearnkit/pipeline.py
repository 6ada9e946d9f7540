"""One unlearning run, start to finish: task → models → unlearn → evaluate → results.json and report.html.

The task is a QA task (TOFU suite) or a raw-text corpus (MUSE suite: the methods train on ``max_length`` token
windows of the forget and retain texts); :class:`~unlearnkit.evaluation.evaluator.Evaluator` picks the suite.

:func:`run` reads as its stages: check the input (before anything is created), resolve and load the models,
evaluate the baselines, unlearn inside the run directory, pick the kept model, evaluate it, write the results.
A run is written into ``<output_dir>.partial`` (:class:`RunDirectory`) and renamed to ``<output_dir>`` only when
everything is written, so a finished run directory is always complete. A killed run leaves its ``.partial`` folder
with the epoch checkpoints; ``resume=True`` continues it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from accelerate import PartialState

from unlearnkit import __version__
from unlearnkit.audit import AUDIT_FILE, audit_record
from unlearnkit.config import RunConfig, dump_config
from unlearnkit.data.corpus import CorpusTask, training_items
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.idk import assign_idk
from unlearnkit.data.sources import load_task
from unlearnkit.data.subset import choose_forget_subset
from unlearnkit.data.types import Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator, is_corpus
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.suites.representation import (
    feature_spec,
    representation_results,
)
from unlearnkit.evaluation.suites.result import EvalResult, with_reference
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.registry import get_method
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.flexora import check_request, flexora_stage, uses_flexora
from unlearnkit.models.lora import add_lora, is_lora, load_adapter, reference_view
from unlearnkit.models.prepare import PreparedModels, resolve_models
from unlearnkit.models.unlearned import save_artifact, save_unlearned
from unlearnkit.optim.registry import uses_closure
from unlearnkit.report.html import write_report
from unlearnkit.report.model_card import write_card
from unlearnkit.runio import check_output_dir, write_json
from unlearnkit.tracking import RunTracker, check_tracking
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.engines import check_engine
from unlearnkit.training.loop import TrainResult, train
from unlearnkit.training.monitor import BEST_FILE, TrainingMonitor, check_monitor, monitor_curve
from unlearnkit.training.sharding import steps_per_epoch

log = logging.getLogger("unlearnkit")


@dataclass
class RunResult:
    run_dir: Path
    results: dict


def train_config(settings, seed: int) -> TrainConfig:
    return TrainConfig(**settings.model_dump(), seed=seed)


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _finish_distributed() -> None:
    """Wait for every rank, then leave the process group: what follows is the main process's alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class RunDirectory:
    """``<output_dir>.partial`` while the run is written, renamed to ``<output_dir>`` when it is complete.

    Constructing it only checks (an existing output is refused; an interrupted run needs ``resume``); nothing is
    created before :meth:`training` (the main process creates the folder, every rank waits for it). A user error
    inside :meth:`training` removes a folder this run created; any other failure keeps it, with its checkpoints,
    for ``--resume``.
    """

    def __init__(self, output_dir: str | Path, resume: bool):
        self.final = Path(output_dir)
        self.partial = check_output_dir(output_dir, resume)
        self.resume = resume

    @contextmanager
    def training(self) -> Iterator[Path]:
        created = not self.partial.exists()
        _barrier()  # every rank has checked the output folder before the main one creates it
        if _is_main():
            self.partial.mkdir(parents=True, exist_ok=True)
        _barrier()
        try:
            yield self.partial
        except UnlearnkitError:
            if created and not self.resume and _is_main():
                shutil.rmtree(self.partial, ignore_errors=True)
            raise
        _barrier()  # the main process has written the last checkpoint (and the best model) before anyone reads them

    def finish(self, results: dict, cfg: RunConfig, audit: dict | None = None) -> Path:
        """Write results.json, audit.json, the model card (model/README.md) and report.html, drop the resumption
        state, and rename the folder to its final name."""
        write_json(self.partial / "results.json", results)
        if audit is not None:
            write_json(self.partial / AUDIT_FILE, audit)
            write_card(self.partial / "model", cfg, results, audit)
        write_report(self.partial / "report.html", results, cfg, audit)
        for scratch in ("checkpoints", "best"):  # resumption state; the kept model is in model/
            shutil.rmtree(self.partial / scratch, ignore_errors=True)
        os.replace(self.partial, self.final)
        return self.final


def run(cfg: RunConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Run one unlearning job as configured; return the finished run directory and its results."""
    if getattr(cfg, "track", None) == "classifier":  # a ClassifierRunConfig: the classifier track's own pipeline
        from unlearnkit.classifier.pipeline import run_classifier

        return run_classifier(cfg, resume=resume, progress=progress)
    started = time.time()
    if _world_size() > 1:  # join the process group first, so the ranks can agree before anything is written
        PartialState(cpu=not torch.cuda.is_available())
    run_dir = RunDirectory(cfg.output_dir, resume)
    method, train_settings, task = check_inputs(cfg)  # everything that can be wrong is found before anything is written

    models = resolve_models(cfg, task, progress, log=log.info)
    model, tokenizer = load_causal_lm(models.target, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.lora is not None:  # before anything is written: a layer name the model lacks stops the run here
        model = add_lora(model, cfg.model.lora, seed=cfg.seed)
    formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length, template=cfg.model.template,
                            tokenization=cfg.train.tokenization)  # the training examples'; the evaluator's: eval.
    spec = None  # representation features come out of each model's scoring pass (a bad layer is found here)
    if cfg.representation is not None and models.retain is not None:
        spec = feature_spec(model.config, cfg.representation, texts=is_corpus(task))
    evaluator = Evaluator(task, formatter, cfg.eval, features=spec, progress=progress)
    baselines, reference, features = evaluate_baselines(cfg, evaluator, models)
    if spec is not None:  # the report's inputs (split sizes, k-NN's k) are checked on the baselines, before training
        representation_results({"target": features["target"], "retain": features["retain"]}, spec)
    forget, retain = training_items(task.forget, formatter), training_items(task.retain, formatter)
    if not forget:
        raise UnlearnkitError("the forget set gives no training example (a raw text needs at least two tokens): "
                              "give longer forget texts")
    subset = forget_subset(cfg, model, forget, formatter.pad_token_id)
    if subset is not None:  # train on a part of the forget set; the evaluator keeps the whole task
        forget = [forget[i] for i in subset["indices"]]
    if uses_flexora(cfg):  # its held-out slices fit the data, its selection the model, before anything is written
        check_request(cfg, method, model, len(forget), len(retain), _world_size())
    flexora = None

    with run_dir.training() as partial:
        if _is_main():
            (partial / "config.yaml").write_text(dump_config(cfg))
        if uses_flexora(cfg):  # search the layers, then LoRA on those only (models/flexora.py)
            model, flexora = flexora_stage(cfg, model, forget, retain, formatter.pad_token_id, partial)
        tracker = open_tracker(cfg, partial)
        if method.kind == "inference":  # no training: fit the transform, save it, install it on the model
            trained = fit_inference(method, model, forget, retain, formatter.pad_token_id, partial)
        else:
            trained = unlearn(cfg, method, train_settings, model, tokenizer, formatter, task, forget, retain, models,
                              partial, evaluator, reference, resume, progress, subset, tracker)
    model, selection = kept_model(cfg, model, partial, models.target)
    if is_lora(model):  # keep the adapter, then evaluate and save the model with it merged in
        model.save_pretrained(partial / "adapter", safe_serialization=True)
        model = model.merge_and_unload()
    log.info("evaluating the unlearned model")
    unlearned = evaluator.evaluate(model, reference, intervals=False)
    if tracker is not None:
        tracker.log_final(unlearned.aggregates, step=trained.steps)
        tracker.finish()
    _finish_distributed()  # evaluation shared its work across the processes; the rest is the main one's
    if not _is_main():
        return RunResult(run_dir.final, {})
    unlearned = evaluator.with_intervals(unlearned, reference) if cfg.eval.intervals else unlearned
    representation = None
    if spec is not None:
        representation = representation_results({"unlearned": unlearned.features, **features}, spec)
    save_unlearned(model, tokenizer, partial)  # the weights (an inference-time transform is in inference/)
    if method.stores_update:  # K-FADE: unlearned − target, for `unlearnkit reapply`
        from unlearnkit.methods.updates import save_update, weight_update

        save_update(weight_update(model, models.target), partial)
    results = {
        "unlearnkit_version": __version__,
        "task": task_summary(task),
        "method": {"name": method.name, "params": method.params(), "citation": method.citation},
        "training": {"steps": trained.steps, "logs": trained.logs, "forget_subset": subset},
        "monitor": {"curve": monitor_curve(trained.logs), **selection} if cfg.monitor is not None else None,
        "forget_samples": forget_samples(task),
        "models": {"unlearned": unlearned.to_dict(), **baselines},
        "representation": representation,
        "seconds": round(time.time() - started, 1),
    }
    if flexora is not None:
        results["flexora"] = flexora
    final = run_dir.finish(results, cfg, audit_record(cfg, task, models, partial, results, started))
    if cfg.attacks is not None:
        from unlearnkit.attacks.suite import run_attacks

        results["robustness"] = run_attacks(final, cfg.attacks, progress=progress)
    return RunResult(final, results)


def open_tracker(cfg: RunConfig, partial: Path) -> RunTracker | None:
    """The run's experiment tracker (main process only), or None without a ``tracking:`` block."""
    if cfg.tracking is None or not _is_main():
        return None
    name = cfg.tracking.run_name or Path(cfg.output_dir).name
    return RunTracker(cfg.tracking.backend, cfg.tracking.project, name, partial, cfg.model_dump(mode="json"))


def check_inputs(cfg: RunConfig) -> tuple[UnlearningMethod, TrainConfig, Task | CorpusTask]:
    """The method, the training settings and the task, with every combination a run cannot do refused."""
    if cfg.tracking is not None:
        check_tracking(cfg.tracking.backend)
    method = get_method(cfg.method.name, **cfg.method.params)
    train_settings = train_config(cfg.train, cfg.seed)
    check_engine(method.name, closure_optimizer=uses_closure(train_settings.optimizer.name),
                 lora=cfg.model.lora is not None, monitor=cfg.monitor is not None)  # FSDP / DeepSpeed launches
    task = load_task(cfg.task.source, **cfg.task.options)
    check_method_inputs(method, task)
    check_inference_run(cfg, method)
    check_corpus_run(cfg, task)
    if cfg.monitor is not None:
        check_monitor(cfg.monitor, has_reference=bool(cfg.model.retain or not cfg.model.target),
                      known=registry.names("muse" if is_corpus(task) else "tofu"))
    return method, train_settings, task


def check_inference_run(cfg: RunConfig, method: UnlearningMethod) -> None:
    """An inference-time method trains nothing: what only training uses is refused."""
    if method.kind != "inference":
        return
    for given, what in ((cfg.model.lora, "model.lora"), (cfg.monitor, "monitor:")):
        if given is not None:
            raise UnlearnkitError(f"method {method.name!r} changes no weight (an inference-time transform), so "
                                  f"{what} has nothing to act on: remove it from the config")


def check_method_inputs(method: UnlearningMethod, task: Task | CorpusTask) -> None:
    if method.uses_idk and is_corpus(task):
        raise UnlearnkitError(f"method {method.name!r} trains on refusal answers to questions, and a raw-text task has "
                              "no questions: choose a method that works on text (ga, graddiff, npo, simnpo, rmu)")
    if method.uses_idk and not task.idk_answers:
        raise UnlearnkitError(f"method {method.name!r} needs refusal answers but the task has none: "
                              "give the task an idk file (task.options.idk)")


def check_corpus_run(cfg: RunConfig, task: Task | CorpusTask) -> None:
    """What a raw-text run cannot do yet is refused before anything is written."""
    if not is_corpus(task):
        return
    if cfg.attacks is not None:
        raise UnlearnkitError(f"the robustness attacks read QA answers, and task source {cfg.task.source!r} is raw "
                              "text: remove the attacks: section for this task (they run on QA tasks)")


def evaluate_baselines(cfg: RunConfig, evaluator: Evaluator, models: PreparedModels) -> tuple[dict, dict | None, dict]:
    """The retain and target models' results (cached per model), the retain model's reference statistics, and
    each model's pooled representation features (empty unless the evaluator pools features)."""
    out: dict = {}
    pooled: dict = {}
    reference = None
    if models.retain is not None:
        log.info("evaluating the retain model")
        retain_result = evaluator.evaluate_saved(models.retain, trust_remote_code=cfg.model.trust_remote_code,
                                                 intervals=False)
        reference = retain_result.reference_stats(required=False) or None
        out["retain"] = _with_reference_and_intervals(evaluator, retain_result, reference)
        pooled["retain"] = retain_result.features
    log.info("evaluating the target model")
    target_result = evaluator.evaluate_saved(models.target, reference, trust_remote_code=cfg.model.trust_remote_code)
    out["target"] = target_result.to_dict()
    pooled["target"] = target_result.features
    return out, reference, (pooled if evaluator.features is not None else {})


def _with_reference_and_intervals(evaluator: Evaluator, result: EvalResult, reference: dict | None) -> dict:
    result = with_reference(result, reference)
    if evaluator.config.intervals:
        result = evaluator.with_intervals(result, reference)
    return result.to_dict()


def unlearn(cfg: RunConfig, method: UnlearningMethod, train_settings: TrainConfig, model, tokenizer,
            formatter: QAFormatter, task, forget, retain, models: PreparedModels, partial: Path,
            evaluator: Evaluator, reference: dict | None, resume: bool, progress: bool, subset: dict | None = None,
            tracker: RunTracker | None = None):
    """Train ``method`` on the forget (and retain) examples, checkpointed in ``partial``, monitored if configured,
    each step logged to the experiment tracker if there is one."""
    idk = None
    if method.uses_idk:
        refusals = assign_idk(len(task.forget), task.idk_answers, seed=cfg.seed)
        idk = [formatter.encode(e.question, r) for e, r in zip(task.forget, refusals)]
        if subset is not None:  # the refusals of the kept forget questions, in the same order
            idk = [idk[i] for i in subset["indices"]]

    def reference_model():
        if is_lora(model):  # the same weights with the adapters off: no second copy
            return reference_view(model)
        ref, _ = load_causal_lm(models.target, trust_remote_code=cfg.model.trust_remote_code)
        return ref

    monitor = None
    if cfg.monitor is not None:
        per_epoch = steps_per_epoch(len(forget), cfg.train.batch_size * cfg.train.gradient_accumulation_steps
                                    * _world_size())
        chosen = set(cfg.monitor.metrics) | _best_metrics(cfg)
        monitor = TrainingMonitor(
            cfg.monitor, per_epoch, train_settings.total_steps(per_epoch),
            evaluate=lambda m: evaluator.evaluate(m, reference, metrics=chosen, intervals=False, store=False,
                                                  progress=False).aggregates,
            save_model=lambda m, folder: save_model(m, tokenizer, folder),
            best_dir=partial / "best", is_main=_is_main())
    def on_step(step: int, m, step_log: dict) -> dict | None:
        extra = monitor(step, m, step_log) if monitor is not None else None
        if tracker is not None:
            tracker.log_step(step, {**step_log, **(extra or {})})
        return extra

    log.info("unlearning with %s: %d forget, %d retain examples", method.name, len(forget), len(retain))
    return train(model, method, forget, retain, idk, formatter.pad_token_id, train_settings, partial,
                 resume=resume, progress=progress, reference_model_factory=reference_model,
                 on_step=on_step if (monitor is not None or tracker is not None) else None)


def fit_inference(method, model, forget: list, retain: list, pad_token_id: int, partial: Path) -> TrainResult:
    """An inference-time method's run: fit on the untouched model, save the artifact (``inference/``), install it."""
    log.info("fitting %s on %d forget, %d retain examples (no weight update)", method.name, len(forget), len(retain))
    artifact, fit_logs = method.fit(model, forget, retain, pad_token_id)
    if _is_main():
        save_artifact(partial, method, artifact, fit_logs)
    method.apply(model, artifact)
    return TrainResult(steps=0, logs=[{"fit": fit_logs}])


def forget_subset(cfg: RunConfig, model, forget: list, pad_token_id: int) -> dict | None:
    """``task.forget_subset``: which forget training items to train on (chosen with the untouched target ``model``),
    as ``{fraction, strategy, seed, size, of, indices}`` for the results; None to train on all of them."""
    chosen = cfg.task.forget_subset
    if chosen is None:
        return None
    indices = choose_forget_subset(model, forget, pad_token_id, chosen.fraction, chosen.strategy, chosen.seed,
                                   batch_size=cfg.eval.batch_size)
    log.info("training on %d of the %d forget items (%s)", len(indices), len(forget), chosen.strategy)
    return {**chosen.model_dump(), "size": len(indices), "of": len(forget), "indices": indices}


def kept_model(cfg: RunConfig, model, partial: Path, target: Path):
    """The model the run keeps (the final one, or the monitor's best checkpoint) and how it was selected."""
    selection = {"selected": "final"}
    best_file = partial / "best" / BEST_FILE
    if cfg.monitor is not None and cfg.monitor.best is not None:
        if best_file.exists():
            if is_lora(model):  # the best checkpoint holds the adapter: on a fresh copy of the target
                model = load_adapter(load_causal_lm(target, trust_remote_code=cfg.model.trust_remote_code)[0],
                                     partial / "best")
            else:
                model, _ = load_causal_lm(partial / "best", trust_remote_code=cfg.model.trust_remote_code)
            selection = {"selected": "best", "best": json.loads(best_file.read_text())}
        else:
            selection = {"selected": "final", "best": None,
                         "note": "no evaluated checkpoint met the best-checkpoint bounds; the final model is kept"}
    model.eval()
    return model, selection


def _best_metrics(cfg: RunConfig) -> set[str]:
    best = cfg.monitor.best if cfg.monitor is not None else None
    return set() if best is None else {best.metric, *best.at_least, *best.at_most}


def task_summary(task: Task | CorpusTask) -> dict:
    splits = (("forget", "retain", "holdout", "forget_qa", "retain_qa") if is_corpus(task) else
              ("forget", "retain", "holdout", "eval_forget", "eval_retain", "real_authors", "world_facts"))
    return {"name": task.name, "kind": "corpus" if is_corpus(task) else "qa",
            **{split: len(getattr(task, split)) for split in splits}}


def forget_samples(task: Task | CorpusTask) -> list[dict]:
    """The questions shown in the report beside each model's answers (KnowMem's forget questions for a corpus)."""
    examples = task.forget_qa if is_corpus(task) else task.eval_forget
    return [{"question": e.question, "answer": e.answer} for e in examples[:10]]
