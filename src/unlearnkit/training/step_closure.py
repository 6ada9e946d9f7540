"""The closure the loop gives an optimizer that evaluates the loss itself (:mod:`unlearnkit.optim.closure`).

One call re-evaluates the whole optimizer step's loss exactly as a first-order step computes it: every micro-batch
of this process (batches built once per step), each reseeded from (seed, step, slot) before its loss so that every
evaluation sees the same random numbers, weighted by its share of the step's examples, and the weighted losses and
gradients summed over processes. So accumulation and any number of processes give the same value and gradient, and
a resumed run the same draws. A non-finite loss or gradient norm stops training at once (the NaN guard), in every
process alike since the values are already summed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import torch
from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.optim.closure import global_norm
from unlearnkit.training.gradient_sync import (
    is_distributed,
    sum_across_processes,
    sum_gradients,
)
from unlearnkit.training.sharding import MicroBatchPlan, derived_seed


@dataclass
class LoopClosure:
    """``closure(grad=True, part="all") -> float`` over ``batches`` (this process's micro-batches of ``step``).

    ``seed`` is this step's seed for the optimizer's draws: ``derived_seed(run seed, "optimizer", step)``.
    After the first call, ``logs`` holds that evaluation's example-weighted means (the loss and the method's logs)
    and ``grad_norm`` its gradient norm (None if it took no gradient); ``calls`` counts the evaluations.
    """

    model: nn.Module
    objective: UnlearningMethod
    batches: list[tuple[MicroBatchPlan, dict, dict | None]]
    parameters: list[nn.Parameter]
    run_seed: int
    step: int
    total_steps: int
    bf16: bool
    device: torch.device
    diverged: Callable[[str, float], NoReturn]
    seed: int = field(init=False)
    logs: dict[str, float] | None = field(default=None, init=False)
    grad_norm: float | None = field(default=None, init=False)
    calls: int = field(default=0, init=False)

    def __post_init__(self):
        self.seed = derived_seed(self.run_seed, "optimizer", self.step)

    def __call__(self, grad: bool = True, part: str = "all") -> float:
        self.calls += 1
        for p in self.parameters:
            p.grad = None
        weighted: dict[str, list[float]] = {}  # key -> [Σ weight·value, Σ weight]
        with torch.enable_grad() if grad else torch.no_grad():
            for micro, forget_rows, retain_rows in self.batches:
                torch.manual_seed(derived_seed(self.run_seed, "micro-batch", self.step, micro.slot))
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss, method_logs = self._loss(forget_rows, retain_rows, part)
                if loss is None:
                    continue
                if grad:
                    (loss * micro.weight).backward()
                for key, value in {**method_logs, "loss": loss.detach()}.items():
                    total = weighted.setdefault(key, [0.0, 0.0])
                    total[0] += micro.weight * float(value)
                    total[1] += micro.weight
        means = mean_over_processes(weighted, self.device)
        value = means.get("loss", 0.0)
        if not math.isfinite(value):
            self.diverged("loss", value)
        grad_norm = None
        if grad:
            sum_gradients(self.parameters)
            grad_norm = global_norm([p.grad for p in self.parameters])
            if not math.isfinite(grad_norm):
                self.diverged("gradient norm", grad_norm)
        if self.logs is None:
            self.logs, self.grad_norm = means, grad_norm
        return value

    def _loss(self, forget_rows: dict, retain_rows: dict | None, part: str):
        """The loss term ``part`` ("all", "forget" or "retain"; None when the method has no such term) and logs."""
        objective = self.objective
        if part == "all":
            return objective.loss(self.model, forget_rows, retain_rows)
        if hasattr(objective, "loss_parts"):
            terms, logs = objective.loss_parts(self.model, forget_rows, retain_rows, parts=(part,))
            return terms.get(part), logs
        if not objective.uses_retain:  # the whole loss is the forget term
            return objective.loss(self.model, forget_rows, retain_rows) if part == "forget" else (None, {})
        raise UnlearnkitError(f"method {objective.name!r} does not give its forget and retain terms apart "
                              f"(asked for {part!r})")


def mean_over_processes(weighted: dict[str, list[float]], device) -> dict[str, float]:
    """Example-weighted means of the loss and the method's logs over every micro-batch of the step, all processes."""
    keys = sorted(weighted)
    if is_distributed():
        gathered: list[list[str]] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
        torch.distributed.all_gather_object(gathered, keys)
        keys = sorted(set().union(*gathered))
    sums = torch.tensor([weighted.get(k, [0.0, 0.0]) for k in keys], dtype=torch.float64, device=device)
    sums = sum_across_processes(sums.reshape(-1)).reshape(-1, 2).tolist()
    return {k: (total / weight if weight > 0 else math.nan) for k, (total, weight) in zip(keys, sums)}
