"""Summing losses and gradients over processes, done by the loop itself instead of a DDP wrapper.

Why not ``DistributedDataParallel``: methods call the model several times per step (forget, retain, refusal
batches), update only some parameters (RMU), or hook submodules by name; DDP needs the wrapped module for each of
those and fails on parameters that get no gradient. Summing the ``.grad`` tensors after the micro-batches is exact
for any of them, lets a process sit out a step without hanging the others, and costs one all-reduce per step.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

BUCKET_ELEMENTS = 1 << 24  # gradients are flattened into buckets of at most this many elements per all-reduce


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce ``tensor`` in place with SUM (a no-op in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy process 0's parameters and buffers to every process, so all start from the same weights."""
    if is_distributed():
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)


def sum_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Replace each ``.grad`` by its sum over processes.

    A parameter that has no gradient in any process keeps ``grad = None`` (as in a single process, so AdamW skips
    it); one that has a gradient somewhere gets zeros where it had none.
    """
    if not is_distributed() or not parameters:
        return
    device = parameters[0].device
    has_grad = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32, device=device)
    sum_across_processes(has_grad)
    active = [p for p, flag in zip(parameters, has_grad.tolist()) if flag > 0]
    for p in active:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets(active):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in bucket:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()


def _buckets(parameters: Sequence[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    """Consecutive groups of parameters sharing dtype and device, each at most BUCKET_ELEMENTS elements (or one
    bigger tensor alone)."""
    buckets: list[list[torch.nn.Parameter]] = []
    size = 0
    for p in parameters:
        last = buckets[-1] if buckets else None
        fits = last is not None and size + p.numel() <= BUCKET_ELEMENTS
        if fits and last[0].grad.dtype == p.grad.dtype and last[0].device == p.device:
            last.append(p)
            size += p.numel()
        else:
            buckets.append([p])
            size = p.numel()
    return buckets
