"""FSDP and DeepSpeed ZeRO through accelerate, for launches on accelerators (examples/accelerate/*.yaml).

The training copy of the model, its optimizer and its scheduler go through ``Accelerator.prepare``; backward is
``Accelerator.backward``, so the engine synchronises the gradients (FSDP's reduce-scatter, ZeRO's partitioned
reduction); checkpoints are ``save_state`` / ``load_state`` (sharded); the trained weights are gathered with
``get_state_dict`` on the main process and broadcast into the caller's model, which the pipeline saves as
safetensors and evaluates.

Choices, and why:

- ``step_scheduler_with_optimizer=False``: accelerate otherwise steps a prepared scheduler once per process per
  optimizer step (it assumes a schedule written for one process); the loop's schedule already counts the steps of
  N processes.
- Gradient scale: the loop weights micro-batches so that gradients *summed* over processes and micro-batches give
  the step's mean. FSDP averages over the N processes, so the loss is multiplied by N; DeepSpeed also divides by
  its accumulation steps (set to ``train.gradient_accumulation_steps``; every process runs exactly that many
  micro-batches, padded with zero-weight passes), so by N × accumulation. Exact for N a power of two.
- DeepSpeed steps inside the last micro-batch's ``backward`` (accelerate's engine wrapper), clipping with its own
  ``gradient_clipping`` (set from ``train.max_grad_norm``); the loop's NaN guard then reads the engine's gradient
  norm after the step, and stops the run one step later than on the other engines. Its frozen reference model (KL
  retain terms, RMU) is not prepared (accelerate drives one DeepSpeed engine per plugin): it is held whole on every
  device, in the dtype it was loaded in. ZeRO-3's gathered model is its 16-bit copy (``zero3_save_16bit_model``).

Not run in this repository's tests: there is no GPU in CI and accelerate does not start FSDP or DeepSpeed on a CPU
(the CPU path is :mod:`unlearnkit.training.fsdp_engine`; docs/scaling.md lists the GPU checks).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
from torch import nn

from unlearnkit.training.checkpoint import load_sharded_checkpoint, save_sharded_checkpoint
from unlearnkit.training.fsdp_engine import full


class AccelerateEngine:
    sharded = True

    def __init__(self, state, config, deepspeed: bool):
        from accelerate import Accelerator

        self.state = state
        self.deepspeed = deepspeed
        accumulation = config.gradient_accumulation_steps if deepspeed else 1
        self.accelerator = Accelerator(gradient_accumulation_steps=accumulation, step_scheduler_with_optimizer=False)
        self.scale = state.num_processes * accumulation
        if deepspeed:
            settings = self.accelerator.state.deepspeed_plugin.deepspeed_config
            settings["train_micro_batch_size_per_gpu"] = config.batch_size
            settings["gradient_clipping"] = config.max_grad_norm or 0.0
        self.model = None

    def setup(self, model: nn.Module, trainable: list[str], make_optimizer):
        trained = copy.deepcopy(model)
        named = dict(trained.named_parameters())
        optimizer, scheduler = make_optimizer([named[name] for name in trainable])
        trained, optimizer, scheduler = self.accelerator.prepare(trained, optimizer, scheduler)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.model = trained
        return trained, parameters, optimizer, scheduler

    def reference(self, reference: nn.Module) -> nn.Module:
        reference.eval().requires_grad_(False)
        if self.deepspeed:
            return reference.to(self.state.device)
        return self.accelerator.prepare_model(reference, evaluation_mode=True)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss * self.scale)

    def reduce_and_clip(self, parameters: list[nn.Parameter], max_norm: float | None) -> float:
        if self.deepspeed:  # the engine has clipped and stepped inside the last backward
            norm = self.model.get_global_grad_norm()
            return float(norm) if norm is not None else 0.0
        return float(full(self.accelerator.clip_grad_norm_(parameters, max_norm or math.inf)))

    def save_checkpoint(self, output_dir, name: str, model, optimizer, state: dict, method):
        return save_sharded_checkpoint(output_dir, name, lambda folder: self.accelerator.save_state(str(folder)),
                                       state, method, self.state.is_main_process, self.state.wait_for_everyone)

    def load_checkpoint(self, folder, model, optimizer, method) -> dict:
        return load_sharded_checkpoint(folder, lambda shards: self.accelerator.load_state(str(shards)), method)

    def finish(self, trained: nn.Module, model: nn.Module) -> None:
        """The whole trained state on the main process (accelerate gathers it), broadcast into ``model`` everywhere."""
        gathered = self.accelerator.get_state_dict(trained)
        model.to(self.state.device)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if self.state.is_main_process and gathered is not None and name in gathered:
                    tensor.copy_(gathered[name])
                dist.broadcast(tensor, src=0)
