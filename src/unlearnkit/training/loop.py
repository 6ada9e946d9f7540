"""The training loop shared by every iterative unlearning method and by fine-tuning.

One optimizer step, top to bottom:

1. The sharding plan (:mod:`unlearnkit.training.sharding`) names this process's micro-batches.
2. For each micro-batch: reseed the random generators from (seed, step, slot), build the forget (and retain)
   batch, compute ``objective.loss`` under optional bf16 autocast, and backpropagate ``weight × loss``.
3. Sum gradients, weighted losses and logs over processes (:mod:`unlearnkit.training.gradient_sync`); the
   gradient is then the mean over the step's examples, whatever the number of processes.
4. Stop with :class:`UnlearnkitError` if the loss or the gradient norm is not finite; else clip (optional),
   ``optimizer.step`` (the optimizer named by ``config.optimizer``, default AdamW; :mod:`unlearnkit.optim`),
   ``scheduler.step``.

An optimizer that evaluates the loss itself (zeroth-order, ES, SAM, smoothing, Rolling Ball: ``uses_closure``)
instead gets ``optimizer.step(closure)``, whose closure redoes steps 2-3 for the whole step at the current weights,
with or without gradients (:mod:`unlearnkit.training.step_closure`), and stops on a non-finite value in any of its
evaluations.

Before the first step, ``objective.prepare`` sees the initial model and every forget example (also when resuming:
the checkpoint weights are loaded afterwards). Checkpoints are written at the end of each epoch and at the end of
training (:mod:`unlearnkit.training.checkpoint`).

Processes: the loop uses ``accelerate``'s process state (one process, or several started by
``accelerate launch``). It does not wrap the model in DDP (see :mod:`unlearnkit.training.gradient_sync`) and it
does not own the process group: a multi-process script calls ``torch.distributed.destroy_process_group()`` when
it is done. When the launch config asks for FSDP or DeepSpeed, an engine of :mod:`unlearnkit.training.engines`
shards a copy of the model, its gradients and its optimizer state instead (every process then runs the same
number of micro-batches, padding with zero-weight passes), and the trained weights are gathered back into the
caller's model at the end.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import PartialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from transformers import get_scheduler

from unlearnkit.data.formatting import Encoded
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.optim.registry import build_optimizer, check_serves, uses_closure
from unlearnkit.training.batches import all_forget_batches, forget_batch, retain_batch
from unlearnkit.training.checkpoint import (STATE_FILE, complete_checkpoints, latest_checkpoint,
                                           remove_unfinished_checkpoints)
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.engines import check_engine, footprint, select_engine
from unlearnkit.training.l1 import l1_penalised
from unlearnkit.training.sharding import ShardingPlan, derived_seed
from unlearnkit.training.step_closure import LoopClosure, mean_over_processes

SCHEDULER_NAMES = {"linear": "linear", "constant": "constant_with_warmup", "cosine": "cosine"}


@dataclass
class TrainResult:
    """What a run did: ``steps`` optimizer steps, one log dict per step, the folder of the last checkpoint."""

    steps: int
    logs: list[dict] = field(default_factory=list)
    last_checkpoint: Path | None = None
    footprint: dict[str, int] | None = None  # bytes this process held after the last step (engines.footprint)


def train(model: nn.Module, objective: UnlearningMethod, forget: list[Encoded], retain: list[Encoded] | None,
          idk: list[Encoded] | None, pad_token_id: int, config: TrainConfig, output_dir: Path,
          resume: bool = False, progress: bool = True,
          reference_model_factory: Callable[[], nn.Module] | None = None,
          on_step: Callable[[int, nn.Module, dict], dict | None] | None = None) -> TrainResult:
    """Train ``model`` in place with ``objective`` on the forget (and retain) stream; return what happened.

    ``idk[i]`` is forget question ``i`` with its refusal answer (needed when ``objective.uses_idk``).
    ``reference_model_factory`` builds the frozen reference model, called only when
    ``objective.needs_reference_model``. With ``resume=True`` the run continues from the latest complete checkpoint
    under ``output_dir`` (and starts afresh if there is none); the result equals an uninterrupted run.

    ``on_step(step, model, log)`` runs in every process after each optimizer step (``step`` counted from 1) and
    before that step's checkpoint; a dict it returns is merged into the step's log, so it is saved with the
    checkpoint and survives a resume (evaluation during training uses this). It must leave the model's weights
    and train/eval mode as it found them.
    """
    _check_inputs(objective, forget, retain, idk, reference_model_factory)
    check_serves(config.optimizer.name, config.optimizer.params(), objective)
    output_dir = Path(output_dir)
    if not resume and complete_checkpoints(output_dir):
        raise UnlearnkitError(f"{output_dir} already holds checkpoints of a run: pass resume=True to continue it, "
                              "or choose an empty output folder")
    state = PartialState(cpu=not torch.cuda.is_available())
    device = state.device
    engine = select_engine(state, config)
    if engine.sharded:
        check_engine(objective.name, closure_optimizer=uses_closure(config.optimizer.name), lora=hasattr(model, "disable_adapter"))
    if state.is_main_process:
        remove_unfinished_checkpoints(output_dir)
    plan = ShardingPlan(len(forget), config.batch_size, config.gradient_accumulation_steps, state.num_processes,
                        config.seed, len(retain) if objective.uses_retain else None)
    total_steps = config.total_steps(plan.steps_per_epoch)
    objective = l1_penalised(objective, config.l1, total_steps)  # train.l1: the decaying ℓ1 penalty (training/l1.py)
    idk_rows = idk if objective.uses_idk else None

    def make_optimizer(parameters):
        optimizer = build_optimizer(parameters, config.optimizer.name, config.optimizer.params(),
                                    config.learning_rate, config.weight_decay)
        return optimizer, get_scheduler(SCHEDULER_NAMES[config.schedule], optimizer,
                                        num_warmup_steps=config.resolved_warmup_steps(plan.steps_per_epoch),
                                        num_training_steps=total_steps)

    was_training = model.training
    trained = model if engine.sharded else engine.place(model)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices), _frozen_except_trainable(model, objective) as trainable:
            if engine.sharded:  # the optimizer is built on the parameters the engine shards
                names = {id(p): n for n, p in model.named_parameters()}
                chosen = [names[id(p)] for p in trainable()]
                trained, parameters, optimizer, scheduler = engine.setup(model, chosen, make_optimizer)
            torch.manual_seed(derived_seed(config.seed, "prepare"))
            _prepare_objective(objective, trained, forget, idk_rows, pad_token_id, config, device,
                               reference_model_factory, engine)
            if not engine.sharded:
                parameters = trainable()
                optimizer, scheduler = make_optimizer(parameters)
            run = _Run(trained, objective, forget, retain, idk_rows, pad_token_id, config, output_dir, state, plan,
                       parameters, optimizer, scheduler, total_steps, engine)
            start_step, logs, last_checkpoint = 0, [], None
            if resume and (last_checkpoint := latest_checkpoint(output_dir)) is not None:
                # settings first: another optimizer's state would not load (nor mean anything) in this one
                _check_same_run(json.loads((last_checkpoint / STATE_FILE).read_text()), config, objective, plan)
                saved = engine.load_checkpoint(last_checkpoint, trained, optimizer, objective)
                scheduler.load_state_dict(saved["scheduler"])
                start_step, logs = saved["step"], saved["logs"]

            trained.train()
            if config.gradient_checkpointing:
                _enable_gradient_checkpointing(trained)
            with _progress_bar(progress and state.is_main_process, total_steps, start_step) as advance:
                for step in range(start_step, total_steps):
                    if config.l1 is not None:
                        objective.begin_step(step)
                    logs.append(run.optimizer_step(step))
                    if on_step is not None:
                        logs[-1].update(on_step(step + 1, trained, logs[-1]) or {})
                        trained.train()
                    advance(logs[-1]["loss"])
                    epoch, step_in_epoch = divmod(step, plan.steps_per_epoch)
                    epoch_done = step_in_epoch == plan.steps_per_epoch - 1
                    if step + 1 == total_steps or (epoch_done and config.save_every_epoch):
                        name = f"epoch-{epoch + 1}" if epoch_done else f"step-{step + 1}"
                        last_checkpoint = run.save(name, steps_done=step + 1, logs=logs)
            held = footprint(trained, optimizer)
            engine.finish(trained, model)
    finally:
        model.train(was_training)
        if config.gradient_checkpointing and getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()
    return TrainResult(steps=len(logs), logs=logs, last_checkpoint=last_checkpoint, footprint=held)


def _enable_gradient_checkpointing(model: nn.Module) -> None:
    """Hugging Face's activation checkpointing of every decoder layer, non-reentrant (so it needs no input that
    requires grad: LoRA's frozen embeddings work); a one-line error for a model without it."""
    if not getattr(model, "supports_gradient_checkpointing", False) and not hasattr(model, "get_base_model"):
        raise UnlearnkitError(f"train.gradient_checkpointing: {type(model).__name__} does not support gradient "
                              "checkpointing: set it to false")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@dataclass
