"""The tokenizer of a model under unlearning, for methods that write text of their own (AltPO's alternate-answer
prompt, LUNAR's refusal prompts).

The method interface hands ``prepare`` token batches only; the tokenizer is read from the folder the model was
loaded from (``model.name_or_path``: :func:`unlearnkit.models.load.load_causal_lm` loads weights and tokenizer from
the same folder, and every model unlearnkit prepares is saved with its tokenizer).
"""

from __future__ import annotations

from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.load import load_tokenizer


def model_tokenizer(model: nn.Module, method: str, purpose: str):
    """The tokenizer saved beside ``model``'s weights; else a one-line error saying which method needs it and why."""
    folder = getattr(model, "name_or_path", "") or ""
    try:
        return load_tokenizer(folder)
    except (UnlearnkitError, OSError, ValueError) as exc:
        raise UnlearnkitError(f"{method} {purpose} with the model's tokenizer, which it could not load from {folder!r} "
                              f"({exc}): load the model from a folder that holds its tokenizer (unlearnkit's prepared "
                              "models do)") from None
