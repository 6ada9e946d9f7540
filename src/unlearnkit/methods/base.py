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

Two kinds of method (``kind``). A ``"training"`` method (the default) is a loss the training loop minimises. An
``"inference"`` method (:class:`InferenceMethod`, e.g. GUARD-IT) changes no weight: ``fit`` reads the untouched
model's activations on the forget and retain examples once and returns an *artifact* (named tensors), and
``apply`` installs it on a model as an :class:`InferenceTransform`, a child module (``model.unlearnkit_inference``)
whose buffers are the artifact and whose forward hooks change activations. Because the artifact is in the model's
``state_dict``, the evaluation's fingerprint (weights hashed) tells the transformed model from the untouched one;
:func:`weights_only` is the state without it (what is saved as the model's weights), and :func:`installed_transform`
finds it again, e.g. to install it on a quantized reload of the same weights.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from unlearnkit.methods.params import MethodParams


class UnlearningMethod:
    kind: ClassVar[str] = "training"  # "training": a loss for the loop; "inference": an InferenceMethod
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


INFERENCE_MODULE = "unlearnkit_inference"  # the child module an inference method installs on a model


class InferenceTransform(nn.Module):
    """An installed inference-time change: the artifact as buffers, and forward hooks on some of the model's modules.

    Subclasses build themselves from the artifact (``from_artifact``) and say where their hooks go (``hooks``: a list
    of ``(module, hook)``; a hook should be a bound method or a ``functools.partial`` of one, so that a deep copy of
    the model — the relearning attack's — carries hooks bound to the copied transform).
    """

    def hooks(self, model: nn.Module) -> list[tuple[nn.Module, Any]]:
        raise NotImplementedError

    def install(self, model: nn.Module) -> nn.Module:
        """Attach to ``model`` (moved to its device; one transform per model) and register the hooks; returns it."""
        if installed_transform(model) is not None:
            raise ValueError("the model already carries an inference-time transform: install one per model")
        device = next(model.parameters()).device
        model.add_module(INFERENCE_MODULE, self.to(device))
        for module, hook in self.hooks(model):
            module.register_forward_hook(hook)
        return model

    def artifact(self) -> dict[str, torch.Tensor]:
        """The tensors it was built from (its buffers), on the CPU."""
        return {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}


def installed_transform(model: nn.Module) -> InferenceTransform | None:
    """The inference-time transform installed on ``model``, or None."""
    found = getattr(model, INFERENCE_MODULE, None)
    return found if isinstance(found, InferenceTransform) else None


def weights_only(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` without an installed transform's buffers: the model's own weights."""
    prefix = INFERENCE_MODULE + "."
    return {name: tensor for name, tensor in model.state_dict().items() if not name.startswith(prefix)}


class InferenceMethod(UnlearningMethod):
    """A method that unlearns at inference time: ``fit`` once, then ``apply`` (no training, no weight changes).

    ``fit(model, forget, retain, pad_token_id)`` reads the untouched ``model`` on the forget and retain training
    items (:class:`~unlearnkit.data.formatting.Encoded`) and returns ``(artifact, logs)``: named tensors and a small
    JSON-able summary. ``apply(model, artifact)`` installs the transform built from ``artifact`` on ``model``.
    The run saves the artifact beside the unchanged weights (:mod:`unlearnkit.models.unlearned`).
    """

    kind: ClassVar[str] = "inference"

    def fit(self, model: nn.Module, forget: list, retain: list, pad_token_id: int
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        raise NotImplementedError

    def transform(self, artifact: dict[str, torch.Tensor]) -> InferenceTransform:
        raise NotImplementedError

    def apply(self, model: nn.Module, artifact: dict[str, torch.Tensor]) -> nn.Module:
        """Install the transform built from ``artifact`` on ``model`` (in place); returns ``model``."""
        return self.transform(artifact).install(model)

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None):
        raise TypeError(f"{self.name} is an inference-time method: it has no loss; use fit and apply")