class _Run:
    """Everything fixed for the duration of one training run, and the two things done with it: a step, a save."""

    model: nn.Module
    objective: UnlearningMethod
    forget: list[Encoded]
    retain: list[Encoded] | None
    idk: list[Encoded] | None
    pad_token_id: int
    config: TrainConfig
    output_dir: Path
    state: PartialState
    plan: ShardingPlan
    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int
    engine: object  # training/engines.py: where weights, gradients and optimizer state live

    def optimizer_step(self, step: int) -> dict:
        """Run this process's micro-batches of ``step`` (0-based), sum over processes, check, update; return the log."""
        if getattr(self.optimizer, "uses_closure", False):
            return self.closure_step(step)
        config, device = self.config, self.state.device
        epoch, step_in_epoch = divmod(step, self.plan.steps_per_epoch)
        self.optimizer.zero_grad(set_to_none=True)
        weighted: dict[str, list[float]] = {}  # key -> [Σ weight·value, Σ weight]
        micro_batches = self.plan.micro_batches(epoch, step_in_epoch, self.state.process_index)
        for micro in micro_batches:
            torch.manual_seed(derived_seed(config.seed, "micro-batch", step, micro.slot))
            forget_rows = forget_batch(self.forget, micro.forget, self.pad_token_id, self.idk, device)
            retain_rows = (retain_batch(self.retain, micro.retain, self.pad_token_id, device)
                           if self.objective.uses_retain else None)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                loss, method_logs = self.objective.loss(self.model, forget_rows, retain_rows)
            self.engine.backward(loss * micro.weight)
            for key, value in {**method_logs, "loss": loss.detach()}.items():
                total = weighted.setdefault(key, [0.0, 0.0])
                total[0] += micro.weight * float(value)
                total[1] += micro.weight
        if self.engine.sharded:
            self.pad_micro_batches(step, epoch, step_in_epoch, len(micro_batches))
        means = mean_over_processes(weighted, device)
        grad_norm = self.engine.reduce_and_clip(self.parameters, config.max_grad_norm)
        for what, value in (("loss", means["loss"]), ("gradient norm", grad_norm)):
            if not math.isfinite(value):
                self.diverged(what, value, step)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        return {**means, "step": step + 1, "epoch": epoch + 1, "loss": means["loss"], "lr": learning_rate,
                "grad_norm": grad_norm}

    def pad_micro_batches(self, step: int, epoch: int, step_in_epoch: int, done: int) -> None:
        """Zero-weight passes until this process has run ``accumulation`` micro-batches, as every other one: a sharded
        engine's all-gathers and reduce-scatters need every process in every forward and backward. They run on the
        step's first chunk, add exactly zero to the gradient, and leave the method's state as it was."""
        if done == self.plan.accumulation:
            return
        first = self.plan.step_chunks(epoch, step_in_epoch)[0]
        saved = {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                 for k, v in self.objective.state_dict().items()}
        device = self.state.device
        for extra in range(done, self.plan.accumulation):
            torch.manual_seed(derived_seed(self.config.seed, "padding", step, extra))
            forget_rows = forget_batch(self.forget, first.forget, self.pad_token_id, self.idk, device)
            retain_rows = (retain_batch(self.retain, first.retain, self.pad_token_id, device)
                           if self.objective.uses_retain else None)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
                loss, _ = self.objective.loss(self.model, forget_rows, retain_rows)
            self.engine.backward(loss * 0.0)
        if saved:
            self.objective.load_state_dict(saved)

    def closure_step(self, step: int) -> dict:
        """``optimizer.step(closure)`` for an optimizer that evaluates the step's loss itself (zeroth-order, ES, SAM,
        ...): the closure (:mod:`unlearnkit.training.step_closure`) re-evaluates every micro-batch of the step in every
        process. The log holds the loss the optimizer returns (what each one returns is in its docstring), the
        method's logs and gradient norm of the closure's first evaluation, and the number of evaluations."""
        epoch, step_in_epoch = divmod(step, self.plan.steps_per_epoch)
        device = self.state.device
        self.optimizer.zero_grad(set_to_none=True)
        batches = [(micro, forget_batch(self.forget, micro.forget, self.pad_token_id, self.idk, device),
                    retain_batch(self.retain, micro.retain, self.pad_token_id, device)
                    if self.objective.uses_retain else None)
                   for micro in self.plan.micro_batches(epoch, step_in_epoch, self.state.process_index)]
        closure = LoopClosure(self.model, self.objective, batches, self.parameters, self.config.seed, step,
                              self.total_steps, self.config.bf16, device,
                              lambda what, value: self.diverged(what, value, step))
        learning_rate = self.scheduler.get_last_lr()[0]
        loss = float(self.optimizer.step(closure))
        self.optimizer.zero_grad(set_to_none=True)  # no gradient is held between steps
        self.scheduler.step()
        return {**(closure.logs or {}), "step": step + 1, "epoch": epoch + 1, "loss": loss, "lr": learning_rate,
                "grad_norm": closure.grad_norm, "loss_evaluations": closure.calls}

    def diverged(self, what: str, value: float, step: int):
        """Stop training: ``what`` (the loss or the gradient norm) is ``value``, not finite, at ``step``."""
        self.optimizer.zero_grad(set_to_none=True)
        kept = latest_checkpoint(self.output_dir)
        where = f"the last good checkpoint is kept at {kept}" if kept else "no checkpoint was saved before it"
        closure = getattr(self.optimizer, "uses_closure", False)  # max_grad_norm is refused for these
        fixes = "lower learning_rate" + ("" if closure else " or enable max_grad_norm")
        raise UnlearnkitError(f"training diverged: {what} is {value} at step {step + 1} "
                              f"(epoch {step // self.plan.steps_per_epoch + 1}); {where}; {fixes}")

    def save(self, name: str, steps_done: int, logs: list[dict]) -> Path:
        """Checkpoint ``name`` written by the main process; every process waits for it and gets its path."""
        return self.engine.save_checkpoint(self.output_dir, name, self.model, self.optimizer, {
            "step": steps_done,
            "epoch": steps_done / self.plan.steps_per_epoch,
            "config": self.config.to_dict(),
            "processes": self.plan.processes,
            "micro_batch_slots": self.plan.slots,
            "objective": {"name": self.objective.name, "params": self.objective.params()},
            "scheduler": self.scheduler.state_dict(),
            "logs": logs,
        }, self.objective)


