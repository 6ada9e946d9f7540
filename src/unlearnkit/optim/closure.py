"""What the optimizers that evaluate the loss several times per step share: the closure they are given, the seeded
draws they perturb the weights with, and their base class.

**The closure.** ``optimizer.step(closure)`` gets a :class:`StepClosure`: ``closure(grad=True, part="all")`` evaluates
the whole step's loss at the current weights (for the training loop: every micro-batch of the step in every process,
weighted and summed exactly as a first-order step's loss) and returns it as a float. With ``grad=True`` it also
leaves the gradient of that loss in each parameter's ``.grad`` (replacing what was there; summed over processes);
with ``grad=False`` it runs under :func:`torch.no_grad` and leaves no gradient. ``part`` picks a term of the
method's loss: ``"all"``, ``"forget"`` (the weighted forget objective) or ``"retain"`` (the weighted retain term; 0
without one), so that SAM can perturb the forget term alone. Every evaluation of a step sees the same batches and the
same random numbers. The closure also carries ``seed`` (this step's seed for the optimizer's own draws, a function
of the run's seed and the step, so a resumed run or another number of processes draws the same), ``step``
(0-based) and ``total_steps``.

**Draws.** :func:`draw` regenerates the noise of draw ``key`` from ``(seed, key)``: the optimizers keep seeds, never
noise tensors, and perturb the weights in place (``θ ← θ + μ·u`` and back), so a zeroth-order or ES step holds
nothing of the size of the model beyond the weights. Restoring in place rounds: ``θ + μu − μu`` equals ``θ`` up
to one rounding of the weights' dtype, the same in every process and every rerun.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar, Protocol

import torch

from unlearnkit.training.sharding import derived_seed

PARTS = ("all", "forget", "retain")


class StepClosure(Protocol):
    seed: int
    step: int
    total_steps: int

    def __call__(self, grad: bool = True, part: str = "all") -> float: ...


class ClosureOptimizer(torch.optim.Optimizer):
    """An optimizer whose ``step`` needs a :class:`StepClosure` (the loop passes one; the gradient of the step is not
    computed beforehand). ``first_order`` is False for those that only evaluate the loss (zeroth-order, ES): their
    closures run under :func:`torch.no_grad`."""

    uses_closure: ClassVar[bool] = True
    first_order: ClassVar[bool] = True

    @classmethod
    def refusal(cls, params, method) -> str | None:
        """Why this optimizer (with validated ``params``) cannot serve ``method`` (an unlearning method instance),
        or None. Default: a method whose loss differentiates inside itself cannot run under :func:`torch.no_grad`."""
        if not cls.first_order and getattr(method, "needs_autograd_in_loss", False):
            return (f"method {method.name!r} takes gradients inside its loss, which {cls.name} evaluates under "
                    "torch.no_grad: choose a first-order optimizer")
        return None

    def parameters_with_groups(self) -> list[tuple[torch.nn.Parameter, dict]]:
        return [(p, group) for group in self.param_groups for p in group["params"]]

    def parameter_list(self) -> list[torch.nn.Parameter]:
        return [p for group in self.param_groups for p in group["params"]]


def draw(parameters: list[torch.Tensor], seed: int, *key: object) -> Iterator[torch.Tensor]:
    """Standard normal noise shaped like each parameter, in order, from one generator seeded by ``(seed, *key)``
    (on the parameters' device, in their dtype). The same arguments give the same tensors."""
    generator = torch.Generator(device=parameters[0].device).manual_seed(derived_seed(seed, *key))
    for p in parameters:
        yield torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)


def global_norm(tensors: Iterable[torch.Tensor | None]) -> float:
    """The 2-norm of the concatenation of ``tensors`` (None counts as zeros), in float64; an iterator is consumed
    one tensor at a time."""
    return float(sum(float(t.double().pow(2).sum()) for t in tensors if t is not None) ** 0.5)


def requested_part(part: str, terms: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The loss term ``part`` names from a method's ``{"forget": ..., "retain": ...}`` terms (None: no such term)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if part == "all":
        total = terms["forget"]
        return total + terms["retain"] if "retain" in terms else total
    return terms.get(part)


class LossClosure:
    """A :class:`StepClosure` over a function returning the loss's terms (``{"forget": tensor, "retain": tensor}``,
    ``"retain"`` optional) for ``parameters``: for using the closure optimizers outside the training loop (and in
    the tests)."""

    def __init__(self, terms: Callable[[], dict[str, torch.Tensor]], parameters, seed: int = 0, step: int = 0,
                 total_steps: int = 1):
        self.terms, self.parameters = terms, list(parameters)
        self.seed, self.step, self.total_steps = seed, step, total_steps
        self.calls = 0

    def __call__(self, grad: bool = True, part: str = "all") -> float:
        self.calls += 1
        for p in self.parameters:
            p.grad = None
        with torch.enable_grad() if grad else torch.no_grad():
            loss = requested_part(part, self.terms())
            if loss is None:
                return 0.0
            if grad:
                loss.backward()
        return float(loss.detach())
