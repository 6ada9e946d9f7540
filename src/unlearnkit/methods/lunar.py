"""LUNAR: redirect the forget questions' activations toward the region where the model says it cannot answer.

Paper: "LUNAR: LLM Unlearning via Neural Activation Redirection", Shen et al., 2025, arXiv:2502.07218. Reference
code: facebookresearch/LUNAR (``run_lunar.py``, ``src/generate_directions.py``, ``src/hook_for_unlearn.py``,
``src/dataset_utils.py``, ``config/forget.yaml``) and OpenUnlearning ``Lunar`` (``src/trainer/unlearn/lunar.py``,
``configs/trainer/Lunar.yaml``), which ports the same procedure but leaves the direction to the user.

1. **The unlearning vector** of layer l: with h_l(x) the output of decoder block l at the LAST prompt token
   (the reference reads it as the input of block l+1, at position -1 of the instruction),

       r = mean_{x in D_ref} h_l(x) - mean_{x in D_f} h_l(x)

   where D_ref are prompts the model declines to answer (the reference: harmful instructions, or "unverified"
   questions it says it does not know) and D_f the forget questions.
2. **The target**: on every prompt token of a forget question the MLP output of block l should become its original
   value plus c·r (c = ``coeff``); on every prompt token of a retain question it should stay as it was.
3. **Only ``mlp.down_proj`` of block l is trained**, by the mean squared error between its output W·x and the target,
   over the token rows of the forget and retain prompts pooled together (the reference concatenates both sets' rows
   and averages ``MSELoss`` over shuffled mini-batches of 64 rows).

Since nothing upstream of down_proj changes, its input x on a live forward equals the original model's, so the
target is W0·x + c·r·[forget row] with W0 the original weight, stored in :meth:`LUNAR.prepare` with r; no reference
model is held. Prompts only (the reference's ``instructions_only=True``): the answer tokens of a batch are not
trained on (they do not change the prompt positions' activations: the model is causal).

Defaults: layer 22 and coeff 2.0 (both references, for 32-layer Llama-3-8B; the layer is model-specific: choose
one of your model's, null = the middle one). The reference recipe trains the regression with AdamW, lr 0.01 for 20
epochs (LUNAR ``config/forget.yaml``; OpenUnlearning: lr 1e-3, 100 epochs, batch 64) and multiplies the lr by 0.9
each epoch; here the training loop's optimizer, schedule and batches apply (set ``train.learning_rate``,
``train.epochs``), and rows come in example batches, not shuffled token rows.

D_ref is ``refusal_prompts`` (required: the references read a data file of their own; give questions your model
declines), formatted as the forget questions are (:class:`unlearnkit.data.formatting.QAFormatter` with the
model's tokenizer, read from the model's folder; ``template`` must match the run's ``model.template``).

Cost: once, one forward per refusal prompt and per forget batch; per step, 1 forward on each batch and a backward
through down_proj of block l only.
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX, QAFormatter
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.model_tokenizer import model_tokenizer
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.methods.rmu import decoder_layers, layer_output


def prompt_mask(batch: dict) -> torch.Tensor:
    """``[B, T]`` booleans: the prompt tokens of each row (attended, before the first labelled token)."""
    attended = batch["attention_mask"].bool()
    labelled = (batch["labels"] != IGNORE_INDEX) & attended
    return attended & (labelled.long().cumsum(dim=1) == 0)


def last_prompt_states(model: nn.Module, layer: nn.Module, batch: dict) -> torch.Tensor:
    """``[B, d]``: the output of ``layer`` at each row's last prompt token."""
    states = layer_output(model, layer, batch)
    last = prompt_mask(batch).long().sum(dim=1) - 1
    return states[torch.arange(states.shape[0], device=states.device), last.to(states.device)]


