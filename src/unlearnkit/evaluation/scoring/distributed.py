"""Evaluation across processes: whole batches are dealt out round-robin and the results gathered on every rank.

Dealing whole batches (not examples) keeps every item in exactly the batch it has in a single process, so a
sharded evaluation gives bit-for-bit the values of a single-process one. Outside a ``torch.distributed`` process
group (one process) every function is the identity.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import torch

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, number of processes) of the current process group, or (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def load_all_before_any_append(store) -> dict:
    """``store.load()`` on every process, then a barrier: no process appends a new batch before every process has
    read the store, so all of them see the same pending batches and deal them out the same way (otherwise a batch
    stored early by one process could shift a slower process's list, and some batches would be computed by none)."""
    if store is None:
        return {}
    stored = store.load()
    if world()[1] > 1:
        torch.distributed.barrier()
    return stored


def my_batches(batches: Sequence[T]) -> list[T]:
    rank, size = world()
    return list(batches[rank::size])


def gather_dicts(local: dict) -> dict:
    """The union of every process's ``local`` results, on every process."""
    rank, size = world()
    if size == 1:
        return dict(local)
    parts: list[dict] = [None] * size  # type: ignore[list-item]
    torch.distributed.all_gather_object(parts, local)
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return merged
