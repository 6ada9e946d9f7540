"""Where the training loop's weights, gradients and optimizer state live: replicated in every process, or sharded.

``accelerate launch --config_file <ddp | fsdp | deepspeed_zero2 | deepspeed_zero3>.yaml`` (examples/accelerate/)
chooses; accelerate's launcher announces FSDP and DeepSpeed to the processes through ``ACCELERATE_USE_FSDP`` /
``ACCELERATE_USE_DEEPSPEED``, which :func:`requested_engine` reads.

- :class:`ReplicatedEngine` (no launch config, or DDP): every process holds the whole model; the loop sums the
  gradients itself (:mod:`unlearnkit.training.gradient_sync`). Unchanged from before sharding existed.
- :class:`~unlearnkit.training.fsdp_engine.TorchFSDPEngine` (FSDP on CPUs): accelerate does not run FSDP on a CPU
  (it falls back to plain MULTI_CPU data parallelism), so the loop shards with torch's ``fully_shard`` (FSDP2) itself,
  each decoder layer one unit, the same layout accelerate's FSDP2 builds.
- :class:`~unlearnkit.training.accelerate_engine.AccelerateEngine` (FSDP or DeepSpeed on accelerators): the model,
  optimizer and scheduler are prepared by accelerate, gradients are synchronised by its engine, checkpoints are
  accelerate's ``save_state`` / ``load_state``.

What the sharded engines keep: the deterministic sharding of examples (a process with fewer micro-batches than the
others at a short last step runs zero-weight passes, because every rank must join each all-gather and
reduce-scatter; the method's state is restored around them), N processes equal one process with accumulation, the
NaN guard, methods that call the model several times per step, train only some parameters (RMU) or hook layers.
Training runs on a copy of the model; its weights are gathered back into the caller's model at the end, so the
pipeline saves and evaluates a whole model, written as safetensors by the main process.

What they refuse (:func:`check_engine`, at config load): methods that take parameter gradients inside their loss
(``torch.autograd.grad``: GRU, HAMU, K-FADE, OFMU, U2A; the sharded parameters are not the ones the forward
uses, so their gradients never reach the loss) and LAU's adv_ga / adv_npo (the adversarial inner gradient runs
FSDP's backward hooks outside the step); optimizers that evaluate the loss themselves (closure optimizers); LoRA (the reference view
shares the wrapped model); the training monitor (it evaluates the sharded model with per-process batches).
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch
from torch import nn

from unlearnkit.errors import ConfigError
from unlearnkit.training.checkpoint import CHECKPOINTS_DIR, load_checkpoint, save_checkpoint
from unlearnkit.training.gradient_sync import broadcast_parameters, sum_gradients

GRADIENTS_IN_LOSS = ("adv_ga", "adv_npo", "gru", "hamu", "kfade", "ofmu", "u2a")


def requested_engine() -> str:
    """``"fsdp"``, ``"deepspeed"`` or ``"replicated"``: what the accelerate launch config asked for."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return "replicated"


def check_engine(method_name: str, closure_optimizer: bool = False, lora: bool = False, monitor: bool = False) -> None:
    """Refuse, in one line, what the requested sharded engine cannot run (nothing for a replicated run)."""
    kind = requested_engine()
    if kind == "replicated":
        return
    engine = {"fsdp": "FSDP", "deepspeed": "DeepSpeed"}[kind]
    if kind == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("the accelerate config asks for DeepSpeed, which is not installed: pip install deepspeed "
                              "(or launch with examples/accelerate/fsdp.yaml)")
        if not torch.cuda.is_available():
            raise ConfigError("the accelerate config asks for DeepSpeed, which needs GPUs: launch with "
                              "examples/accelerate/fsdp.yaml (sharded on CPUs too) or ddp.yaml")
    if method_name in GRADIENTS_IN_LOSS:
        raise ConfigError(f"method {method_name!r} takes parameter gradients inside its loss, which {engine} cannot "
                          "give (the parameters are sharded): launch with examples/accelerate/ddp.yaml or use LoRA")
    if closure_optimizer:
        raise ConfigError(f"train.optimizer evaluates the loss itself (a closure optimizer), which the {engine} "
                          "engine does not run: use adamw (or another gradient optimizer), or ddp.yaml")
    if lora:
        raise ConfigError(f"model.lora with {engine} is not supported: drop model.lora (sharding holds the full model) "
                          "or launch with examples/accelerate/ddp.yaml")
    if monitor:
        raise ConfigError(f"monitor: evaluates during training, which the {engine} engine does not support: remove "
                          "the monitor: section or launch with examples/accelerate/ddp.yaml")


def select_engine(state, config):
    """The engine for this run: replicated unless the launch config asked for FSDP or DeepSpeed."""
    kind = requested_engine()
    if kind == "replicated":
        return ReplicatedEngine(state)
    if kind == "fsdp" and state.device.type == "cpu":
        from unlearnkit.training.fsdp_engine import TorchFSDPEngine

        return TorchFSDPEngine(state)
    from unlearnkit.training.accelerate_engine import AccelerateEngine

    return AccelerateEngine(state, config, deepspeed=kind == "deepspeed")


def local_numel(tensor: torch.Tensor) -> int:
    """Elements of ``tensor`` this process holds (a DTensor's local shard; DeepSpeed's partition)."""
    if hasattr(tensor, "to_local"):
        return tensor.to_local().numel()
    if hasattr(tensor, "ds_tensor"):  # a ZeRO-3 partitioned parameter
        return tensor.ds_tensor.numel()
    return tensor.numel()


def footprint(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this process holds of the model's parameters, their gradients and the optimizer state."""
    params = {id(p): p for p in model.parameters()}.values()
    state = [v for s in getattr(optimizer, "state", {}).values() for v in s.values()
             if isinstance(v, torch.Tensor) and v.dim() > 0]
    return {"parameters": sum(local_numel(p) * p.element_size() for p in params),
            "gradients": sum(local_numel(p.grad) * p.grad.element_size() for p in params if p.grad is not None),
            "optimizer_state": sum(local_numel(v) * v.element_size() for v in state)}


class ReplicatedEngine:
    """Every process holds the whole model; the loop sums the gradients (data parallel or one process)."""

    sharded = False

    def __init__(self, state):
        self.state = state

    def place(self, model: nn.Module) -> nn.Module:
        model.to(self.state.device)
        broadcast_parameters(model)
        return model

    def reference(self, reference: nn.Module) -> nn.Module:
        reference.to(self.state.device).eval().requires_grad_(False)
        broadcast_parameters(reference)
        return reference

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def reduce_and_clip(self, parameters: list[nn.Parameter], max_norm: float | None) -> float:
        sum_gradients(parameters)
        return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm or math.inf))

    def save_checkpoint(self, output_dir, name: str, model, optimizer, state: dict, method):
        if self.state.is_main_process:
            save_checkpoint(output_dir, name, model, optimizer, state, method=method)
        self.state.wait_for_everyone()
        return output_dir / CHECKPOINTS_DIR / name

    def load_checkpoint(self, folder, model, optimizer, method) -> dict:
        return load_checkpoint(folder, model, optimizer, method)

    def finish(self, trained: nn.Module, model: nn.Module) -> None:
        """Nothing to gather: ``trained`` is ``model``."""
