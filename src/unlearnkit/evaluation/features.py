"""Frozen features of a causal LM: the mean-pooled hidden states of one layer, one vector per example.

These are the inputs of the representation-level metrics in :mod:`unlearnkit.evaluation.representation`
("Are We Truly Forgetting?", arXiv:2503.06991, maps an image model's penultimate-layer features to, for an LLM,
the mean-pooled hidden states of a chosen layer; research/metrics.md §5, methods.md §18 — the LLM mapping is a
reconstruction, the paper studies image classifiers).

Which layer. ``layer`` indexes Hugging Face's ``hidden_states`` tuple (``output_hidden_states=True``), which has
``num_layers + 1`` entries:

- ``layer=0``: the token embeddings;
- ``layer=l`` (1 <= l <= num_layers): the residual stream after decoder block ``l - 1`` (the l-th block);
- ``layer=num_layers`` (= ``-1``): the last block's output *after the final norm* (that is what Hugging Face
  puts last: for Llama, ``hidden_states[-1] = model.norm(output of the last block)``; checked in the tests).

Negative indices count from the end as in Python, so the valid range is ``-(num_layers + 1) .. num_layers``.

Which tokens. Examples are either QA pairs (``(question, answer)`` tuples or :class:`~unlearnkit.data.types.QAExample`)
encoded with :meth:`QAFormatter.encode` (prompt + answer + EOS), or raw strings tokenised by the formatter's
tokenizer with its special tokens (truncated to ``formatter.max_length``). ``pool`` chooses the positions averaged:

- ``"answer"`` (the default for QA pairs): the answer tokens, the EOS included — the tokens the unlearning losses
  act on. The prompt is left out because its template tokens (and any BOS token) are the same for every example,
  and in real LLMs the BOS position carries "massive activations" (Sun et al. 2024, arXiv:2402.17762) that would
  dominate a mean over all tokens;
- ``"all"`` (the only choice, and the default, for raw texts): every non-padding token, prompt included.

Examples run in right-padded batches sorted by length; a causal model's hidden states at the real tokens do not
depend on the right padding, so each row equals the example run alone (tested against one-at-a-time runs).
Features are pooled in float32 and returned in input order as a float32 array ``[N, hidden]``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

from unlearnkit.data.formatting import IGNORE_INDEX, Encoded, QAFormatter, collate
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring import evaluation_mode, model_device

Pool = Literal["answer", "all"]
Item = str | tuple[str, str] | QAExample


def layer_features(
    model,
    formatter: QAFormatter,
    items: Sequence[Item],
    layer: int,
    batch_size: int = 16,
    pool: Pool | None = None,
) -> np.ndarray:
    """``[N, hidden]`` float32: the mean over the pooled tokens of ``hidden_states[layer]`` for each item.

    ``items`` is a list of QA pairs (tuples or ``QAExample``) or a list of strings, not a mix. ``pool`` is
    ``"answer"`` or ``"all"`` (``None``: ``"answer"`` for QA pairs, ``"all"`` for texts); see the module docstring
    for the meaning of ``layer`` and ``pool``. The model's train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise UnlearnkitError(f"batch_size must be at least 1, got {batch_size}: pass a positive batch size")
    encoded, pool = _encode(formatter, items, pool)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids), reverse=True)
    device = model_device(model)
    features: list[np.ndarray | None] = [None] * len(encoded)
    with evaluation_mode(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            examples = [encoded[i] for i in rows]
            batch = collate(examples, formatter.pad_token_id, padding_side="right")
            outputs = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                output_hidden_states=True,
            )
            hidden = _select_layer(outputs, layer).float()
            weights = _pool_mask(examples, pool, hidden.shape[1]).to(hidden.device)
            pooled = (hidden * weights[:, :, None]).sum(dim=1) / weights.sum(dim=1, keepdim=True)
            for row, vector in zip(rows, pooled.cpu().numpy()):
                features[row] = vector
    return np.stack(features).astype(np.float32, copy=False)


def _encode(formatter: QAFormatter, items: Sequence[Item], pool: Pool | None) -> tuple[list[Encoded], Pool]:
    """Encode every item; a text gets ``prompt_length = 0`` (it has no prompt)."""
    if len(items) == 0:
        raise UnlearnkitError("no examples to extract features from: pass at least one QA pair or text")
    if pool not in (None, "answer", "all"):
        raise UnlearnkitError(f"pool={pool!r} is not supported: use pool='answer' or pool='all'")
    is_text = [isinstance(item, str) for item in items]
    if all(is_text):
        if pool == "answer":
            raise UnlearnkitError("pool='answer' needs QA pairs, but raw texts were given: use pool='all' for texts")
        encoded = [_encode_text(formatter, text) for text in items]
        return encoded, "all"
    if any(is_text):
        raise UnlearnkitError("items mix raw texts and QA pairs: pass a list of (question, answer) pairs or of strings")
    return [formatter.encode(*_pair(item)) for item in items], pool or "answer"


def _pair(item) -> tuple[str, str]:
    if isinstance(item, QAExample):
        return item.question, item.answer
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
        return item[0], item[1]
    raise UnlearnkitError(
        f"cannot read {item!r} as a QA pair: pass (question, answer) tuples of strings, QAExample objects or strings"
    )


def _encode_text(formatter: QAFormatter, text: str) -> Encoded:
    ids = formatter.tokenizer(text, add_special_tokens=True, truncation=True, max_length=formatter.max_length)
    ids = list(ids["input_ids"])
    if not ids:
        raise UnlearnkitError(f"the text {text!r} encodes to no tokens: remove empty texts")
    return Encoded(ids, [IGNORE_INDEX] * len(ids), 0)


def _select_layer(outputs, layer: int) -> torch.Tensor:
    hidden_states = getattr(outputs, "hidden_states", None)
    if hidden_states is None:
        raise UnlearnkitError(
            "the model returned no hidden_states for output_hidden_states=True: use a Hugging Face causal LM"
        )
    count = len(hidden_states) - 1  # decoder blocks; entry 0 is the embeddings
    if not -(count + 1) <= layer <= count:
        raise UnlearnkitError(
            f"layer {layer} out of range: the model has {count} layers; use {-(count + 1)}..{count} "
            f"(0 = embeddings, l = output of the l-th block, {count} or -1 = the last one after the final norm)"
        )
    return hidden_states[layer]


def _pool_mask(examples: Sequence[Encoded], pool: Pool, width: int) -> torch.Tensor:
    """``[B, T]`` 0/1 weights of the pooled positions of right-padded ``examples``."""
    mask = torch.zeros((len(examples), width), dtype=torch.float32)
    for i, enc in enumerate(examples):
        start = enc.prompt_length if pool == "answer" else 0
        mask[i, start : len(enc.input_ids)] = 1.0
    return mask
