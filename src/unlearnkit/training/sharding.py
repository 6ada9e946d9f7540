"""Which examples each process sees at each optimizer step: pure index arithmetic, no tensors of data.

The plan depends only on the seed, the epoch and the number of micro-batch *slots* per step
(``processes × gradient_accumulation_steps``), never on how the slots are spread over processes. So one process
with accumulation 2 and two processes with accumulation 1 compute the same micro-batches, and the summed
gradient is the same.

Rules:

1. Each epoch visits the forget set in a fresh order: ``torch.randperm`` with a generator seeded from
   ``(seed, "forget", epoch)``.
2. An optimizer step takes the next ``E = batch_size × slots`` examples of that order; the last step of an epoch
   takes what is left (``ceil(n / E)`` steps per epoch; no example is dropped or repeated).
3. A step's examples are cut into ``slots`` contiguous chunks as evenly as possible (sizes differ by at most one;
   a full step gives every chunk exactly ``batch_size``). Chunk ``c`` is micro-batch ``c // processes`` of process
   ``c % processes``, so the examples of a short last step are spread over the processes first: a process is
   left without data only when the last step has fewer examples than there are processes. Such a process
   computes nothing for that step and adds zero to the gradient sum (the loop sums gradients itself, so this is
   exact and cannot hang).
4. Each chunk's loss is weighted by ``len(chunk) / examples_in_step``; the gradients are summed over micro-batches
   and processes, giving the mean over the step's examples even when the last step is short (exact for losses that
   are a mean over the micro-batch's examples).
5. The retain stream is an endless concatenation of retain permutations (cycle ``k`` seeded from
   ``(seed, "retain", k)``). Forget example number ``t`` of the whole run (``t = epoch · n_forget + position in the
   epoch``) is paired with retain stream element ``t``, so each forget chunk has a retain chunk of the same size.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch


def derived_seed(*parts: object) -> int:
    """A 63-bit seed determined by ``parts`` (e.g. ``(seed, "forget", epoch)``), independent across different parts."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seeded_permutation(n: int, *parts: object) -> list[int]:
    generator = torch.Generator().manual_seed(derived_seed(*parts))
    return torch.randperm(n, generator=generator).tolist()


def steps_per_epoch(n_forget: int, examples_per_step: int) -> int:
    return math.ceil(n_forget / examples_per_step)


def split_evenly(items: list[int], parts: int) -> list[list[int]]:
    """``parts`` contiguous chunks whose sizes differ by at most one, larger chunks first (some may be empty)."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for c in range(parts):
        end = start + size + (1 if c < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


@dataclass(frozen=True)
class MicroBatchPlan:
    """One micro-batch: the forget and retain rows it holds and the weight of its loss in the step."""

    slot: int  # position among the step's chunks (the same for any split of slots over processes)
    forget: list[int]  # positions in the forget list
    retain: list[int]  # positions in the retain list (empty without a retain stream)
    weight: float  # len(forget) / examples in the whole step


class RetainStream:
    """Endless seeded cycling through the retain set: element ``t`` is ``perm_k[t mod n]`` with ``k = t // n``."""

    def __init__(self, n_retain: int, seed: int):
        self.n_retain = n_retain
        self.seed = seed
        self._cycles: dict[int, list[int]] = {}

    def __getitem__(self, t: int) -> int:
        cycle, offset = divmod(t, self.n_retain)
        if cycle not in self._cycles:
            if len(self._cycles) > 4:  # the loop only moves forward: old cycles are never needed again
                self._cycles.clear()
            self._cycles[cycle] = seeded_permutation(self.n_retain, self.seed, "retain", cycle)
        return self._cycles[cycle][offset]


class ShardingPlan:
    """The micro-batches of every step for one process (see the module docstring for the rules)."""

    def __init__(self, n_forget: int, batch_size: int, accumulation: int, processes: int, seed: int,
                 n_retain: int | None = None):
        self.n_forget = n_forget
        self.batch_size = batch_size
        self.accumulation = accumulation
        self.processes = processes
        self.seed = seed
        self.slots = accumulation * processes
        self.examples_per_step = batch_size * self.slots
        self.steps_per_epoch = steps_per_epoch(n_forget, self.examples_per_step)
        self.retain_stream = RetainStream(n_retain, seed) if n_retain else None
        self._order_epoch: int | None = None
        self._order: list[int] = []

    def epoch_order(self, epoch: int) -> list[int]:
        """The forget positions in the order epoch ``epoch`` (0-based) visits them."""
        if self._order_epoch != epoch:
            self._order = seeded_permutation(self.n_forget, self.seed, "forget", epoch)
            self._order_epoch = epoch
        return self._order

    def step_chunks(self, epoch: int, step_in_epoch: int) -> list[MicroBatchPlan]:
        """All ``slots`` chunks of one step (every process's micro-batches), empty chunks included."""
        start = step_in_epoch * self.examples_per_step
        positions = list(range(start, min(start + self.examples_per_step, self.n_forget)))
        order = self.epoch_order(epoch)
        chunks = []
        for slot, chunk in enumerate(split_evenly(positions, self.slots)):
            retain = []
            if self.retain_stream is not None:
                retain = [self.retain_stream[epoch * self.n_forget + p] for p in chunk]
            chunks.append(MicroBatchPlan(slot, [order[p] for p in chunk], retain, len(chunk) / len(positions)))
        return chunks

    def micro_batches(self, epoch: int, step_in_epoch: int, rank: int) -> list[MicroBatchPlan]:
        """The non-empty micro-batches process ``rank`` runs at this step, in order."""
        chunks = self.step_chunks(epoch, step_in_epoch)
        return [c for c in chunks[rank :: self.processes] if c.forget]
