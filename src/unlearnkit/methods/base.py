"""The interface every unlearning method implements.

An *iterative* method defines ``loss(model, forget_batch, retain_batch) -> (loss, logs)``; the training loop owns
everything else (batching, accumulation, optimizer, schedule, checkpoints, processes).

Batch contract (built by the training loop from :mod:`unlearnkit.data.formatting`):

- ``forget_batch``: ``input_ids``, ``attention_mask``, ``labels`` (question + true answer, prompt masked) and
  ``index`` (LongTensor: each row's position in the task's forget list). When the method sets ``uses_idk``, also
  ``idk_input_ids``, ``idk_attention_mask``, ``idk_labels``: the same question with the refusal answer assigned
  to that example (a fixed assignment, see :func:`unlearnkit.data.idk.assign_idk`).
- ``retain_batch``: ``input_ids``, ``attention_mask``, ``labels``; ``None`` unless the method sets ``uses_retain``.

``prepare`` runs once before training, on the untouched model, over every forget example (the same batches in
every process). Methods whose reference is the initial model store what they need there (NPO: the reference
sequence log-probabilities) so that no second model is held in memory. A method that needs per-token reference
distributions or activations says so with ``needs_reference_model``; the loop then passes a frozen copy.

A method whose loss keeps state from one step to the next (PDU's dual variable, GRU's running retain gradient)
returns it from ``state_dict`` and takes it back in ``load_state_dict``; checkpoints store it beside the optimizer
state (:mod:`unlearnkit.training.checkpoint`), so a resumed run continues with the same state. Values are tensors
or JSON values (numbers, strings, booleans, lists); the default is stateless.

Hyper-parameters are declared, typed and documented, in the method's ``Params`` (a
:class:`unlearnkit.methods.params.MethodParams`); the method is built from validated values, each of which becomes
an attribute (``self.beta``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from unlearnkit.methods.params import MethodParams


class UnlearningMethod:
    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `unlearnkit methods`
    citation: ClassVar[str]  # paper title, authors, year, arXiv id
    uses_retain: ClassVar[bool] = False
    uses_idk: ClassVar[bool] = False
    alters_activations: ClassVar[bool] = False  # a hook changes activations in the forward (no gradient checkpointing)
    stores_update: ClassVar[bool] = False  # the run keeps update.safetensors (unlearned − target) for `reapply`
    Params: ClassVar[type[MethodParams]] = MethodParams  # no hyper-parameters

    def __init__(self, **values: Any):
        """Check ``values`` against :attr:`Params` (one-line :class:`UnlearnkitError`); each becomes an attribute."""
        checked = self.Params.check(values, self.name)
        for name in type(checked).model_fields:
            setattr(self, name, getattr(checked, name))

    @property
    def needs_reference_model(self) -> bool:
        return False

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Precompute what the loss needs from the initial model. Default: nothing."""

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters the optimizer updates. Default: all that require grad."""
        return [p for p in model.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, Any]:
        """What the loss carries from step to step: tensors or JSON values by name. Default: nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (tensors come back on the CPU). Default: nothing to restore."""

    def params(self) -> dict:
        """The method's hyper-parameters (its ``Params`` fields, in their order) as plain values (recorded in the
        run's results); attributes a method sets for itself (e.g. ``uses_retain``) are not among them."""
        return {k: getattr(self, k) for k in self.Params.model_fields}
