"""Representation Misdirection for Unlearning (RMU): scramble a middle layer's activations on forget data.

Paper: "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", Li et al., 2024,
arXiv:2403.03218. Reference code: centerforaisafety/wmdp ``rmu/unlearn.py``; OpenUnlearning ``RMU`` (its TOFU
adaptation, followed here).

With h_l(x) the output of decoder layer ``layer`` (the residual stream after that block, captured by a forward
hook as the reference does: ``hidden_states[layer + 1]`` of Hugging Face, except for the last layer, where
``hidden_states[-1]`` has the final norm applied and h_l does not), u a fixed random unit vector and
c = ``steering_coeff``:

    L = forget_weight * MSE(h_l^theta(x_f), c·u) + retain_weight * MSE(h_l^theta(x_r), h_l^ref(x_r))

where h^ref is the frozen initial model. u is drawn as in the reference, ``rand(d)`` (uniform on [0, 1)) divided by
its norm, here from a generator seeded by ``seed`` (the references draw it from the global RNG, so their vector
cannot be reproduced exactly). Only the MLP output projections (``mlp.down_proj.weight``) of layers
``layer-2 .. layer`` are trained (WMDP: ``layer_ids=5,6,7, param_ids=6``, the 7th parameter of a Llama/Mistral
block, i.e. down_proj; OpenUnlearning: ``model.layers.(5|6|7).mlp.down_proj.weight``).

Which token positions the MSE averages (``positions``):

- ``"answer"`` (default, OpenUnlearning): only positions whose label is not -100 (the answer tokens); per example
  the mean over those positions and the hidden dimensions, then the mean over the batch.
- ``"all"`` (WMDP): the plain ``F.mse_loss`` mean over every position of the padded batch, padding included (the WMDP code
  trains on raw text without labels).

Defaults: OpenUnlearning's TOFU setting as recorded in research/anchors.md, steering_coeff=2, layer=7, alpha
(retain_weight)=1, gamma (forget_weight)=1 -- not verified against a stored config: the one OpenUnlearning
``RMU.yaml`` we could read lists alpha=1000, steering_coeff=300, and the WMDP zephyr-7b run uses alpha=1200,
c=6.5. These values are model-specific; tune them.
``layer=None`` takes the middle layer (``num_layers // 2``). Cost: 1 forward+backward on each batch plus 1
reference forward on the retain batch.
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch
from pydantic import Field, NonNegativeInt
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.models.lora import is_lora, lora_parameters


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (possibly wrapped, e.g. by DDP or peft's LoRA)."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):  # a peft model (or its adapters-off view): the blocks of the model inside
        inner = inner.get_base_model()
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = inner
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise UnlearnkitError(
        f"RMU cannot find the decoder layers of {type(inner).__name__}: use a model with model.layers "
        "(Llama, Mistral, Qwen, Gemma) or transformer.h"
    )


def layer_output(model: nn.Module, layer: nn.Module, batch: dict) -> torch.Tensor:
    """``[B, T, d]``: the output hidden states of ``layer`` (a block of ``model``) on ``batch``.

    Captured by a forward hook during a full forward of ``model`` (so that wrappers such as DDP see the call);
    the caller chooses grad mode.
    """
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = layer.register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    finally:
        handle.remove()
    return captured[0]


def activation_mse(activations: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over hidden dims; over the ``mask``ed positions per example then the batch (None: all)."""
    squared = (activations.float() - target.float()).pow(2)
    if mask is None:
        return squared.mean()
    per_position = squared.mean(dim=-1)
    mask = mask.to(per_position.dtype)
    return ((per_position * mask).sum(dim=-1) / mask.sum(dim=-1)).mean()


