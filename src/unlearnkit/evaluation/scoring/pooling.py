"""Which hidden states a feature is made of: one layer, mean-pooled over chosen tokens (no model is run here).

The scoring pass (:mod:`unlearnkit.evaluation.scoring`) asks the model for its hidden states when a
:class:`FeatureSpec` is given and pools them with :func:`pooled_features`, in the same forward pass that yields the
log-probabilities; :mod:`unlearnkit.evaluation.features` documents the layer and pool conventions.

Which layer. ``layer`` indexes Hugging Face's ``hidden_states`` tuple (``output_hidden_states=True``), which has
``num_layers + 1`` entries: 0 = the token embeddings, l = the residual stream after the l-th decoder block,
``num_layers`` (= -1) = the last block's output after the final norm. Negative indices count from the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from unlearnkit.data.formatting import Encoded
from unlearnkit.errors import UnlearnkitError

Pool = Literal["answer", "all"]


@dataclass(frozen=True)
class FeatureSpec:
    """Mean-pooled ``hidden_states[layer]`` over the answer tokens (``"answer"``) or every real token (``"all"``)."""

    layer: int
    pool: Pool = "answer"

    def __post_init__(self) -> None:
        if self.pool not in ("answer", "all"):
            raise UnlearnkitError(f"pool={self.pool!r} is not supported: use pool='answer' or pool='all'")

    def settings(self) -> list:
        """What a stored feature was computed with (part of the result store's settings)."""
        return [self.layer, self.pool]


def check_layer(layer: int, num_layers: int) -> None:
    """Raise a clear error unless ``layer`` indexes a ``hidden_states`` tuple of a model with ``num_layers`` blocks."""
    if not -(num_layers + 1) <= layer <= num_layers:
        raise UnlearnkitError(
            f"layer {layer} out of range: the model has {num_layers} layers; use {-(num_layers + 1)}..{num_layers} "
            f"(0 = embeddings, l = output of the l-th block, {num_layers} or -1 = the last one after the final norm)"
        )


def select_layer(outputs, layer: int) -> torch.Tensor:
    """``outputs.hidden_states[layer]`` of a forward pass run with ``output_hidden_states=True``."""
    hidden_states = getattr(outputs, "hidden_states", None)
    if hidden_states is None:
        raise UnlearnkitError(
            "the model returned no hidden_states for output_hidden_states=True: use a Hugging Face causal LM"
        )
    check_layer(layer, len(hidden_states) - 1)  # entry 0 is the embeddings
    return hidden_states[layer]


def pooled_span(enc: Encoded, pool: Pool) -> slice:
    """The positions of ``enc`` that are pooled: its answer tokens (``"answer"``) or every real token (``"all"``)."""
    return slice(enc.prompt_length if pool == "answer" else 0, len(enc.input_ids))


def pooled_features(outputs, examples: Sequence[Encoded], spec: FeatureSpec) -> torch.Tensor:
    """``[B, hidden]`` float32: each right-padded row's mean of ``hidden_states[spec.layer]`` over its pooled tokens.

    Each row's mean is taken over its own span only, so it does not depend on the padding or on where in the batch
    the span sits (a prompt-sharing pass, whose spans start elsewhere, pools its hidden states the same way).
    """
    hidden = select_layer(outputs, spec.layer).float()
    return torch.stack([hidden[row, pooled_span(enc, spec.pool)].mean(dim=0) for row, enc in enumerate(examples)])