def _prepare_objective(objective, model, forget, idk, pad_token_id: int, config: TrainConfig, device,
                       reference_model_factory, engine) -> None:
    """``objective.prepare`` on the initial model (eval mode, same autocast as training) and every forget example;
    the frozen reference model, if the method needs one, is placed (or sharded) by ``engine`` like the model."""
    reference = None
    if objective.needs_reference_model:
        reference = engine.reference(reference_model_factory())
    batches = all_forget_batches(forget, config.batch_size, pad_token_id, idk, device)
    model.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
        objective.prepare(model, batches, reference)


@contextlib.contextmanager
def _frozen_except_trainable(model: nn.Module, objective: UnlearningMethod):
    """Yield a function that returns the method's trainable parameters and freezes every other model parameter
    (so no gradient is computed for them); the caller's ``requires_grad`` flags are restored on exit."""
    frozen: list[nn.Parameter] = []

    def trainable() -> list[nn.Parameter]:
        chosen = list(objective.trainable_parameters(model))
        if not chosen:
            raise UnlearnkitError(f"method {objective.name!r} selected no trainable parameters: check its layer "
                                  "or parameter settings against the model")
        chosen_ids = {id(p) for p in chosen}
        for p in model.parameters():
            if id(p) not in chosen_ids and p.requires_grad:
                p.requires_grad_(False)
                frozen.append(p)
        return chosen

    try:
        yield trainable
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _check_same_run(saved: dict, config: TrainConfig, objective: UnlearningMethod, plan: ShardingPlan) -> None:
    """A resumed run must see the same batches and the same loss as the one that wrote the checkpoint."""
    ignore = {"gradient_accumulation_steps"}  # only the product with the number of processes matters (the slots)
    now = {k: v for k, v in config.to_dict().items() if k not in ignore}
    then = {k: v for k, v in saved["config"].items() if k not in ignore}
    differ = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
    if saved["micro_batch_slots"] != plan.slots:
        differ.append("processes × gradient_accumulation_steps")
    if saved["objective"] != {"name": objective.name, "params": objective.params()}:
        differ.append("method or method parameters")
    if differ:
        raise UnlearnkitError(f"cannot resume: the checkpoint was written with different {', '.join(differ)}; "
                              "use the original settings, or a new output folder to start over")


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, done: int):
    """Yield ``advance(loss)``; draws a rich progress bar when ``show``."""
    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                   TimeRemainingColumn(), disable=not show)
    with bar:
        task = bar.add_task("", total=total, completed=done)
        yield lambda loss: bar.update(task, advance=1, description=f"loss {loss:.4f}")


def _check_inputs(objective: UnlearningMethod, forget: Sequence[Encoded], retain, idk, reference_model_factory) -> None:
    if not forget:
        raise UnlearnkitError("the forget set is empty: give at least one example to train on")
    if objective.uses_retain and not retain:
        raise UnlearnkitError(f"method {objective.name!r} needs a retain set, but none was given: add retain examples")
    if objective.uses_idk and (idk is None or len(idk) != len(forget)):
        raise UnlearnkitError(f"method {objective.name!r} needs one refusal example per forget example "
                              f"(got {0 if idk is None else len(idk)} for {len(forget)}): build them with assign_idk")
    if objective.needs_reference_model and reference_model_factory is None:
        raise UnlearnkitError(f"method {objective.name!r} needs a reference model: pass reference_model_factory")