@register
class RMU(UnlearningMethod):
    """forget_weight * MSE(h_l, c·u) on forget + retain_weight * MSE(h_l, h_l^ref) on retain."""

    name = "rmu"
    summary = "Push a middle layer's activations on forget data toward a random direction; keep them on retain data."
    citation = ("Li et al., The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning, 2024, "
                "arXiv:2403.03218")
    uses_retain = True

    class Params(MethodParams):
        steering_coeff: float = Field(2.0, gt=0, description="c: the norm of the random target c·u that forget "
                                                             "activations are pushed to (model-specific; tune it)")
        layer: int | None = Field(7, ge=0, description="decoder layer whose output is steered (null: the middle "
                                                       "layer, num_layers // 2)")
        forget_weight: float = Field(1.0, ge=0, description="weight of the forget MSE (gamma in OpenUnlearning)")
        retain_weight: float = Field(1.0, ge=0, description="weight of the retain MSE to the frozen model's "
                                                            "activations (alpha in OpenUnlearning)")
        update_layers: list[NonNegativeInt] | None = Field(
            None, min_length=1, description="layers whose mlp.down_proj is trained (null: layer-2 .. layer)")
        positions: Literal["answer", "all"] = Field(
            "answer", description="token positions the MSE averages: 'answer' (answer tokens, OpenUnlearning) or "
                                  "'all' (every position of the padded batch, WMDP)")
        seed: int = Field(42, description="seed of the generator that draws the random direction u")

    def __init__(self, **values):
        super().__init__(**values)
        self._reference_model: nn.Module | None = None
        self._control_vector: torch.Tensor | None = None

    @property
    def needs_reference_model(self) -> bool:
        return True

    def layer_index(self, model: nn.Module) -> int:
        """The steered layer for ``model``: ``layer``, or the middle one when ``layer`` is None."""
        count = len(decoder_layers(model))
        index = count // 2 if self.layer is None else self.layer
        if not 0 <= index < count:
            raise UnlearnkitError(
                f"layer {index} out of range: the model has {count} layers; set layer between 0 and {count - 1} "
                f"(or layer=None for the middle layer, {count // 2})"
            )
        return index

    def updated_layer_indices(self, model: nn.Module) -> list[int]:
        """The layers whose down_proj is trained: ``update_layers``, or ``layer-2 .. layer`` (those that exist)."""
        count = len(decoder_layers(model))
        if self.update_layers is None:
            top = self.layer_index(model)
            return [i for i in range(top - 2, top + 1) if i >= 0]
        bad = [i for i in self.update_layers if not 0 <= i < count]
        if bad:
            raise UnlearnkitError(f"update_layers {bad} out of range: the model has {count} layers (0 to {count - 1})")
        return sorted(set(self.update_layers))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The ``mlp.down_proj.weight`` of the updated layers; the optimizer updates only these. With LoRA
        (``model.lora``), the adapters of those down_proj layers instead (their base weights stay frozen).

        ``requires_grad`` flags are left alone: the training loop freezes the other parameters (as the reference
        does) so that backward skips them.
        """
        layers = decoder_layers(model)
        chosen = []
        for i in self.updated_layer_indices(model):
            down_proj = getattr(getattr(layers[i], "mlp", None), "down_proj", None)
            if down_proj is None:
                raise UnlearnkitError(f"RMU trains mlp.down_proj, which layer {i} of this model does not have: "
                                      "use a Llama-style model (Llama, Mistral, Qwen, Gemma)")
            adapters = lora_parameters(down_proj)
            if is_lora(model) and not adapters:
                raise UnlearnkitError(f"RMU with LoRA trains the adapters of mlp.down_proj, and layer {i}'s has none: "
                                      "add down_proj to model.lora.target_modules (or use all-linear)")
            chosen.extend(adapters if is_lora(model) else [down_proj.weight])
        return chosen

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Check the layer against ``model`` and keep the frozen reference model (required)."""
        self.layer_index(model)
        if reference_model is None:
            raise ValueError("RMU needs the frozen reference model: pass reference_model to prepare()")
        self._reference_model = reference_model

    def control_vector(self, dim: int) -> torch.Tensor:
        """c·u: ``rand(dim)`` from a generator seeded by ``seed``, normalised to unit length, times ``steering_coeff``."""
        if self._control_vector is None or self._control_vector.numel() != dim:
            generator = torch.Generator().manual_seed(self.seed)
            u = torch.rand(dim, generator=generator)
            self._control_vector = u / u.norm() * self.steering_coeff
        return self._control_vector

    def _mask(self, batch: dict) -> torch.Tensor | None:
        return batch["labels"] != IGNORE_INDEX if self.positions == "answer" else None

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        if self._reference_model is None:
            raise RuntimeError("RMU has no reference model: call method.prepare(model, forget_batches, reference_model) first")
        if retain_batch is None:
            raise ValueError("RMU needs a retain batch, but the training loop passed None")
        index = self.layer_index(model)
        layer = decoder_layers(model)[index]
        reference_layer = decoder_layers(self._reference_model)[index]

        forget_h = layer_output(model, layer, forget_batch)
        target = self.control_vector(forget_h.shape[-1]).to(forget_h.device).expand_as(forget_h)
        forget_loss = activation_mse(forget_h, target, self._mask(forget_batch))

        retain_h = layer_output(model, layer, retain_batch)
        with torch.no_grad():
            reference_h = layer_output(self._reference_model, reference_layer, retain_batch)
        retain_loss = activation_mse(retain_h, reference_h.to(retain_h.device), self._mask(retain_batch))

        loss = self.forget_weight * forget_loss + self.retain_weight * retain_loss
        return loss, {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}
