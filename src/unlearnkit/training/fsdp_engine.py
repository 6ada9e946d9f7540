"""FSDP through torch's ``fully_shard`` (FSDP2), for FSDP launches on CPUs, where accelerate does not shard.

Zhao et al., "PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel", 2023, arXiv:2304.11277; torch's
per-parameter sharding (``torch.distributed.fsdp.fully_shard``). Layout, as accelerate's FSDP2 with
``TRANSFORMER_BASED_WRAP`` builds it: every module whose class the model names in ``_no_split_modules`` (its
decoder layer) is one unit, then the root (embeddings, final norm, head). Each parameter is split along its first
dimension over the processes; a unit's weights are all-gathered for its forward and again for its backward
(``reshard_after_forward``: full shard), its gradients reduce-scattered, so each process keeps about 1/N of the
weights, gradients and AdamW moments.

Exactness: the loop weights each micro-batch so that the gradients *summed* over processes are the step's mean;
FSDP's reduce-scatter averages, so the loss is multiplied by N before backward (exact for N a power of two; a
divide factor of 1 would need ``PREMUL_SUM``, which gloo lacks). The frozen reference model (KL retain terms,
RMU) is sharded the same way. Checkpoints: ``torch.distributed.checkpoint`` (every process writes its shards of
the weights and optimizer state; a resume with the same number of processes reads them back exactly).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from unlearnkit.errors import ModelError
from unlearnkit.training.checkpoint import load_sharded_checkpoint, save_sharded_checkpoint


def shard(model: nn.Module, mesh) -> nn.Module:
    """``fully_shard`` each decoder layer (the classes in ``model._no_split_modules``), then the root."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in names]
    if not units:
        raise ModelError(f"FSDP: {type(model).__name__} names no decoder layer class in _no_split_modules: use a "
                         "Hugging Face causal LM (Llama, Mistral, Qwen, Gemma) or launch with ddp.yaml")
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    return model


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered from every process when it is a shard."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class TorchFSDPEngine:
    """Weights, gradients and optimizer state sharded by ``fully_shard`` over the processes of the gloo/nccl group."""

    sharded = True

    def __init__(self, state):
        self.state = state
        self.mesh = init_device_mesh(state.device.type, (state.num_processes,))

    def setup(self, model: nn.Module, trainable: list[str], make_optimizer):
        """A sharded copy of ``model`` (the caller's stays whole, on its device), its parameters named ``trainable``,
        and the optimizer and scheduler ``make_optimizer(parameters)`` builds on them."""
        trained = shard(copy.deepcopy(model).to(self.state.device), self.mesh)
        named = dict(trained.named_parameters())
        parameters = [named[name] for name in trainable]
        optimizer, scheduler = make_optimizer(parameters)
        return trained, parameters, optimizer, scheduler

    def reference(self, reference: nn.Module) -> nn.Module:
        reference.to(self.state.device).eval().requires_grad_(False)
        return shard(reference, self.mesh)

    def backward(self, loss: torch.Tensor) -> None:
        """FSDP's reduce-scatter averages over the N processes: the loss is scaled by N so the result is the sum."""
        (loss * self.state.num_processes).backward()

    def reduce_and_clip(self, parameters: list[nn.Parameter], max_norm: float | None) -> float:
        """Gradients were reduce-scattered during backward; the norm is over the whole (sharded) gradient."""
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm or math.inf)
        return float(full(norm))

    def save_checkpoint(self, output_dir, name: str, model, optimizer, state: dict, method):
        def write(folder):
            model_state, optimizer_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))

        return save_sharded_checkpoint(output_dir, name, write, state, method, self.state.is_main_process,
                                       self.state.wait_for_everyone)

    def load_checkpoint(self, folder, model, optimizer, method) -> dict:
        def read(folder):
            model_state, optimizer_state = get_state_dict(model, optimizer)
            saved = {"model": model_state, "optimizer": optimizer_state}
            dcp.load(saved, checkpoint_id=str(folder))
            set_state_dict(model, optimizer, model_state_dict=saved["model"], optim_state_dict=saved["optimizer"])

        return load_sharded_checkpoint(folder, read, method)

    def finish(self, trained: nn.Module, model: nn.Module) -> None:
        """Gather every trained parameter into ``model`` (in every process), which then moves to the device."""
        whole = dict(model.named_parameters())
        with torch.no_grad():
            for name, parameter in trained.named_parameters():
                whole[name].copy_(full(parameter.detach()).to(whole[name].device))
        model.to(self.state.device)