def down_proj_rows(model: nn.Module, down_proj: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, W·x)`` of ``down_proj`` at the prompt tokens of ``batch``: ``[N, intermediate]`` and ``[N, d]``."""
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = down_proj.register_forward_hook(lambda module, inputs, output: captured.append((inputs[0], output)))
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    finally:
        handle.remove()
    x, y = captured[0]
    mask = prompt_mask(batch).to(x.device)
    return x[mask], y[mask]


@register
class LUNAR(UnlearningMethod):
    """MSE(down_proj_l(x), original + coeff·r on forget prompts, original on retain prompts), down_proj_l only."""

    name = "lunar"
    summary = "Retrain one MLP down-projection so the forget questions' activations point where the model refuses."
    citation = "Shen et al., LUNAR: LLM Unlearning via Neural Activation Redirection, 2025, arXiv:2502.07218"
    uses_retain = True

    class Params(MethodParams):
        refusal_prompts: list[str] | None = Field(
            None, min_length=1, validate_default=True,
            description="questions the model declines to answer (D_ref): the direction is their mean activation "
                        "minus the forget questions' (required)")
        layer: int | None = Field(22, ge=0, description="decoder block whose MLP is redirected (reference: 22 of "
                                                        "Llama-3-8B's 32; null: the middle one, num_layers // 2)")
        coeff: float = Field(2.0, description="c: how far along the unlearning vector r the forget activations move")
        template: Literal["auto", "chat", "plain"] = Field(
            "auto", description="prompt template of the refusal prompts: the run's model.template (default 'auto')")

        @field_validator("refusal_prompts")
        @classmethod
        def _required(cls, value):
            if value is None:
                raise ValueError("must be given: a list of questions the model declines to answer (LUNAR's D_ref)")
            return value

    def __init__(self, **values):
        super().__init__(**values)
        self._direction: torch.Tensor | None = None
        self._original_weight: torch.Tensor | None = None

    def layer_index(self, model: nn.Module) -> int:
        count = len(decoder_layers(model))
        index = count // 2 if self.layer is None else self.layer
        if not 0 <= index < count:
            raise UnlearnkitError(f"LUNAR layer {index} out of range: the model has {count} layers; set layer "
                                  f"between 0 and {count - 1} (or null for the middle one, {count // 2})")
        return index

    def down_proj(self, model: nn.Module) -> nn.Linear:
        block = decoder_layers(model)[self.layer_index(model)]
        down_proj = getattr(getattr(block, "mlp", None), "down_proj", None)
        if down_proj is None:
            raise UnlearnkitError("LUNAR trains mlp.down_proj, which this model's blocks do not have: use a "
                                  "Llama-style model (Llama, Mistral, Qwen, Gemma)")
        return down_proj

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [self.down_proj(model).weight]

    def prepare(self, model: nn.Module, forget_batches: Iterable[dict], reference_model: nn.Module | None = None) -> None:
        """Compute r from the refusal prompts and the forget questions; keep r and the original down_proj weight."""
        tokenizer = model_tokenizer(model, "LUNAR", "formats its refusal prompts")
        formatter = QAFormatter(tokenizer, template=self.template)
        device = next(model.parameters()).device
        refusals = []
        for prompt in self.refusal_prompts:
            ids = torch.tensor([formatter.prompt_ids(prompt)], device=device)
            refusals.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                             "labels": torch.full_like(ids, IGNORE_INDEX)})
        self.use_refusals(model, list(forget_batches), refusals)

    @torch.no_grad()
    def use_refusals(self, model: nn.Module, forget_batches: list[dict], refusal_batches: list[dict]) -> None:
        """r = mean last-prompt-token state of block ``layer`` over the refusal rows minus over the forget rows."""
        layer = decoder_layers(model)[self.layer_index(model)]

        def mean_state(batches: list[dict]) -> torch.Tensor:
            states = torch.cat([last_prompt_states(model, layer, b).double() for b in batches])
            return states.mean(dim=0)

        self._direction = (mean_state(refusal_batches) - mean_state(forget_batches)).float()
        self._original_weight = self.down_proj(model).weight.detach().clone()

    def loss(self, model: nn.Module, forget_batch: dict, retain_batch: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
        if self._direction is None or self._original_weight is None:
            raise RuntimeError("LUNAR has no unlearning vector: call method.prepare(model, forget_batches) first")
        if retain_batch is None:
            raise ValueError("LUNAR needs a retain batch, but the training loop passed None")
        down_proj = self.down_proj(model)
        errors = []
        for batch, shift in ((forget_batch, self.coeff), (retain_batch, 0.0)):
            x, y = down_proj_rows(model, down_proj, batch)
            with torch.no_grad():
                target = x.float() @ self._original_weight.to(x.device).float().T
                target = target + shift * self._direction.to(x.device)
            errors.append((y.float() - target).pow(2))
        forget_error, retain_error = errors
        rows = forget_error.shape[0] + retain_error.shape[0]
        loss = (forget_error.sum() + retain_error.sum()) / (rows * forget_error.shape[1])
        return loss, {"forget_loss": forget_error.mean().item(), "retain_loss": retain_error.mean().item()}
